"""The summary of selection sweeps: one row per (selection, k) cell, and the plots over k.

Used by a sweep as it finishes (:func:`~taskneurons.experiments.specificity.sweep.selection_sweep`) and by
``taskneurons analyze sweep RUN [RUN ...]``, which reads the cells of one or more finished or
interrupted sweeps (each ``<selection>-k<k>/`` folder read back as a
:class:`~taskneurons.experiments.specificity.deactivation_result.DeactivationResult`, with its
saved sets) and lays them out as one grid, e.g. a k sweep run in parts. Nothing is evaluated
again.

Example:
    >>> res = sweep_summary(["runs/sweep-k1-10", "runs/sweep-k-rest"], "runs/k-grid")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskneurons._io import write_json_atomic
from taskneurons.experiments.common import (
    first_mismatch,
    read_detect_config,
    result_settings,
    settings_of_record,
)
from taskneurons.experiments.specificity.deactivation_result import (
    EVALUATIONS_FILE,
    RECORD_FILE,
    SPECIFICITY_FILE,
    DeactivationResult,
)
from taskneurons.experiments.specificity.sweep_joint import JOINT_HEADER, write_joint
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.selection.ranking import iou
from taskneurons.neurons.selection.selection_config import SelectionConfig
from taskneurons.provenance import provenance
from taskneurons.report.plots import line_plot
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import RunFolder, read_record
from taskneurons.store.settings import flatten, model_identity

HEADER = [
    "selection", "k %", "neurons/task", "mean IoU", "own > random",
    "diag (acc)", "95% CI (acc)", "p (acc)", "rows/cols (acc)",
    "diag (NLL)", "95% CI (NLL)", "p (NLL)", "rows/cols (NLL)",
]  # fmt: skip

#: A cell folder of a sweep: ``<selection>-k<k>`` (``topk-k0.1``, ``lape-k10``).
CELL_NAME = re.compile(r"^(?P<method>[a-z]+)-k(?P<k>\d+(?:\.\d+)?(?:e-?\d+)?)$")


def cell_name(method: str, k: float) -> str:
    """The folder of a sweep's cell: ``<selection>-k<k>`` (``topk-k0.1``)."""
    return f"{method}-k{k:g}"


#: The readouts of a deactivation: the task metric and the gold-label NLL.
READOUTS = ("score", "nll")
#: ``readout`` (``score``, ``nll``) -> the statistics of :class:`Specificity.to_dict`.
Specs = Mapping[str, Mapping | None]


def mean_iou(sets: Mapping[str, NeuronSet]) -> float:
    """Mean IoU over every pair of the sets (``nan`` for one set)."""
    names = list(sets)
    pairs = [iou(sets[a], sets[b]) for i, a in enumerate(names) for b in names[i + 1 :]]
    return sum(pairs) / len(pairs) if pairs else math.nan


def sweep_row(
    method: str, k: float, sizes: Sequence[int], overlap: float, hurt: int, specs: Specs
) -> list:
    """One summary row: set size, mean IoU, ``hurt/n`` tasks losing more to their own neurons
    than to random ones, and per readout the diagonal statistic, its CI, p-value and how many
    rows / columns peak on the diagonal."""
    n = len(sizes)
    row = [method, k, sum(sizes) / n, overlap, f"{hurt}/{n}"]
    for readout in READOUTS:
        spec = specs.get(readout)
        if spec is None:
            row += [math.nan, "-", math.nan, "-"]
            continue
        ci = "-" if spec.get("ci") is None else f"{spec['ci'][0]:.2f}..{spec['ci'][1]:.2f}"
        dom = f"{len(spec['rows'])}/{len(spec['columns'])} of {n}"
        row += [spec["statistic"], ci, spec["p_value"], dom]
    return row


