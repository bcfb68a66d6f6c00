"""Figure 2 from the proportion sweep's evaluation records: scores, changes with CIs, plots.

A *record* is one evaluation of the sweep (:mod:`.generalization`)::

    {"group": "a", "mode": "joint", "proportion": 50.0, "model": "joint", "neurons": 4143,
     "task": "sst2", "domain": "out", "score": 52.0, "examples": [100.0, 0.0, ...]}

``model`` is what was trained (``joint``, a training task's id, or ``base`` for the zero-shot
rows); ``examples`` holds each test example's share of ``score`` (100/0 for accuracy, ROUGE-L
x 100 for generation), in the same order for every record of a task.

* :func:`figure_rows` — Figure 2's table: a row per mode and proportion (and zero-shot).
* :func:`change_rows` — each row's change from zero-shot, for the ID mean, the OOD mean and
  their average: the mean paired difference over the test examples with a bootstrap interval
  and a sign-flip p-value (:func:`taskneurons.analysis.paired.mean_difference`).
* :func:`write_figure` — the tables (Markdown, CSV, JSON) and the line plots (PNG).

Example:
    >>> g = TaskGroup("g", ["a"], ["b"])
    >>> recs = [_rec("zero-shot", 0, "base", "a", [0, 100]), _rec("zero-shot", 0, "base", "b", [0, 0]),
    ...         _rec("joint", 50, "joint", "a", [100, 100]), _rec("joint", 50, "joint", "b", [0, 100])]
    >>> header, rows = change_rows(g, recs, ["joint"], [50.0], n_boot=10)
    >>> rows[0][:4]  # mode, proportion, domain, change in points
    ['joint', 50.0, 'ID', 50.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from taskneurons.analysis.paired import mean_difference
from taskneurons.experiments.generalization.groups import TaskGroup
from taskneurons.report.plots import line_plot
from taskneurons.report.tables import write_table

#: The file a generalization stage writes its records (with per-example scores) to.
EXAMPLES_FILE = "evaluation_examples.json"

CHANGE_HEADER = [
    "mode", "proportion %", "domain", "change", "95% CI", "p", "examples",
]  # fmt: skip


def _rec(mode: str, p: float, model: str, task: str, examples: list[float]) -> dict:
    """A record for the examples in docstrings and tests (group ``g``)."""
    score = sum(examples) / len(examples)
    return {
        "group": "g", "mode": mode, "proportion": float(p), "model": model, "neurons": 1,
        "task": task, "domain": "", "score": score, "examples": [float(x) for x in examples],
    }  # fmt: skip


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _task_records(g: TaskGroup, cell: list[dict], task: str) -> list[dict]:
    """The records of ``task`` in a cell: its own model's for an ID task, every model's for OOD."""
    if task in g.train:
        return [r for r in cell if r["task"] == task and r["model"] in (task, "joint", "base")]
    return [r for r in cell if r["task"] == task]


def figure_rows(
    g: TaskGroup, records: Sequence[dict], modes: Sequence[str], proportions: Sequence[float]
) -> tuple[list[str], list[list]]:
    """Figure 2's table of a group: a row per mode and proportion (and zero-shot).

    A task's ID score in ``single`` mode is its own model's; an OOD task's score is the mean
    over the group's models. Columns: mode, proportion, neurons (mean trained), each ID task,
    ID mean, each OOD task, OOD mean, average of the two means.
    """
    header = ["mode", "proportion %", "neurons", *g.train, "ID mean", *g.test, "OOD mean"]
    header.append("average")
    rows = []
    for mode, p, cell in _cells(g, records, modes, proportions):
        ids = [_mean([r["score"] for r in _task_records(g, cell, t)]) for t in g.train]
        oods = [_mean([r["score"] for r in _task_records(g, cell, t)]) for t in g.test]
        neurons = _mean(list({r["model"]: r["neurons"] for r in cell}.values()))
        id_mean, ood_mean = _mean(ids), _mean(oods)
        rows.append([mode, p, neurons, *ids, id_mean, *oods, ood_mean, (id_mean + ood_mean) / 2])
    return header, rows


def _cells(g: TaskGroup, records: Sequence[dict], modes, proportions):
    """``(mode, proportion, records)`` for zero-shot (when measured) and every planned cell."""
    mine = [r for r in records if r["group"] == g.name]
    keys = [("zero-shot", 0.0)] if any(r["mode"] == "zero-shot" for r in mine) else []
    keys += [(m, float(p)) for m in modes for p in proportions]
    for mode, p in keys:
        yield mode, p, [r for r in mine if r["mode"] == mode and r["proportion"] == p]


def _examples(g: TaskGroup, cell: list[dict], task: str) -> np.ndarray | None:
    """``[n]`` per-example scores of ``task`` in a cell (mean over models for OOD); ``None``
    when a record lacks them."""
    recs = _task_records(g, cell, task)
    if not recs or any("examples" not in r for r in recs):
        return None
    return np.mean([np.asarray(r["examples"], dtype=float) for r in recs], axis=0)


def _pooled(parts: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``(x_t, y_t, w_t)`` so that the mean of the result is ``sum_t w_t mean(x_t)``.

    Each task's values are scaled by ``w_t N / n_t`` (``N`` all examples), so a mean over
    tasks of unequal size stays a mean over tasks; paired resampling then runs over examples.
    """
    n = sum(len(x) for x, _, _ in parts)
    xs = [x * (w * n / len(x)) for x, _, w in parts]
    ys = [y * (w * n / len(y)) for _, y, w in parts]
    return np.concatenate(xs), np.concatenate(ys)


