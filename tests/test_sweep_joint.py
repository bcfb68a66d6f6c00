"""A sweep's grid as one test: joint rows per scope and Holm-adjusted cell p-values."""

import json
import math

import numpy as np

from taskneurons.experiments.specificity.sweep_joint import holm_rows, joint_rows, write_joint


def _spec(effects, p):
    return {"effects": np.asarray(effects, dtype=float).tolist(), "p_value": p}


def _planted(n_tasks=4, size=1.0):
    return size * np.eye(n_tasks)


def test_joint_rows_scopes_and_floor():
    specs = {
        ("topk", 1.0): {"score": _spec(_planted(), 0.01), "nll": _spec(_planted(), 0.02)},
        ("topk", 5.0): {"score": _spec(_planted(), 0.04), "nll": None},
        ("specific", 1.0): {"score": _spec(_planted(), 0.03)},
    }
    rows = joint_rows(specs, n_permutations=2000)
    scopes = [(r[0], r[1], r[2]) for r in rows]
    # all cells (acc: 3, NLL: 1), then topk's cells (acc: 2, NLL: 1); 'specific' has one
    # cell: no scope of its own
    assert scopes == [
        ("all cells", "acc", 3), ("all cells", "NLL", 1), ("topk", "acc", 2), ("topk", "NLL", 1)
    ]  # fmt: skip
    for row in rows:
        assert row[6] == 1 / math.factorial(4)
        # a planted diagonal in every cell: no relabelling reaches it, p sits at the floor
        assert row[4] == row[6] and row[5] == row[6]
        # mean double-centred diagonal of the identity: 1 - 1/4 per diagonal cell
        assert abs(row[3] - 0.75) < 1e-12


def test_holm_rows_by_hand():
    specs = {
        ("a", 1.0): {"score": _spec(_planted(2), 0.01), "nll": _spec(_planted(2), 0.5)},
        ("a", 2.0): {"score": _spec(_planted(2), 0.04), "nll": None},
        ("b", 1.0): {"score": _spec(_planted(2), 0.03), "nll": _spec(_planted(2), 0.2)},
    }
    rows = holm_rows(specs)
    # acc: sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.04, 0.06) = 0.06
    assert [r[3] for r in rows] == [0.03, 0.06, 0.06]
    # NLL over the two cells that have it: 0.2 * 2 = 0.4, max(0.5, 0.4) = 0.5
    assert rows[0][5] == 0.5 and rows[1][4:] == [None, None] and abs(rows[2][5] - 0.4) < 1e-12


def test_write_joint_files(tmp_path):
    specs = {("topk", 1.0): {"score": _spec(_planted(3), 1 / 6)}}
    write_joint(tmp_path, specs)
    for stem in ("sweep_joint", "sweep_holm"):
        for ext in ("md", "csv", "json"):
            assert (tmp_path / f"{stem}.{ext}").is_file()
    data = json.loads((tmp_path / "sweep_joint.json").read_text())
    # one cell of a 3-task identity: statistic 1 - 1/3, p at the floor 1/3! = 1/6
    assert data["rows"] == [["all cells", "acc", 1, 2 / 3, 1 / 6, 1 / 6, 1 / 6]]
