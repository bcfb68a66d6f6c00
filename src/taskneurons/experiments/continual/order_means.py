"""Each method over task orders and seeds: CL, BWT, FWT, held-out change, FG_j, with intervals.

``analyze table5`` prints each order's values and their plain means over orders; for runs over
seeds (``seeds.json`` in every run folder) this gives those means their intervals, over the
same units as the claims (:mod:`.claims`): every (order, seed) run of a method is one unit,
and the mean over the units is given ± t(n-1) sqrt(s²/n + se²)
(:func:`~taskneurons.analysis.seed_pairs.seed_interval`: ``s`` the sd between units, so the
differences between orders count as variation, not only those between seeds; ``se`` the
test-example se of the units, shared by them: every order scores the same test examples;
none for FWT), or the wider interval over clusters when units are not independent: runs of
one seed whose orders begin with the same task (as the claims' clusters, :mod:`.claims`;
:func:`~taskneurons.analysis.continual_claims.clustered_half_width`). Each held-out task's change against zero-shot (the general ability kept) is
treated as FWT is: a difference of two scores on the same test examples, whose test-example
noise is paired and not recorded, so its interval is over the units alone. With the same number of seeds in every order the mean is the table's mean over
orders. FG_j per stage (PAPER.md Figure 4) is averaged over the same units, its band the
t-interval over them (no test-example term), when every order has the same length; orders
that begin with the same j tasks train the same model up to stage j, so there such a unit
counts once (:func:`forgetting_rows`). Only
methods that ran in every folder are shown.

Written as ``order_means.{md,csv,json}``, ``forgetting_over_orders.{md,csv,json}`` and
``forgetting_over_orders.png``.

Example:
    >>> rows = order_mean_rows(["runs/order1", "runs/order2"])  # doctest: +SKIP
    >>> rows[0][:3]  # doctest: +SKIP
    ['seqft', 'CL', 59.8]
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskneurons.analysis.continual_claims import clustered_half_width
from taskneurons.analysis.seed_pairs import seed_interval
from taskneurons.experiments.continual.claims import (
    SEEDS_FILE,
    per_seed,
    recorded_order,
    seed_clusters,
)
from taskneurons.experiments.continual.table5 import ContinualRunError, read_suite
from taskneurons.report.plots import line_plot
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import read_record

#: each seed's held-out table (:mod:`.suite`)
HELD_FILE = "held_out.json"
MEANS_HEADER = ["method", "metric", "mean", "±", "low", "high", "units", "clusters",
                "between-unit sd", "test se"]  # fmt: skip
FG_HEADER = ["method", "stage j", "FG_j mean (%)", "low", "high", "units"]
FG_TITLE = "FG_j over distinct (first j tasks, seed) units (band: 95 % t)"
MEANS_TITLE = (
    "CL, BWT, FWT and held-out change over (order, seed) units: mean ± the wider of "
    "t(n-1) sqrt(s²/n + se²) and t(C-1) sqrt(se_C² + se²) over clusters (runs of one seed "
    "whose orders begin alike; se_C cluster-robust) (s: between units, orders included; se: "
    "test examples, shared; none for FWT and the held-out change, paired differences)"
)


def _common(methods: list[list[str]]) -> list[str]:
    """The methods every folder ran (in the first folder's order)."""
    return [m for m in dict.fromkeys(methods[0]) if all(m in other for other in methods[1:])]


Units = dict[tuple[str, str], tuple[list[float], list[float], list[tuple]]]


def _units(folder: Path, n: int) -> Units:
    """``(method, metric) ->`` (its value on each seed, their test-example se, their clusters
    (:func:`~.claims.seed_clusters`; ``n``: the folder's place)): CL, BWT, FWT from
    ``seeds.json``, then ``"<task> change"`` (after the last task against zero-shot; no
    test-example se, see the module docstring) from each seed's ``held_out.json``."""
    if not (folder / SEEDS_FILE).is_file():
        raise ContinualRunError(f"{folder}: no {SEEDS_FILE}; means over units need runs with seeds")
    out: Units = {}
    table = per_seed(folder)
    cluster_of = seed_clusters(folder, n, table)
    for key, (per, se) in table.items():
        ses = [0.0 if math.isnan(se) else se] * len(per)
        out[key] = (list(per.values()), ses, [cluster_of[c] for c in per])
    meta = read_record(folder / SEEDS_FILE, "seed table", ContinualRunError)["meta"]
    for s in meta["seeds"]:
        path = folder / f"seed{s}" / HELD_FILE
        rows = (
            read_record(path, "held-out table", ContinualRunError)["rows"] if path.is_file() else []
        )
        label = cluster_of.get(f"seed {s}", (f"folder {n}", f"seed {s}"))
        for method, task, _, _, change in rows:
            values, ses, labels = out.setdefault((method, f"{task} change"), ([], [], []))
            values.append(float(change))
            ses.append(0.0)
            labels.append(label)
    return out


def order_mean_rows(folders: Sequence[str | os.PathLike]) -> list[list[Any]]:
    """A row per method and metric that every folder has (CL, BWT, FWT, then each held-out
    task's change against zero-shot): :data:`MEANS_HEADER`.

    Raises:
        ContinualRunError: a folder without ``seeds.json`` (a run without seeds).
    """
    units = [_units(Path(f), n) for n, f in enumerate(folders)]
    rows = []
    for key in [k for k in units[0] if all(k in u for u in units[1:])]:
        values, ses, labels = ([x for u in units for x in u[key][i]] for i in range(3))
        rows.append([*key, *_interval(values, ses, labels)])
    return rows


def _interval(values: list[float], ses: list[float], labels: list[tuple]) -> list[float]:
    """mean, ±, low, high, units, clusters, between-unit sd, test se (``nan`` but the counts
    when a unit has no value, or with fewer than 2 units); ± the wider of the t-interval over
    units and the one over clusters."""
    counts = [len(values), len(set(labels))]
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return [math.nan] * 4 + counts + [math.nan, math.nan]
    c = seed_interval(values, ses)
    half = max(c["half_width"], clustered_half_width(values, labels, c["within_se"]))
    return [c["mean"], half, c["mean"] - half, c["mean"] + half, *counts, c["between_sd"],
            c["within_se"]]  # fmt: skip


def _seed_curves(folder: Path) -> dict[str, list[tuple[tuple, list[float]]]]:
    """method -> ``((task order or None, seed), FG_j per stage)`` of every seed of the run in
    ``folder`` (the order from the seed's recorded config)."""
    seeds = read_record(folder / SEEDS_FILE, "seed table", ContinualRunError)["meta"]["seeds"]
    out: dict[str, list[tuple[tuple, list[float]]]] = {}
    for s in seeds:
        suite = read_suite(folder / f"seed{s}")
        key = (recorded_order(suite), s)
        for method, curve in suite["forgetting"].items():
            out.setdefault(method, []).append((key, [math.nan if v is None else v for v in curve]))
    return out


def forgetting_rows(folders: Sequence[str | os.PathLike]) -> list[list[Any]]:
    """A row per method and stage j = 2..N: :data:`FG_HEADER`; ``[]`` when the orders differ
    in length (their stages are not comparable).

    FG_j depends only on the first j tasks of an order: two orders that begin alike (orders 1
    and 2 of the standard benchmark share dbpedia -> amazon) train the same model up to there
    under the same seed, so a unit of stage j is a distinct (first j tasks, seed, value); the
    same value of the same prefix and seed in two orders counts once (``units``)."""
    per_order = [_seed_curves(Path(f)) for f in folders]
    lengths = {len(c) for curves in per_order for runs in curves.values() for _k, c in runs}
    if len(lengths) != 1:
        return []
    rows = []
    for method in _common([list(curves) for curves in per_order]):
        units = [u for curves in per_order for u in curves[method]]
        for j in range(1, len(units[0][1])):  # FG_1 is undefined
            col = np.array(_distinct(units, j), dtype=float)  # [distinct units]
            if col.size < 2 or not np.all(np.isfinite(col)):
                rows.append([method, j + 1, math.nan, math.nan, math.nan, int(col.size)])
                continue
            c = seed_interval(col)
            rows.append([method, j + 1, c["mean"], c["lo"], c["hi"], int(col.size)])
    return rows


def _distinct(units: list[tuple[tuple, list[float]]], j: int) -> list[float]:
    """FG at stage index ``j`` of every unit, once per (first j + 1 tasks, seed, value); a unit
    whose order is not recorded counts on its own."""
    seen: dict[tuple, float] = {}
    for n, ((order, seed), curve) in enumerate(units):
        prefix = (n,) if order is None else order[: j + 1]
        seen.setdefault((prefix, seed, curve[j]), curve[j])
    return list(seen.values())


def order_means_markdown(rows: list[list[Any]], fg_rows: list[list[Any]]) -> str:
    """Both tables, each under its title."""
    text = f"{MEANS_TITLE}\n\n" + markdown_table(MEANS_HEADER, rows, digits=2)
    if fg_rows:
        text += f"\n\n{FG_TITLE}\n\n"
        text += markdown_table(FG_HEADER, fg_rows)
    return text


def write_order_means(
    rows: list[list[Any]], fg_rows: list[list[Any]], out: str | os.PathLike, meta: dict
) -> None:
    """``order_means.*``, and ``forgetting_over_orders.*`` with its plot when ``fg_rows``."""
    out = Path(out)
    write_table(out / "order_means", MEANS_HEADER, rows, meta, digits=2, title=MEANS_TITLE)
    if not fg_rows:
        return
    write_table(out / "forgetting_over_orders", FG_HEADER, fg_rows, meta, title=FG_TITLE)
    stages = sorted({r[1] for r in fg_rows})
    means = {r[0]: [] for r in fg_rows}
    bands = {r[0]: [] for r in fg_rows}
    for method, _, mean, lo, hi, _ in fg_rows:
        means[method].append(mean)
        bands[method].append((lo, hi))
    line_plot(
        stages, means, out / "forgetting_over_orders.png", intervals=bands, zero_line=False,
        title="FG_j over orders and seeds (band: 95 % t-interval)", xlabel="stage j",
        ylabel="FG_j (%)",
    )  # fmt: skip