def change_rows(
    g: TaskGroup,
    records: Sequence[dict],
    modes: Sequence[str],
    proportions: Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[list[str], list[list]]:
    """Each cell's change from zero-shot: ID mean, OOD mean and their average, with CIs.

    Per (mode, proportion) and domain, the paired per-example difference from the zero-shot
    records (same test examples), pooled over the domain's tasks with equal task weights;
    ``average`` weighs the ID and OOD means equally, as Figure 2's average does. Columns:
    mode, proportion, domain (``ID``, ``OOD``, ``average``), change (points), 95 % bootstrap
    interval, sign-flip p-value, examples. Empty when the zero-shot rows or per-example
    scores are missing.
    """
    cells = list(_cells(g, records, modes, proportions))
    if not cells or cells[0][0] != "zero-shot":
        return list(CHANGE_HEADER), []
    base = cells[0][2]
    rows = []
    for mode, p, cell in cells[1:]:
        per_domain = {}
        for domain, tasks in (("ID", g.train), ("OOD", g.test)):
            pairs = [(_examples(g, cell, t), _examples(g, base, t)) for t in tasks]
            if not tasks or any(x is None or y is None for x, y in pairs):
                return list(CHANGE_HEADER), []
            per_domain[domain] = [(x, y, 1 / len(tasks)) for x, y in pairs]
        per_domain["average"] = [
            (x, y, w / 2) for parts in per_domain.values() for x, y, w in parts
        ]
        for domain, parts in per_domain.items():
            x, y = _pooled(parts)
            d = mean_difference(x, y, n_boot=n_boot, n_perm=n_boot, seed=seed)
            rows.append([mode, p, domain, d.mean, f"{d.low:.1f}..{d.high:.1f}", d.p_value, len(x)])
    return list(CHANGE_HEADER), rows


def write_figure(
    out: Path,
    g: TaskGroup,
    table: tuple[list[str], list[list]],
    change: tuple[list[str], list[list]],
    modes: Sequence[str],
    meta: dict,
) -> None:
    """``figure2_<g>.{md,csv,json}``, ``figure2_<g>_change.*`` and the plots of each mode."""
    header, rows = table
    title = f"Group {g.name}: scores after training each proportion (Figure 2)"
    write_table(out / f"figure2_{g.name}", header, rows, meta=meta, title=title)
    if change[1]:
        title = f"Group {g.name}: change from zero-shot, paired over test examples (points)"
        write_table(out / f"figure2_{g.name}_change", *change, meta=meta, digits=3, title=title)
    col = {name: i for i, name in enumerate(header)}
    for mode in modes:
        mine = [r for r in rows if r[0] == mode]
        lines = {name: [r[col[name]] for r in mine] for name in ("ID mean", "OOD mean", "average")}
        per_task = {
            f"{t} ({'ID' if t in g.train else 'OOD'})": [r[col[t]] for r in mine]
            for t in [*g.train, *g.test]
        }
        for suffix, series in (("", lines), ("_tasks", per_task)):
            line_plot(
                [r[1] for r in mine], series, out / f"figure2_{g.name}_{mode}{suffix}.png",
                title=f"Group {g.name}, {mode} training: score vs proportion of neurons",
                xlabel="proportion of each training task's neurons (%)",
                ylabel="accuracy % / ROUGE-L", zero_line=False,
            )  # fmt: skip
