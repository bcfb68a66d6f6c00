"""PAPER.md Table 1 rows and the task x task deactivation matrix (Figure 5 b).

For each task i: its score with nothing deactivated (Original), with as many random neurons as
task i has, matched per layer and module (Deactivate-Random), and with task i's neurons
(Deactivate-Task); and the score of every task j with task i's neurons off (the matrix).

Example:
    >>> res = deactivation_experiment(model, tok, tasks, sets, DeactivateConfig(), "out")  # doctest: +SKIP
    >>> res.table.row("Deactivate-Task")  # task id -> accuracy %  # doctest: +SKIP
    >>> print(res.markdown())  # tables, matrices and the two-line summaries  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm

from taskneurons._io import write_json_atomic
from taskneurons.config import Config
from taskneurons.data.tasks import Task
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.result import EvalConfig
from taskneurons.experiments.analysis import ROW_NAMES, deactivation_summary
from taskneurons.experiments.common import check_sets_cover, eval_examples, experiment_meta
from taskneurons.neurons.intervention import MODES, deactivate
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.selection import matched_random_sets
from taskneurons.neurons.space import NeuronSpace
from taskneurons.report.comparison import Comparison, MatrixSpec


@dataclass
class DeactivateConfig(Config):
    """Knobs of the deactivation experiment.

    Attributes:
        mode: ``activation`` (hooks) or ``parameters`` (zeroed slices, restored bit-exactly).
        n_test: test examples per task (label-stratified subset with ``seed``; ``None``: all).
        seed: seed of the test subset.
        random_seed: seed of the random neuron sets (matched per layer and module).
        random_excludes_task: draw the random neurons from outside the task's own set.
        eval: how tasks are evaluated.
    """

    mode: str = "activation"
    n_test: int | None = 200
    seed: int = 0
    random_seed: int = 0
    random_excludes_task: bool = True
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.n_test is not None and self.n_test < 1:
            raise ValueError(f"n_test must be >= 1 or None, got {self.n_test}")


@dataclass
class DeactivationResult:
    """Table 1 rows and the matrix, by the task metric and (label tasks) by gold-label NLL.

    Attributes:
        table: rows ``Original`` / ``Deactivate-Random`` / ``Deactivate-Task`` (accuracy % or
            ROUGE-L), and ``matrix[i][j]``: task j's score with task i's neurons off.
        nll: the same for the gold label's NLL (nats per example), when every task is scored
            by label likelihood; else ``None``.
        metric: task id -> metric name.
        out_dir: where the files are.
    """

    table: Comparison
    nll: Comparison | None
    metric: dict[str, str]
    out_dir: Path

    def summary(self) -> str:
        """How many tasks lose more to their own neurons than to random ones, and diagonals."""
        text = deactivation_summary(self.table)
        if self.nll is not None:
            text += "\nby gold-label NLL:\n" + deactivation_summary(
                self.nll, higher_is_better=False
            )
        return text

    def markdown(self) -> str:
        """The tables and change matrices, each followed by its summary."""
        corner = "deactivated \\ measured"
        parts = [
            self.table.markdown(),
            self.table.change_markdown(corner),
            deactivation_summary(self.table),
        ]
        if self.nll is not None:
            parts += [
                "Gold-label NLL (nats per example, lower is better)",
                self.nll.markdown(),
                self.nll.change_markdown(corner),
                deactivation_summary(self.nll, higher_is_better=False),
            ]
        return "\n\n".join(parts)


def deactivation_experiment(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    neuron_sets: dict[str, NeuronSet],
    config: DeactivateConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> DeactivationResult:
    """PAPER.md Table 1 rows and the task x task deactivation matrix (Figure 5).

    Writes ``table1.{md,csv,json}``, ``matrix.{md,csv,json}`` (change of task j's score when
    task i's neurons are off, in points), ``matrix.png`` and ``deactivate_config.json``. When
    every task is scored by label likelihood, the same evaluations also give the gold label's
    mean NLL (:meth:`EvalResult.gold_nll`), written as ``table1_nll.*`` and ``matrix_nll.*``
    (change in nats; a rise means the neurons mattered), a readout that still moves when the
    model is at chance.
    """
    check_sets_cover(tasks, neuron_sets)
    space = NeuronSpace(model, next(iter(neuron_sets.values())).definition)
    for ns in neuron_sets.values():
        ns.check_space(space)
    test = {t.id: eval_examples(t, config.n_test, config.seed) for t in tasks}
    controls = matched_random_sets(
        {t.id: neuron_sets[t.id] for t in tasks},
        space,
        config.random_seed,
        config.random_excludes_task,
    )
    runs = _run_conditions(
        model, tokenizer, tasks, neuron_sets, controls, test, config, space, progress
    )
    meta = experiment_meta(config, model, tasks, test, neuron_sets, controls)
    result = _result(tasks, runs, Path(out_dir))
    _write(result, meta)
    return result


def _run_conditions(model, tokenizer, tasks, neuron_sets, controls, test, config, space, progress):
    """``{row: {i: (score, nll)}}`` plus ``"matrix": {i: {j: (score, nll)}}``."""
    bar = tqdm(
        total=len(tasks) * (len(tasks) + 2), desc="deactivation", unit="eval", disable=not progress
    )

    def score(task: Task) -> tuple[float, float | None]:
        res = evaluate(model, tokenizer, task, test[task.id], config=config.eval, progress=False)
        bar.update()
        return res.score, res.gold_nll()

    runs: dict = {"Original": {t.id: score(t) for t in tasks}, "Deactivate-Random": {}}
    runs["matrix"] = {}
    for i in tasks:
        with deactivate(model, controls[i.id], mode=config.mode, space=space):
            runs["Deactivate-Random"][i.id] = score(i)
        with deactivate(model, neuron_sets[i.id], mode=config.mode, space=space):
            runs["matrix"][i.id] = {j.id: score(j) for j in tasks}
    bar.close()
    runs["Deactivate-Task"] = {i.id: runs["matrix"][i.id][i.id] for i in tasks}
    return runs


def _result(tasks: list[Task], runs: dict, out: Path) -> DeactivationResult:
    names = [t.id for t in tasks]

    def part(k: int) -> Comparison:
        rows = {r: {n: runs[r][n][k] for n in names} for r in ROW_NAMES}
        matrix = {i: {j: v[k] for j, v in row.items()} for i, row in runs["matrix"].items()}
        return Comparison(names, rows, matrix)

    has_nll = all(v[1] is not None for v in runs["Original"].values())
    return DeactivationResult(
        part(0), part(1) if has_nll else None, {t.id: t.metric for t in tasks}, out
    )


def _write(result: DeactivationResult, meta: dict) -> None:
    out = result.out_dir
    result.table.write(
        out,
        "table1",
        meta,
        "Deactivation (accuracy % / ROUGE-L)",
        MatrixSpec(
            "matrix",
            "Change of task j's score (points) with task i's neurons deactivated",
            "Deactivate task i's neurons: change on task j",
            corner="deactivated \\ measured",
            ylabel="deactivated neurons of task i",
        ),
    )
    if result.nll is not None:
        result.nll.write(
            out,
            "table1_nll",
            meta,
            "Deactivation: gold label NLL (nats per example, lower is better)",
            MatrixSpec(
                "matrix_nll",
                "Change of task j's gold label NLL (nats) with task i's neurons deactivated",
                "Deactivate task i's neurons: change on task j (gold NLL)",
                corner="deactivated \\ measured",
                ylabel="deactivated neurons of task i",
                cmap="RdBu_r",
            ),
        )
    write_json_atomic(out / "deactivate_config.json", meta)