def write_summary(
    out: Path, rows: list[list], specs: Mapping[tuple[str, float], Specs], meta: dict
) -> list[list]:
    """``sweep.{md,csv,json}``, the joint tests and Holm-adjusted p-values
    (:mod:`~taskneurons.experiments.specificity.sweep_joint`) and
    ``specificity_vs_k{,_nll}.png`` (one line per selection, 95 % bands, gaps where a cell is
    missing). Returns the joint tests' rows."""
    write_table(out / "sweep", HEADER, rows, meta=meta, digits=2, title="Selection sweep")
    joint = write_joint(out, specs)
    ks = sorted({k for _, k in specs})
    methods = list(dict.fromkeys(m for m, _ in specs))
    for readout, suffix, label in (
        ("score", "", "accuracy points"),
        ("nll", "_nll", "gold NLL, nats"),
    ):
        series, bands = {}, {}
        for method in methods:
            got = [specs.get((method, k), {}).get(readout) for k in ks]
            if all(g is None for g in got):
                continue
            series[method] = [g["statistic"] if g else math.nan for g in got]
            bands[method] = [tuple(g["ci"]) if g and g.get("ci") else (math.nan,) * 2 for g in got]
        if series:
            line_plot(
                ks, series, out / f"specificity_vs_k{suffix}.png",
                title=f"Specificity of the damage matrix ({label})",
                xlabel="k (% of neurons per task)", ylabel="mean double-centred diagonal",
                intervals=bands, log_x=True,
            )  # fmt: skip
    return joint


@dataclass
class SweepSummary:
    """The cells of one or more sweeps as one grid."""

    rows: list[list]
    sources: dict[str, str]
    out_dir: Path
    joint: list[list] = field(default_factory=list)

    def markdown(self) -> str:
        joint = markdown_table(JOINT_HEADER, self.joint, digits=4)
        return (
            f"{markdown_table(HEADER, self.rows, digits=2)}\n\nOne joint test per scope (the "
            f"tasks relabelled once for all its cells):\n\n{joint}\n\nwritten to {self.out_dir}"
        )


def read_cell(folder: Path, listed: Mapping[tuple[str, float], list] | None = None):
    """``(row, specs, settings)`` of a finished cell folder (``None`` when it is not finished),
    from its :class:`~taskneurons.experiments.specificity.deactivation_result.DeactivationResult`
    (``settings``: :func:`cell_settings`).

    The mean IoU comes from the sets saved in the cell, else from ``listed`` (the run's
    ``sweep.json`` rows by cell), else is ``nan``.
    """
    match = CELL_NAME.match(folder.name)
    names = (SPECIFICITY_FILE, "table1.json", RECORD_FILE, EVALUATIONS_FILE)
    if match is None or not all((folder / n).is_file() for n in names):
        return None
    cell = DeactivationResult.load(folder)
    method, k = match["method"], float(match["k"])
    tasks = list(cell.meta["neuron_sets"])
    sizes = [int(cell.meta["neuron_sets"][t]["count"]) for t in tasks]
    if all(RunFolder(folder).set_path(t).is_file() for t in tasks):
        overlap = mean_iou({t: cell.sets[t] for t in tasks})
    else:
        overlap = (listed or {}).get((method, k), [math.nan] * 4)[3]
    row = cell_row(method, k, cell, sizes, overlap)
    return row, cell_specs(cell), cell_settings(folder, cell.meta)


