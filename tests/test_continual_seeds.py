"""Seeds of continual runs: what a seed changes (and not), intervals and paired tests by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from taskneurons.analysis.seed_pairs import paired_tests, seed_interval
from taskneurons.experiments.continual.continual_stage import ContinualSuiteConfig
from taskneurons.experiments.continual.seeds import run_continual
from taskneurons.experiments.continual.suite import continual_suite
from taskneurons.experiments.continual.table5 import continual_orders_table
from taskneurons.experiments.run_context import RunContext
from test_continual import EVAL, TRAIN, animal_task, mood_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _suite(**kw) -> ContinualSuiteConfig:
    fields = dict(train=TRAIN, single_train=TRAIN.replace(method="full"), eval=EVAL)
    return ContinualSuiteConfig(
        methods=["seqft", "ncft"], n_train=8, n_test=6, method={"k": 20.0}, **fields, **kw
    )


def _record(folder) -> dict:
    return json.loads((folder / "continual_config.json").read_text())


def test_seeds_change_what_they_should_and_nothing_else(tok, tmp_path):
    tasks = [mood_task(), animal_task()]
    suite = _suite(seeds=[0, 1])
    a, b = suite.for_seed(0).to_dict(), suite.for_seed(1).to_dict()
    diff = {k for k in a if a[k] != b[k]}
    assert diff == {"train", "method"}  # data seed, n_train, n_test, eval: unchanged
    assert {k for k in a["train"] if a["train"][k] != b["train"][k]} == {"seed"}
    assert b["method"]["attribution"]["seed"] == 1 and a["seed"] == b["seed"] == 0
    res = run_continual(RunContext.of(tiny_model("llama"), tok, tasks, progress=False), suite,
                        tmp_path / "s")  # fmt: skip
    for label in ("seqft", "ncft"):
        r0, r1 = (_record(tmp_path / "s" / f"seed{s}" / label) for s in (0, 1))
        assert r0["test_hash"] == r1["test_hash"] and r0["train_hash"] == r1["train_hash"]
        assert (r0["config"]["train"]["seed"], r1["config"]["train"]["seed"]) == (0, 1)
        losses = [
            [st["final_loss"] for st in _result(tmp_path / "s" / f"seed{s}" / label)["stages"]]
            for s in (0, 1)
        ]
        assert losses[0] != losses[1], f"{label}: the seed changed no training"
        m = [np.array(_result(tmp_path / "s" / f"seed{s}" / label)["matrix"]) for s in (0, 1)]
        np.testing.assert_allclose(res.results[label].matrix, (m[0] + m[1]) / 2)
    # the same seed again, alone: bit-identical matrix and training
    continual_suite(
        RunContext.of(tiny_model("llama"), tok, tasks, progress=False), suite.for_seed(1),
        tmp_path / "again",
    )  # fmt: skip
    for label in ("seqft", "ncft"):
        first = _result(tmp_path / "s" / "seed1" / label)
        second = _result(tmp_path / "again" / label)
        assert first["matrix"] == second["matrix"]
        assert _no_wall(first["stages"]) == _no_wall(second["stages"])
    seeds = json.loads((tmp_path / "s" / "seeds.json").read_text())
    assert [row[:2] for row in seeds["rows"]][:3] == [["seqft", "CL"], ["seqft", "BWT"],
                                                      ["seqft", "FWT"]]  # fmt: skip
    pairs = json.loads((tmp_path / "s" / "seed_pairs.json").read_text())
    assert [row[:2] for row in pairs["rows"]] == [["CL", "seqft - ncft"], ["BWT", "seqft - ncft"]]
    assert (tmp_path / "s" / "forgetting_seeds.png").is_file()
    assert (tmp_path / "s" / "suite.json").is_file()  # the mean suite, for analyze table5
    table = continual_orders_table([tmp_path / "s"])
    for row in seeds["rows"]:
        if row[1] in ("CL", "BWT"):
            pm = (table.cl_pm if row[1] == "CL" else table.bwt_pm)[row[0]][0]
            assert pm == pytest.approx(row[3])  # the interval over seeds and test examples
    assert table.cl["ncft"][0] == pytest.approx(res.results["ncft"].metrics["cl"])


def _result(folder) -> dict:
    return json.loads((folder / "result.json").read_text())


def _no_wall(stages):
    return [{k: v for k, v in s.items() if k != "wall_s"} for s in stages]


def test_seed_interval_and_paired_tests_by_hand():
    t2 = 4.302652729911275  # Student t, 2 degrees of freedom, 97.5 %
    c = seed_interval([60.0, 62.0, 64.0], [1.0, 1.0, 1.0])
    assert c["mean"] == 62.0 and c["between_sd"] == pytest.approx(2.0)
    assert c["half_width"] == pytest.approx(t2 * math.sqrt(4.0 / 3 + 1.0))
    assert seed_interval([60.0, 62.0, 64.0])["half_width"] == pytest.approx(t2 * 2 / math.sqrt(3))
    rows = paired_tests({"a": [60.0, 62.0, 64.0], "b": [50.0, 53.0, 55.0], "c": [60.0, 62.0, 64.0]})
    assert [r["pair"] for r in rows] == ["a - b", "a - c", "b - c"]
    # a - b: d = 10, 9, 9; t = mean / (sd / sqrt 3) = 28; df 2: p = 1 - t / sqrt(t^2 + 2)
    assert rows[0]["t"] == pytest.approx(28.0)
    p_ab = 1 - 28 / math.sqrt(28**2 + 2)
    assert rows[0]["p"] == pytest.approx(p_ab)
    assert math.isnan(rows[1]["p"])  # a = c on every seed: no test
    # b - c: d = -10, -9, -9: the same p; Holm over 3 (the untested pair as p = 1)
    assert rows[0]["p_holm"] == pytest.approx(3 * p_ab) and rows[2]["p_holm"] == pytest.approx(
        3 * p_ab
    )


def test_seed_means_of_routing_and_held_out_by_hand(tmp_path):
    from taskneurons.experiments.continual.continual_result import ContinualResult
    from taskneurons.experiments.continual.seeds import _mean_result

    def result(acc, w, held):
        routing = [{"a": {"n": 4, "weights": {"a": w}, "routing_accuracy": acc}}]
        return ContinualResult(
            "epi", None, ["a"], np.array([[acc]]), {"a": 80.0}, {"a": 40.0},
            {"cl": acc, "bwt": math.nan, "fwt": math.nan, "forgetting": [math.nan]}, [], 0,
            None, tmp_path, routing=routing,
            held_out={"c": {"score": held, "zero_shot": 50.0, "change": held - 50.0}},
        )  # fmt: skip

    mean = _mean_result([result(100.0, 0.8, 60.0), result(50.0, 0.4, 40.0)], tmp_path)
    assert mean.routing == [{"a": {"n": 4, "weights": {"a": pytest.approx(0.6)},
                                   "routing_accuracy": 75.0}}]  # fmt: skip
    assert mean.held_out == {"c": {"score": 50.0, "zero_shot": 50.0, "change": 0.0}}
    assert mean.metrics["cl"] == 75.0 and mean.matrix.tolist() == [[75.0]]
