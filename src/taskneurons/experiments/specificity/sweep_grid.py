"""The summary of selection sweeps: one row per (selection, k) cell, and the plots over k.

Used by a sweep as it finishes (:func:`~taskneurons.experiments.specificity.sweep.selection_sweep`) and by
``taskneurons analyze sweep RUN [RUN ...]``, which reads the cells of one or more finished or
interrupted sweeps from their files (``<selection>-k<k>/specificity.json``, ``table1.json``,
``deactivate_config.json`` and the saved sets) and lays them out as one grid, e.g. a k sweep
run in parts. Nothing is evaluated again.

Example:
    >>> res = sweep_summary(["runs/sweep-k1-10", "runs/sweep-k-rest"], "runs/k-grid")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from taskneurons._io import write_json_atomic
from taskneurons.neurons.multitask_selection import METHODS
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.selection import iou
from taskneurons.provenance import provenance
from taskneurons.report.plots import line_plot
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import read_record

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
    for readout in ("score", "nll"):
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
) -> None:
    """``sweep.{md,csv,json}`` and ``specificity_vs_k{,_nll}.png`` (one line per selection,
    95 % bands, gaps where a cell is missing)."""
    write_table(out / "sweep", HEADER, rows, meta=meta, digits=2, title="Selection sweep")
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


@dataclass
class SweepSummary:
    """The cells of one or more sweeps as one grid."""

    rows: list[list]
    sources: dict[str, str]
    out_dir: Path

    def markdown(self) -> str:
        return f"{markdown_table(HEADER, self.rows, digits=2)}\n\nwritten to {self.out_dir}"


def _saved_iou(folder: Path, names: Sequence[str]) -> float | None:
    paths = [folder / t / "neurons.safetensors" for t in names]
    if not all(p.is_file() for p in paths):
        return None
    return mean_iou({t: NeuronSet.load(p) for t, p in zip(names, paths, strict=True)})


def read_cell(folder: Path, listed: Mapping[tuple[str, float], list] | None = None):
    """``(row, specs)`` of a finished cell folder (``None`` when it is not finished).

    The mean IoU comes from the saved sets, else from ``listed`` (the run's ``sweep.json``
    rows by cell), else is ``nan``.
    """
    match = CELL_NAME.match(folder.name)
    files = [folder / n for n in ("specificity.json", "table1.json", "deactivate_config.json")]
    if match is None or not all(p.is_file() for p in files):
        return None
    spec, table, config = (read_record(p) for p in files)
    method, k = match["method"], float(match["k"])
    names = list(config["neuron_sets"])
    sizes = [int(config["neuron_sets"][t]["count"]) for t in names]
    by_row = {r[0]: dict(zip(table["header"][1:], r[1:], strict=False)) for r in table["rows"]}
    hurt = sum(by_row["Deactivate-Task"][t] < by_row["Deactivate-Random"][t] for t in names)
    overlap = _saved_iou(folder, names)
    if overlap is None:
        overlap = (listed or {}).get((method, k), [math.nan] * 4)[3]
    specs = {r: spec.get(r) for r in ("score", "nll")}
    return sweep_row(method, k, sizes, overlap, hurt, specs), specs


def _same_statistics(a: Specs, b: Specs) -> bool:
    """Whether two cells gave the same statistics (the same cell run twice)."""
    keys = ("statistic", "ci", "p_value", "rows", "columns")
    return all(
        (a.get(r) or {}).get(key) == (b.get(r) or {}).get(key)
        for r in ("score", "nll")
        for key in keys
    )


def sweep_summary(
    runs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None
) -> SweepSummary:
    """Every finished cell of the sweep folders ``runs`` as one grid, written to ``out``.

    Raises:
        ValueError: a folder holds no finished cell, or two folders hold the same cell with
            different statistics (the same cell with the same ones is taken once).
    """
    cells, sources = {}, {}
    for run in map(Path, runs):
        listed = {}
        if (run / "sweep.json").is_file():
            listed = {(r[0], float(r[1])): r for r in read_record(run / "sweep.json")["rows"]}
        found = [c for c in (read_cell(p, listed) for p in sorted(run.iterdir())) if c]
        if not found:
            raise ValueError(f"{run}: no finished sweep cell (<selection>-k<k>/specificity.json)")
        for row, specs in found:
            key = (row[0], row[1])
            if key in cells and not _same_statistics(cells[key][1], specs):
                raise ValueError(
                    f"cell {key[0]}-k{key[1]:g} differs between {sources[key]} and {run}"
                )
            if key not in cells or math.isnan(cells[key][0][3]):  # keep a known IoU
                cells[key], sources[key] = (row, specs), str(run)
    order = sorted(cells, key=lambda c: (METHODS.index(c[0]) if c[0] in METHODS else 99, c[1]))
    rows = [cells[c][0] for c in order]
    folder = Path(out) if out is not None else Path(runs[0]) / "analyze-sweep"
    meta = provenance(
        runs=[str(r) for r in runs], cells={f"{m}-k{k:g}": s for (m, k), s in sources.items()}
    )
    write_summary(folder, rows, {c: cells[c][1] for c in order}, meta)
    write_json_atomic(folder / "analysis_config.json", meta)
    return SweepSummary(rows, {f"{m}-k{k:g}": s for (m, k), s in sources.items()}, folder)
