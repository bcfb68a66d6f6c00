"""The paper's continual claims over finished runs with seeds: ``claims.{md,csv,json}``.

Reads each run folder's ``seeds.json`` (:mod:`.seeds`: every method's CL and BWT per seed,
with its test-example se) and decides :data:`~taskneurons.analysis.continual_claims.
PAPER_CLAIMS` whose two methods ran in every folder (:mod:`taskneurons.analysis.
continual_claims`: one statistic per claim over the (order, seed) units, Holm across the
claims, a verdict by a rule fixed before the runs).

Example:
    >>> rows = order_claims(["results/continual-fair-order1-smollm2-cpu"])  # doctest: +SKIP
    >>> rows[0]["claim"].text, rows[0]["verdict"]  # doctest: +SKIP
    ('NCFT forgets less than SeqFT', 'undecided')
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskneurons.analysis.continual_claims import PAPER_CLAIMS, claim_statistic, decide_claims
from taskneurons.experiments.continual.table5 import ContinualRunError
from taskneurons.report.tables import write_table
from taskneurons.store.run_folder import read_record

SEEDS_FILE = "seeds.json"
HEADER = ["claim", "metric", "a - b", "mean", "low", "high", "units", "between-unit sd",
          "test se", "± (units)", "p (sign flip)", "p (Holm)", "clusters", "± (clusters)",
          "p (clusters)", "p (clusters, Holm)", "verdict"]  # fmt: skip


def per_seed(folder: Path) -> dict[tuple[str, str], tuple[dict[str, float], float]]:
    """``(method, metric) -> ({seed column: value}, test-example se)`` from ``seeds.json``."""
    table = read_record(folder / SEEDS_FILE, "seed table", ContinualRunError)
    header = table["header"]
    seeds = [i for i, h in enumerate(header) if str(h).startswith("seed ")]
    se_col = header.index("within-seed se")
    out = {}
    for row in table["rows"]:
        values = {header[i]: row[i] for i in seeds if row[i] is not None}
        se = math.nan if row[se_col] is None else float(row[se_col])
        out[(row[0], row[1])] = (values, se)
    return out


def recorded_order(suite: dict[str, Any]) -> tuple[str, ...] | None:
    """The task order a seed's ``suite.json`` (read) records in its config, else ``None``."""
    order = suite.get("meta", {}).get("config", {}).get("order")
    return None if order is None else tuple(order)


def run_order(folder: Path, seed_column: str) -> tuple[str, ...] | None:
    """The task order the seed of ``seed_column`` (``"seed 0"``) of the run in ``folder`` ran,
    ``None`` when not recorded (:func:`recorded_order`)."""
    path = folder / seed_column.replace(" ", "") / "suite.json"
    if not path.is_file():
        return None
    return recorded_order(read_record(path, "suite", ContinualRunError))


def order_claims(folders: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every paper claim whose methods ran in all ``folders`` (runs with seeds), decided; units
    of one seed whose orders begin with the same task form one cluster (``p_clusters``,
    ``half_width_clusters``).

    Raises:
        ContinualRunError: a folder without ``seeds.json`` (a run without seeds).
    """
    tables = []
    for f in folders:
        if not (Path(f) / SEEDS_FILE).is_file():
            raise ContinualRunError(f"{f}: no {SEEDS_FILE}; the claims need runs with seeds")
        tables.append(per_seed(Path(f)))
    cluster_of = [seed_clusters(Path(f), n, tables[n]) for n, f in enumerate(folders)]
    found = {}
    for claim in PAPER_CLAIMS:
        keys = [(claim.a, claim.metric), (claim.b, claim.metric)]
        if not all(k in t for t in tables for k in keys):
            continue
        diffs, ses, clusters = [], [], []
        for n, t in enumerate(tables):
            (va, sa), (vb, sb) = t[keys[0]], t[keys[1]]
            seeds = [s for s in va if s in vb]
            diffs.append([va[s] - vb[s] for s in seeds])
            ses.append(math.sqrt(sa**2 + sb**2))
            clusters += [cluster_of[n][s] for s in seeds]
        found[claim] = claim_statistic(diffs, ses, clusters)
    return decide_claims(found)


def seed_clusters(folder: Path, n: int, table: dict) -> dict[str, tuple]:
    """Seed column -> ``(first task, seed column)``: the runs that train the same model first;
    ``(folder n, seed column)`` when the order is not recorded (each order read once)."""
    columns = dict.fromkeys(s for values, _se in table.values() for s in values)
    out = {}
    for column in columns:
        order = run_order(folder, column)
        out[column] = (order[0] if order else f"folder {n}", column)
    return out


def write_claims(rows: list[dict[str, Any]], out: str | os.PathLike, folders: Sequence) -> None:
    """``claims.{md,csv,json}`` in ``out``."""
    table = [
        [r["claim"].text, r["claim"].metric, f"{r['claim'].a} - {r['claim'].b}", r["mean"],
         r["lo"], r["hi"], r["n_units"], r["between_sd"], r["test_se"], r["half_width_units"],
         r["p"], r["p_holm"], r["n_clusters"], r["half_width_clusters"], r["p_clusters"],
         r["p_holm_clusters"], r["verdict"]]
        for r in rows
    ]  # fmt: skip
    title = (
        "The paper's continual claims over (order, seed) units: mean ± the wider of "
        "t(n-1) sqrt(s²/n + se²) over units and t(C-1) sqrt(se_C² + se²) over clusters (runs "
        "of one seed whose orders begin with the same task; se_C cluster-robust), exact "
        "sign-flip p over units and over clusters (a cluster flips together), Holm across the "
        "claims; held = interval above 0 and both Holm p < 0.05, not held = interval below 0, "
        "else undecided"
    )
    meta = {"runs": [str(f) for f in folders]}
    write_table(Path(out) / "claims", HEADER, table, meta, digits=4, title=title)
