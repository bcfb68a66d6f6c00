"""PAPER.md Table 1 rows and the task x task deactivation matrix (Figure 5 b)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.data.tasks import Task
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.result import EvalConfig
from taskneurons.experiments.common import _experiment_meta, _test_examples
from taskneurons.neurons.intervention import deactivate
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.selection import matched_random_sets
from taskneurons.neurons.space import NeuronSpace
from taskneurons.report.plots import heatmap
from taskneurons.report.tables import markdown_table, write_table


@dataclass
class DeactivateConfig:
    """Knobs of ``taskneurons deactivate``.

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

    def to_dict(self) -> dict:
        return asdict(self)


def deactivation_experiment(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    neuron_sets: dict[str, NeuronSet],
    config: DeactivateConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """PAPER.md Table 1 rows and the task x task deactivation matrix (Figure 5).

    For each task i: score with nothing deactivated (Original), with as many random neurons
    as task i has, matched per layer and module (Deactivate-Random), and with task i's neurons
    (Deactivate-Task); and the score of every task j with task i's neurons off.

    Writes ``table1.{md,csv,json}``, ``matrix.{md,csv,json}`` (change of task j's score when
    task i's neurons are off, in points), ``matrix.png`` and ``deactivate_config.json``. When
    every task is scored by label likelihood, the same evaluations also give the gold label's
    mean NLL (:meth:`EvalResult.gold_nll`), written as ``table1_nll.*`` and ``matrix_nll.*``
    (change in nats; a rise means the neurons mattered) — a readout that still moves when the
    model is at chance.

    Returns:
        ``{"original": {j: score}, "random": {i: score}, "task": {i: score},
        "matrix": {i: {j: score}}, "metric": {j: name}, "table": str}``, plus ``"nll"``
        with the same keys (scores replaced by gold NLLs) when available.
    """
    out = Path(out_dir)
    missing = [t.id for t in tasks if t.id not in neuron_sets]
    if missing:
        raise ValueError(f"no neuron set for tasks {missing}; have {sorted(neuron_sets)}")
    space = NeuronSpace(model, next(iter(neuron_sets.values())).definition)
    for ns in neuron_sets.values():
        ns.check_space(space)
    test = {t.id: _test_examples(t, config.n_test, config.seed) for t in tasks}

    from tqdm.auto import tqdm

    n_evals = len(tasks) * (len(tasks) + 2)
    bar = tqdm(total=n_evals, desc="deactivation", unit="eval", disable=not progress)

    def score(task: Task) -> tuple[float, float | None]:
        """``(task metric, gold label NLL or None)`` of one evaluation."""
        res = evaluate(model, tokenizer, task, test[task.id], config=config.eval, progress=False)
        bar.update()
        return res.score, res.gold_nll()

    controls = matched_random_sets(
        {t.id: neuron_sets[t.id] for t in tasks},
        space,
        config.random_seed,
        config.random_excludes_task,
    )
    original = {t.id: score(t) for t in tasks}
    rand, matrix = {}, {}
    for i in tasks:
        with deactivate(model, controls[i.id], mode=config.mode, space=space):
            rand[i.id] = score(i)
        with deactivate(model, neuron_sets[i.id], mode=config.mode, space=space):
            matrix[i.id] = {j.id: score(j) for j in tasks}
    bar.close()
    names = [t.id for t in tasks]

    def readout(k: int) -> tuple[dict, dict, dict]:
        """Component ``k`` (0: metric, 1: gold NLL) of every evaluation."""
        return (
            {n: v[k] for n, v in original.items()},
            {n: v[k] for n, v in rand.items()},
            {i: {j: v[k] for j, v in row.items()} for i, row in matrix.items()},
        )

    meta = _experiment_meta(config, model, tasks, test, neuron_sets, controls)
    result = _deactivation_tables(
        names,
        *readout(0),
        out,
        "",
        meta,
        title="Deactivation (accuracy % / ROUGE-L)",
        change_title="Change of task j's score (points) with task i's neurons deactivated",
    )
    result["metric"] = {t.id: t.metric for t in tasks}
    if all(nll is not None for _, nll in original.values()):
        result["nll"] = _deactivation_tables(
            names,
            *readout(1),
            out,
            "_nll",
            meta,
            title="Deactivation: gold label NLL (nats per example, lower is better)",
            change_title="Change of task j's gold label NLL (nats) with task i's neurons "
            "deactivated",
        )
    write_json_atomic(out / "deactivate_config.json", meta)
    return result


def _deactivation_tables(
    names: list[str],
    original: dict[str, float],
    rand: dict[str, float],
    matrix: dict[str, dict[str, float]],
    out: Path,
    suffix: str,
    meta: dict,
    title: str,
    change_title: str,
) -> dict:
    """Write ``table1{suffix}`` (Table 1 rows) and ``matrix{suffix}`` (changes + heatmap)."""

    def avg(d: dict) -> float:
        return sum(d.values()) / len(d)

    task_row = {n: matrix[n][n] for n in names}
    header = ["", *names, "Avg"]
    rows = [
        ["Original", *[original[n] for n in names], avg(original)],
        ["Deactivate-Random", *[rand[n] for n in names], avg(rand)],
        ["Deactivate-Task", *[task_row[n] for n in names], avg(task_row)],
    ]
    write_table(out / f"table1{suffix}", header, rows, meta=meta, title=title)
    change = [[matrix[i][j] - original[j] for j in names] for i in names]
    write_table(
        out / f"matrix{suffix}",
        ["deactivated \\ measured", *names],
        [[i, *row] for i, row in zip(names, change, strict=True)],
        meta=meta,
        title=change_title,
    )
    heatmap(
        change,
        names,
        names,
        out / f"matrix{suffix}.png",
        title="Deactivate task i's neurons: change on task j" + (" (gold NLL)" if suffix else ""),
        xlabel="measured task j",
        ylabel="deactivated neurons of task i",
        cmap="RdBu_r" if suffix else "RdBu",
    )
    return {
        "original": original,
        "random": rand,
        "task": task_row,
        "matrix": matrix,
        "table": markdown_table(header, rows),
    }
