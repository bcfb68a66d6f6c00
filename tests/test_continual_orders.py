"""Table 5 over task orders, from hand-written suite files."""

from __future__ import annotations

import json
import math

import pytest

from taskneurons.experiments.continual.table5 import (
    ContinualRunError,
    continual_orders_table,
)


def _suite(folder, order, rows, forgetting, n_test=None):
    folder.mkdir()
    header = ["method", *order, "CL", "BWT", "FWT", "stored MB/task"]
    meta = {"config": {"n_test": n_test}}
    data = {"header": header, "rows": rows, "forgetting": forgetting, "meta": meta}
    (folder / "suite.json").write_text(json.dumps(data))
    return folder


def test_cl_per_order_and_means(tmp_path):
    one = _suite(
        tmp_path / "o1",
        ["a", "b"],
        [["seqft", 10, 20, 15.0, -5.0, None, 1.0], ["ncft", 30, 40, 35.0, -1.0, None, 0.5]],
        {"seqft": [None, 50.0], "ncft": [None, 90.0]},
        n_test=100,
    )
    two = _suite(
        tmp_path / "o2",
        ["b", "a", "c"],
        [["ncft", 1, 2, 3, 25.0, -3.0, 2.0, 0.5]],
        {"ncft": [None, 80.0, 70.0]},
    )
    # ncft's matrix on o1, one earlier task: a(0,0) = 40, a(0,1) = 30
    (one / "ncft").mkdir()
    matrix = {"header": ["task", "1:a", "2:b"], "rows": [["a", 40.0, 30.0], ["b", None, 40.0]]}
    (one / "ncft" / "matrix.json").write_text(json.dumps(matrix))
    # a 2-task and a 3-task run with different n_test: not one experiment, laid out on request
    res = continual_orders_table([one, two], tmp_path / "out", mixed=True)
    assert res.header() == [
        "method", "CL o1", "± o1", "BWT o1", "BWT ± o1", "CL o2", "± o2", "BWT o2", "BWT ± o2",
        "mean CL", "mean BWT", "mean FG_N",
    ]  # fmt: skip
    seqft, ncft = res.rows()
    # o1: 1.96 * sqrt(30*70/100 + 40*60/100) / 2; o2 has no n_test
    assert ncft[2] == pytest.approx(1.96 * math.sqrt(21.0 + 24.0) / 2)
    # BWT ± on o1: 1.96 * sqrt(30*70/100 + 40*60/100) / 1 (one earlier task)
    assert ncft[4] == pytest.approx(1.96 * math.sqrt(21.0 + 24.0))
    assert ncft[:2] + [ncft[3], ncft[5], ncft[7]] + ncft[9:] == [
        "ncft", 35.0, -1.0, 25.0, -3.0, 30.0, -2.0, 80.0,
    ]  # fmt: skip
    assert all(math.isnan(ncft[i]) for i in (6, 8))
    assert seqft[:4] == ["seqft", 15.0, seqft[2], -5.0] and math.isnan(seqft[4])
    assert all(math.isnan(v) for v in seqft[5:])
    assert res.orders == [["a", "b"], ["b", "a", "c"]]
    assert "- o2: b -> a -> c" in res.markdown()
    saved = json.loads((tmp_path / "out" / "table5_orders.json").read_text())
    assert saved["rows"][1][:6] == ncft[:6] and saved["rows"][1][9:] == ncft[9:]
    assert [r["folder"] for r in saved["meta"]["runs"]] == [str(one), str(two)]
    assert len(saved["meta"]["runs"][0]["suite_sha256"]) == 64
    # FG_j curves: a row per run and method, stages 2..N of the longest order, nan past a shorter
    assert res.forgetting_header() == ["run", "method", "FG_2", "FG_3"]
    fg = res.forgetting_rows()
    assert fg[0][:3] == ["o1", "seqft", 50.0] and math.isnan(fg[0][3])
    assert fg[2] == ["o2", "ncft", 80.0, 70.0]
    assert "| o2 | ncft |" in res.forgetting_markdown()
    saved_fg = json.loads((tmp_path / "out" / "forgetting_orders.json").read_text())
    assert saved_fg["rows"][2] == ["o2", "ncft", 80.0, 70.0]
    assert (tmp_path / "out" / "forgetting_o1.png").stat().st_size > 0
    assert (tmp_path / "out" / "forgetting_o2.png").stat().st_size > 0


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(ContinualRunError, match="no suite.json"):
        continual_orders_table([tmp_path])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "suite.json").write_text("{")
    with pytest.raises(ContinualRunError, match="not a continual suite file"):
        continual_orders_table([tmp_path / "bad"])
    with pytest.raises(ContinualRunError, match="distinct names"):
        continual_orders_table([tmp_path / "bad", tmp_path / "x" / "bad"])
    with pytest.raises(ContinualRunError, match="no run folders"):
        continual_orders_table([])


def test_an_unfinished_run_over_seeds_is_refused_not_read_as_its_first_seed(tmp_path):
    run = tmp_path / "order2"
    run.mkdir()
    rows = [["ncft", 30, 40, 35.0, -1.0, None, 0.5]]
    for seed in (0, 1):
        _suite(run / f"seed{seed}", ["a", "b"], rows, {"ncft": [None, 90.0]})
    (run / "seed2").mkdir()
    with pytest.raises(ContinualRunError, match="has not finished .only seed0, seed1 have"):
        continual_orders_table([run])
    # one seed's folder is a finished run of its own
    assert continual_orders_table([run / "seed0"]).cl == {"ncft": [35.0]}
