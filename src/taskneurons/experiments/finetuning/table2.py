"""PAPER.md Table 2: train each task's neurons vs as many random neurons (+ Figure 5 a).

Each task is trained on its own, once through as many random neurons as it has (matched per
layer and module, drawn outside its set) and once through its own neurons, always starting
from the same base weights: the trained :class:`NeuronDelta` is detached after scoring, which
restores the base model exactly.

Example:
    >>> ctx = RunContext.of(model, tok, tasks, sets=sets)  # doctest: +SKIP
    >>> res = neuron_training_experiment(ctx, NeuronTrainingConfig(), "out")  # doctest: +SKIP
    >>> res.table.row("Train-Task")  # task id -> accuracy %  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from taskneurons.analysis.paired import mean_difference
from taskneurons.data.tasks import Task
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments.common import (
    check_sets_cover,
    eval_examples,
    experiment_meta,
    limited,
)
from taskneurons.experiments.finetuning.table2_stage import NeuronTrainingConfig
from taskneurons.experiments.run_context import RunContext
from taskneurons.neurons.selection import matched_random_sets
from taskneurons.neurons.space import NeuronSpace
from taskneurons.report.comparison import Comparison, MatrixSpec
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult
from taskneurons.training.trained import trained

#: The record of a neuron-training run.
RECORD_FILE = "finetune_config.json"


@dataclass
class NeuronTrainingResult(StoredResult):
    """Zero-shot / Train-Random / Train-Task per task (and the training matrix).

    Attributes:
        table: rows ``Zero-shot``, ``Train-Random``, ``Train-Task`` (accuracy % / ROUGE-L);
            ``matrix[i][j]``: task j's score after training task i's neurons (``None`` when
            the config's ``matrix`` is off).
        runs: ``"<task>/<random|task>"`` -> steps, final loss, trainable scalars, seconds.
        out_dir: where the files are.
        meta: ``finetune_config.json``: config, model, data hashes, sets' records, runs.

    :meth:`save` writes the tables and the record (each training run's folder under ``runs/``
    is written as it trains); :meth:`load` reads them back. The files hold the matrix as its
    change from the Zero-shot row, so a loaded matrix is that change plus the Zero-shot score
    (the diagonal is the Train-Task row): equal up to float rounding (exact for accuracies).

    Example:
        >>> NeuronTrainingResult.load("runs/x/table2").table.row("Train-Task")  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    table: Comparison
    runs: dict[str, dict]
    out_dir: Path
    meta: dict = field(default_factory=dict, repr=False)

    def markdown(self) -> str:
        """The table, the change matrix when there is one, and per task its paired
        differences (a run of an older version recorded none)."""
        parts = [self.table.markdown()]
        if self.table.matrix is not None:
            parts.append(self.table.change_markdown("trained \\ measured"))
        parts += [reading(t, pairs) for t, pairs in self.meta.get("paired", {}).items()]
        return "\n\n".join(parts)

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``table2.*``, ``train_matrix.*`` and ``finetune_config.json`` into ``folder``
        (default: :attr:`out_dir`)."""
        out = self.target(folder)
        spec = MatrixSpec(
            "train_matrix",
            "Change of task j's score (points) after training task i's neurons",
            "Train task i's neurons: change on task j",
            corner="trained \\ measured",
            ylabel="trained neurons of task i",
        )
        self.table.write(out, "table2", self.meta, "Neuron training (accuracy % / ROUGE-L)", spec)
        return self.write_meta(out)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> NeuronTrainingResult:
        """The neuron-training run in ``path``.

        Raises:
            FinishedRunError: a table or the record is missing or unreadable.
        """
        saved = read_record(path / "table2.json")
        names = saved["header"][1:-1]
        rows = {r[0]: dict(zip(names, r[1:-1], strict=True)) for r in saved["rows"]}
        matrix = None
        if (path / "train_matrix.json").is_file():
            change = read_record(path / "train_matrix.json")["rows"]
            matrix = {r[0]: _scores(r[0], r[1:], names, rows) for r in change}
        return cls(Comparison(names, rows, matrix), dict(meta.get("runs", {})), path, meta)


def _scores(trained: str, change: list, names: list[str], rows: dict) -> dict[str, float]:
    """A row of the matrix from its change over the Zero-shot row (its diagonal: Train-Task)."""
    zero, own = rows["Zero-shot"], rows["Train-Task"]
    return {j: own[j] if j == trained else v + zero[j] for j, v in zip(names, change, strict=True)}


def neuron_training_experiment(
    ctx: RunContext, config: NeuronTrainingConfig, out_dir: str | os.PathLike
) -> NeuronTrainingResult:
    """Zero-shot / Train-Random / Train-Task per task, and the task x task training matrix.

    Writes ``table2.{md,csv,json}``, ``train_matrix.{md,csv,json,png}`` (change of task j's
    score after training task i's neurons, in points), per-run training folders
    ``runs/<task>/<random|task>/`` and ``finetune_config.json``.
    """
    model, tokenizer, progress = ctx.model, ctx.tokenizer, ctx.progress
    tasks = [t for t in ctx.tasks if config.tasks is None or t.id in config.tasks]
    neuron_sets = ctx.neuron_sets()
    out = Path(out_dir)
    check_sets_cover(tasks, neuron_sets)
    space = NeuronSpace(model, next(iter(neuron_sets.values())).definition)
    test = {t.id: eval_examples(t, config.n_test, config.seed) for t in tasks}
    for t in tasks:
        neuron_sets[t.id].check_space(space)
    controls = matched_random_sets(
        {t.id: neuron_sets[t.id] for t in tasks}, space, config.random_seed
    )

    examples: dict[str, dict[str, list[float]]] = {}  # row -> task -> per-example scores

    def score(task: Task, row: str | None = None) -> float:
        res = evaluate(model, tokenizer, task, test[task.id], config=config.eval, progress=False)
        if row is not None:
            examples.setdefault(row, {})[task.id] = res.example_scores()
        return res.score

    rows: dict[str, dict[str, float]] = {"Zero-shot": {t.id: score(t, "Zero-shot") for t in tasks}}
    rows.update({"Train-Random": {}, "Train-Task": {}})
    matrix: dict[str, dict[str, float]] | None = {} if config.matrix else None
    runs: dict[str, dict] = {}
    for t in tasks:
        train_task = limited(t, config.n_train, config.seed)
        for kind, neurons in (("random", controls[t.id]), ("task", neuron_sets[t.id])):
            with trained(
                model, tokenizer, [train_task], config.train, neurons=neurons,
                out_dir=out / "runs" / t.id / kind, progress=progress,
            ) as res:  # fmt: skip
                row = "Train-Random" if kind == "random" else "Train-Task"
                own = rows[row][t.id] = score(t, row)
                if kind == "task" and matrix is not None:
                    matrix[t.id] = {j.id: (own if j.id == t.id else score(j)) for j in tasks}
            runs[f"{t.id}/{kind}"] = res.summary()
    paired = paired_differences(examples, config.seed)
    meta = experiment_meta(
        config, model, tasks, test, neuron_sets, controls, runs=runs, paired=paired
    )
    result = NeuronTrainingResult(Comparison([t.id for t in tasks], rows, matrix), runs, out, meta)
    result.save()
    return result


run_table2 = neuron_training_experiment

#: the paired differences of Table 2, each row against another
PAIRS = (("Train-Task", "Train-Random"), ("Train-Task", "Zero-shot"))


def paired_differences(examples: dict[str, dict[str, list[float]]], seed: int) -> dict:
    """Per task, Train-Task minus Train-Random and minus Zero-shot over the same test
    examples: the mean, a bootstrap 95 % CI and a sign-flip p-value (``MeanDifference``)."""
    return {
        task: {
            f"{a} - {b}": mean_difference(examples[a][task], examples[b][task], seed=seed).to_dict()
            for a, b in PAIRS
        }
        for task in examples.get("Train-Task", {})
    }


def reading(task: str, pairs: dict) -> str:
    """One line: how far training the task's neurons beats random ones and zero-shot."""
    parts = [
        f"{name} {d['mean']:+.1f} points (95 % CI {d['low']:.1f}..{d['high']:.1f}, "
        f"p = {d['p_value']:.3f})"
        for name, d in pairs.items()
    ]
    n = next(iter(pairs.values()))["n"]
    return f"{task}: " + "; ".join(parts) + f"; {n} test examples, one training run each"
