"""A sweep's grid read as one test: the joint permutation test and Holm-adjusted cell p-values.

The cells of a sweep (selection x k) share one model, one set of relevance scores and the same
test examples, so their p-values are not independent and counting how many reach the floor
``1/T!`` is not a test. Per readout this writes ``sweep_joint.{md,csv,json}``:

* one **joint test** per scope — every cell together, then each selection's cells over k —
  that relabels the tasks once for all cells of the scope
  (:func:`~taskneurons.analysis.grid_test.joint_permutation_test`), with the grid statistic in
  the readout's units (``raw``) and its p, the p of the z-scaled statistic, and the floor
  ``1/T!`` that no number of cells can go below;
* ``sweep_holm.{md,csv,json}``: each cell's own p-value and its Holm adjustment over all cells
  of the readout, for reading cells one by one.

Example:
    >>> import numpy as np
    >>> specs = {("topk", 1.0): {"score": {"effects": np.eye(4).tolist(), "p_value": 1 / 24}}}
    >>> joint_rows(specs)[0][:3]
    ['all cells', 'acc', 1]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from taskneurons.analysis.grid_test import holm, joint_permutation_test
from taskneurons.report.tables import write_table

JOINT_HEADER = ["scope", "readout", "cells", "grid statistic", "p", "p (z-scaled)", "floor"]
HOLM_HEADER = ["selection", "k %", "p (acc)", "Holm p (acc)", "p (NLL)", "Holm p (NLL)"]
#: readout key -> its column label
LABELS = {"score": "acc", "nll": "NLL"}

#: ``(selection, k) -> readout -> Specificity.to_dict()``
GridSpecs = Mapping[tuple[str, float], Mapping[str, Mapping | None]]


def _scopes(specs: GridSpecs) -> list[tuple[str, list[tuple[str, float]]]]:
    """``("all cells", every cell)``, then each selection with two or more cells."""
    cells = list(specs)
    scopes = [("all cells", cells)]
    for method in dict.fromkeys(m for m, _ in cells):
        mine = [c for c in cells if c[0] == method]
        if len(mine) > 1:
            scopes.append((method, mine))
    return scopes


def joint_rows(specs: GridSpecs, n_permutations: int = 10_000, seed: int = 0) -> list[list]:
    """Rows of :data:`JOINT_HEADER`: a joint test per scope and readout (cells without that
    readout left out)."""
    rows = []
    for scope, cells in _scopes(specs):
        for readout, label in LABELS.items():
            grid = [specs[c][readout]["effects"] for c in cells if specs[c].get(readout)]
            if not grid:
                continue
            raw = joint_permutation_test(grid, "raw", n_permutations, seed)
            z = joint_permutation_test(grid, "z", n_permutations, seed)
            rows.append([scope, label, len(grid), raw.statistic, raw.p_value, z.p_value, raw.floor])
    return rows


def holm_rows(specs: GridSpecs) -> list[list]:
    """Rows of :data:`HOLM_HEADER`: each cell's p and its Holm adjustment over the cells."""
    cells = list(specs)
    adjusted = {}
    for readout in LABELS:
        have = [c for c in cells if specs[c].get(readout)]
        ps = [float(specs[c][readout]["p_value"]) for c in have]
        adjusted[readout] = dict(zip(have, holm(ps).tolist(), strict=True)) if ps else {}
    rows = []
    for c in cells:
        row: list = [c[0], c[1]]
        for readout in LABELS:
            spec = specs[c].get(readout)
            row += [spec["p_value"], adjusted[readout][c]] if spec else [None, None]
        rows.append(row)
    return rows


def write_joint(out: Path, specs: GridSpecs, meta: dict | None = None) -> list[list]:
    """Write ``sweep_joint.*`` and ``sweep_holm.*`` into ``out``; returns the joint rows."""
    rows = joint_rows(specs)
    write_table(out / "sweep_joint", JOINT_HEADER, rows, meta=meta, digits=4,
                title="One joint permutation test per scope (tasks relabelled once for all "
                "cells)")  # fmt: skip
    write_table(out / "sweep_holm", HOLM_HEADER, holm_rows(specs), digits=4,
                title="Each cell's p-value, Holm-adjusted over the cells")  # fmt: skip
    return rows