def cell_settings(folder: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """What the cells of one grid share (flat keys): the model, the tasks and their data, the
    deactivation settings, and the detection's but its ``k`` and selection (speed knobs left
    out: :func:`~taskneurons.experiments.common.result_settings`).

    Example:
        >>> cell_settings(Path("runs/sweep/topk-k10"), meta)["tasks"]  # doctest: +SKIP
        ['agnews', 'sst2']
    """
    model, hashes, config = (meta.get(key) for key in ("model", "data_hash", "config"))
    hashes = hashes if isinstance(hashes, Mapping) else {}
    out = {"tasks": sorted(hashes), **flatten(hashes, "data_hash.")}
    out.update(flatten(model_identity(model if isinstance(model, Mapping) else None), "model."))
    out.update(flatten(config if isinstance(config, Mapping) else {}, "deactivate."))
    record = read_detect_config(folder)
    detect = settings_of_record(record) if record is not None else {}
    cell_keys = ("k", "tasks", "selection.", "model.")
    out.update({f"detect.{k}": v for k, v in detect.items() if not k.startswith(cell_keys)})
    return result_settings(out)


def check_one_grid(cells: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Refuse cells (folder, :func:`cell_settings`) that do not make one grid.

    Raises:
        ValueError: a cell's model, tasks, data or settings are not the first cell's (the
            message names both folders and the keys).

    Example:
        >>> check_one_grid([("a/topk-k1", {"tasks": ["x"]}), ("b/topk-k5", {"tasks": ["x"]})])
    """
    mismatch = first_mismatch(cells)
    if mismatch is not None:
        first, other, diff = mismatch
        raise ValueError(
            f"{other} cannot join the grid of {first}: they differ in {'; '.join(diff)} "
            "(the first vs the other); analyze such sweeps separately, or pass --mixed to lay "
            "them out together anyway"
        )


def cell_specs(cell: DeactivationResult) -> dict:
    """Readout -> the cell's specificity statistics as a dict (what the summary reads)."""
    return {r: s.to_dict() for r, s in cell.specificity.items()}


def cell_row(
    method: str, k: float, cell: DeactivationResult, sizes: Sequence[int], overlap: float
) -> list:
    """The summary row of a cell (:func:`sweep_row`): how many tasks lose more to their own
    neurons than to random ones, from its table."""
    own, rand = cell.table.row("Deactivate-Task"), cell.table.row("Deactivate-Random")
    hurt = sum(own[t] < rand[t] for t in own)
    return sweep_row(method, k, sizes, overlap, hurt, cell_specs(cell))


def _same_statistics(a: Specs, b: Specs) -> bool:
    """Whether two cells gave the same statistics (the same cell run twice)."""
    keys = ("statistic", "ci", "p_value", "rows", "columns")
    return all(
        (a.get(r) or {}).get(key) == (b.get(r) or {}).get(key) for r in READOUTS for key in keys
    )


def sweep_summary(
    runs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, mixed: bool = False
) -> SweepSummary:
    """Every finished cell of the sweep folders ``runs`` as one grid, written to ``out``.

    ``mixed``: lay out cells of other models, tasks or settings together too.

    Raises:
        ValueError: a folder holds no finished cell; two cells differ in model, tasks, data or
            settings (:func:`check_one_grid`; unless ``mixed``); two folders hold the same cell
            with different statistics (the same cell with the same ones is taken once).
    """
    cells, sources, grid = {}, {}, []
    for run in map(Path, runs):
        listed = {}
        if (run / "sweep.json").is_file():
            listed = {(r[0], float(r[1])): r for r in read_record(run / "sweep.json")["rows"]}
        read = ((p, read_cell(p, listed)) for p in sorted(run.iterdir()))
        found = [(p, c) for p, c in read if c]
        if not found:
            raise ValueError(f"{run}: no finished sweep cell (<selection>-k<k>/specificity.json)")
        grid += [(str(folder), settings) for folder, (_, _, settings) in found]
        if not mixed:
            check_one_grid(grid)
        for _, (row, specs, _) in found:
            key = (row[0], row[1])
            if key in cells and not _same_statistics(cells[key][1], specs):
                raise ValueError(
                    f"cell {key[0]}-k{key[1]:g} differs between {sources[key]} and {run}"
                )
            if key not in cells or math.isnan(cells[key][0][3]):  # keep a known IoU
                cells[key], sources[key] = (row, specs), str(run)
    methods = SelectionConfig.names()
    order = sorted(cells, key=lambda c: (methods.index(c[0]) if c[0] in methods else 99, c[1]))
    rows = [cells[c][0] for c in order]
    folder = Path(out) if out is not None else Path(runs[0]) / "analyze-sweep"
    meta = provenance(
        runs=[str(r) for r in runs], cells={f"{m}-k{k:g}": s for (m, k), s in sources.items()}
    )
    joint = write_summary(folder, rows, {c: cells[c][1] for c in order}, meta)
    write_json_atomic(folder / "analysis_config.json", meta)
    named = {f"{m}-k{k:g}": s for (m, k), s in sources.items()}
    return SweepSummary(rows, named, folder, joint)
