"""PAPER.md Table 2: train each task's neurons vs as many random neurons (+ Figure 5 a).

Each task is trained on its own, once through as many random neurons as it has (matched per
layer and module, drawn outside its set) and once through its own neurons, always starting
from the same base weights: the trained :class:`NeuronDelta` is detached after scoring, which
restores the base model exactly.

Example:
    >>> res = neuron_training_experiment(model, tok, tasks, sets, NeuronTrainingConfig(), "out")  # doctest: +SKIP
    >>> res.table.row("Train-Task")  # task id -> accuracy %  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
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
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.selection import matched_random_sets
from taskneurons.neurons.space import NeuronSpace
from taskneurons.report.comparison import Comparison, MatrixSpec
from taskneurons.training.trained import trained


@dataclass
class NeuronTrainingResult:
    """Zero-shot / Train-Random / Train-Task per task (and the training matrix).

    Attributes:
        table: rows ``Zero-shot``, ``Train-Random``, ``Train-Task`` (accuracy % / ROUGE-L);
            ``matrix[i][j]``: task j's score after training task i's neurons (``None`` when
            the config's ``matrix`` is off).
        runs: ``"<task>/<random|task>"`` -> steps, final loss, trainable scalars, seconds.
        out_dir: where the files are.
    """

    table: Comparison
    runs: dict[str, dict]
    out_dir: Path

    def markdown(self) -> str:
        """The table, and the change matrix when there is one."""
        parts = [self.table.markdown()]
        if self.table.matrix is not None:
            parts.append(self.table.change_markdown("trained \\ measured"))
        return "\n\n".join(parts)


def neuron_training_experiment(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    neuron_sets: dict[str, NeuronSet],
    config: NeuronTrainingConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> NeuronTrainingResult:
    """Zero-shot / Train-Random / Train-Task per task, and the task x task training matrix.

    Writes ``table2.{md,csv,json}``, ``train_matrix.{md,csv,json,png}`` (change of task j's
    score after training task i's neurons, in points), per-run training folders
    ``runs/<task>/<random|task>/`` and ``finetune_config.json``.
    """
    out = Path(out_dir)
    check_sets_cover(tasks, neuron_sets)
    space = NeuronSpace(model, next(iter(neuron_sets.values())).definition)
    test = {t.id: eval_examples(t, config.n_test, config.seed) for t in tasks}
    for t in tasks:
        neuron_sets[t.id].check_space(space)
    controls = matched_random_sets(
        {t.id: neuron_sets[t.id] for t in tasks}, space, config.random_seed
    )

    def score(task: Task) -> float:
        res = evaluate(model, tokenizer, task, test[task.id], config=config.eval, progress=False)
        return res.score

    rows: dict[str, dict[str, float]] = {"Zero-shot": {t.id: score(t) for t in tasks}}
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
                own = score(t)
                rows["Train-Random" if kind == "random" else "Train-Task"][t.id] = own
                if kind == "task" and matrix is not None:
                    matrix[t.id] = {j.id: (own if j.id == t.id else score(j)) for j in tasks}
            runs[f"{t.id}/{kind}"] = res.summary()
    result = NeuronTrainingResult(Comparison([t.id for t in tasks], rows, matrix), runs, out)
    _write(result, experiment_meta(config, model, tasks, test, neuron_sets, controls, runs=runs))
    return result


def _write(result: NeuronTrainingResult, meta: dict) -> None:
    result.table.write(
        result.out_dir,
        "table2",
        meta,
        "Neuron training (accuracy % / ROUGE-L)",
        MatrixSpec(
            "train_matrix",
            "Change of task j's score (points) after training task i's neurons",
            "Train task i's neurons: change on task j",
            corner="trained \\ measured",
            ylabel="trained neurons of task i",
        ),
    )
    write_json_atomic(result.out_dir / "finetune_config.json", meta)


def run_table2(ctx: RunContext, config: NeuronTrainingConfig, folder: Path) -> NeuronTrainingResult:
    """The ``table2`` stage on the run's neuron sets (``config.tasks``: a subset of the tasks)."""
    tasks = [t for t in ctx.tasks if config.tasks is None or t.id in config.tasks]
    return neuron_training_experiment(
        ctx.model, ctx.tokenizer, tasks, ctx.neuron_sets(), config, folder, ctx.progress
    )
