"""The paper's continual claims over orders and seeds: hand-computed statistics and verdicts,
and the claims read from the seed tables the continual stage writes."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from taskneurons.analysis.continual_claims import (
    PAPER_CLAIMS,
    claim_statistic,
    clustered_se,
    decide_claims,
    sign_flip_p,
    verdict,
)
from taskneurons.experiments.continual.claims import order_claims, write_claims
from taskneurons.experiments.continual.order_means import (
    forgetting_rows,
    order_mean_rows,
    write_order_means,
)
from taskneurons.experiments.continual.seeds import write_seed_tables
from taskneurons.experiments.continual.table5 import ContinualRunError


def test_claim_statistic_by_hand():
    # units 1, 2, 3 | 2, 4, 6: mean 3, s² = 16/5, test se mean(0.5, 1.0) = 0.75
    r = claim_statistic([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]], [0.5, 1.0])
    assert r["mean"] == 3.0 and r["n_units"] == 6
    assert r["between_sd"] == pytest.approx(math.sqrt(3.2))
    assert r["half_width"] == pytest.approx(2.570582 * math.sqrt(3.2 / 6 + 0.75**2), rel=1e-6)
    assert r["p"] == pytest.approx(2 / 64)  # only all-plus and all-minus reach |mean| 3
    assert claim_statistic([[1.0, -1.0]], [math.nan])["test_se"] == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        claim_statistic([[1.0]], [0.0])


def test_clustered_interval_by_hand():
    # 1, 3 | 8: mean 4, residual sums -4 and 4 -> CR1 se sqrt(2/1 * 32) / 3 = 8/3
    assert clustered_se([1.0, 3.0, 8.0], ["a", "a", "b"]) == pytest.approx(8 / 3)
    # every unit its own cluster: s / sqrt(n); s² of 1, 3, 8 is 13
    assert clustered_se([1.0, 3.0, 8.0], [0, 1, 2]) == pytest.approx(math.sqrt(13 / 3))
    assert clustered_se([1.0, 3.0], ["a", "a"]) == math.inf
    r = claim_statistic([[1.0, 3.0, 8.0]], [0.5], clusters=["a", "a", "b"])
    # over units t(2) sqrt(13/3 + 0.25); over 2 clusters t(1) = 12.7062 sqrt(64/9 + 0.25)
    assert r["half_width_units"] == pytest.approx(4.302653 * math.sqrt(13 / 3 + 0.25), rel=1e-6)
    assert r["half_width_clusters"] == pytest.approx(12.706205 * math.sqrt(64 / 9 + 0.25), rel=1e-6)
    assert r["half_width"] == r["half_width_clusters"] and r["lo"] == 4.0 - r["half_width"]
    alone = claim_statistic([[1.0, 3.0, 8.0]], [0.5])  # independent units: the two agree
    assert alone["half_width_clusters"] == pytest.approx(alone["half_width_units"])
    one = claim_statistic([[5.0, 6.0]], [0.0], clusters=["a", "a"])  # one cluster: no interval
    assert one["hi"] == math.inf and verdict(one["lo"], one["hi"], 0.0) == "undecided"


def test_sign_flip_by_hand_and_beyond_the_exact_limit():
    # 1, 2, -3: sums of the 8 sign patterns: ±6, ±0, ±2, ±4 -> |mean| >= 0 always
    assert sign_flip_p([1.0, 2.0, -3.0]) == 1.0
    # 1, -1, 4 (sum 4): the sums of the 8 patterns are ±4, ±6, ±2, ±4: 6 of 8 reach |4|
    assert sign_flip_p([1.0, -1.0, 4.0]) == pytest.approx(6 / 8)
    assert sign_flip_p([1.0, 1.0, 1.0, 5.0]) == pytest.approx(2 / 16)  # one flip gives 6 < 8
    many = [1.0] * 20  # random patterns: only all-equal ones reach 1; about 2 / 2^20
    assert sign_flip_p(many) < 1e-3


def test_verdicts_and_holm_across_claims():
    assert verdict(0.5, 3.0, 0.049) == "held"
    assert verdict(0.5, 3.0, 0.051) == "undecided"
    assert verdict(-3.0, -0.5, 0.9) == "not held"
    a, b = PAPER_CLAIMS[:2]
    rows = decide_claims(
        {a: {"p": 0.04, "p_clusters": 0.04, "lo": 1.0, "hi": 2.0},
         b: {"p": 0.01, "p_clusters": 0.01, "lo": 1.0, "hi": 2.0}}
    )  # fmt: skip
    assert [r["p_holm"] for r in rows] == pytest.approx([0.04, 0.02])
    assert [r["verdict"] for r in rows] == ["held", "held"]
    # the clusters' Holm p decides when larger: 0.02 x 2 = 0.04 for a, 0.06 x 1 for b
    rows = decide_claims(
        {a: {"p": 0.04, "p_clusters": 0.02, "lo": 1.0, "hi": 2.0},
         b: {"p": 0.01, "p_clusters": 0.06, "lo": 1.0, "hi": 2.0}}
    )  # fmt: skip
    assert [r["p_holm_clusters"] for r in rows] == pytest.approx([0.04, 0.06])
    assert [r["verdict"] for r in rows] == ["held", "undecided"]


def test_sign_flip_over_clusters_by_hand():
    # 1, 2 | 3 (clusters a, a | b): cluster sums 3, 3; patterns ±6, ±0 -> |mean| 2 in 2 of 4
    assert sign_flip_p([1.0, 2.0, 3.0], clusters=["a", "a", "b"]) == pytest.approx(2 / 4)
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)  # units alone
    # 1 | -1, 4 (a | b, b): sums 1, 3; patterns ±4, ±2 -> |4| in 2 of 4
    assert sign_flip_p([1.0, -1.0, 4.0], clusters=["a", "b", "b"]) == pytest.approx(2 / 4)
    r = claim_statistic([[1.0, 2.0], [3.0]], [0.0, 0.0], clusters=["a", "a", "b"])
    assert (r["n_clusters"], r["p_clusters"], r["p"]) == (2, pytest.approx(0.5), 0.25)
    assert claim_statistic([[1.0, 2.0]], [0.0])["p_clusters"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cluster labels"):
        claim_statistic([[1.0, 2.0]], [0.0], clusters=["a"])


def _suite(cl: dict[str, float], bwt: dict[str, float]) -> SimpleNamespace:
    results = {}
    for m in cl:
        matrix = np.array([[60.0, 50.0], [np.nan, 70.0]])
        metrics = {"cl": cl[m], "bwt": bwt[m], "fwt": math.nan, "forgetting": [math.nan, 90.0]}
        results[m] = SimpleNamespace(metrics=metrics, matrix=matrix, order=["x", "y"])
    return SimpleNamespace(results=results)


def test_claims_from_the_seed_tables_of_two_orders(tmp_path):
    """Two orders x 2 seeds from the stage's own seed-table writer: NCFT - SeqFT in BWT is
    +10, +12 | +8, +14 (mean 11); claims whose methods did not run are left out."""
    folders = []
    for o, (d0, d1) in enumerate([(10.0, 12.0), (8.0, 14.0)]):
        per_seed = {
            s: _suite({"seqft": 40.0, "ncft": 50.0 + s}, {"seqft": -20.0, "ncft": -20.0 + d})
            for s, d in ((0, d0), (1, d1))
        }
        folder = tmp_path / f"order{o}"
        folder.mkdir()
        write_seed_tables(per_seed, 100, folder)
        folders.append(folder)
    rows = order_claims(folders)
    assert [r["claim"].text for r in rows] == [
        "NCFT forgets less than SeqFT",
        "NCFT scores higher than SeqFT after the last task",
    ]
    bwt, cl = rows
    assert bwt["mean"] == pytest.approx(11.0) and bwt["n_units"] == 4
    assert bwt["p"] == pytest.approx(2 / 16)  # every unit positive: the floor at 4 units
    assert cl["mean"] == pytest.approx(10.5)  # 10, 11 in each order
    assert bwt["p_holm"] == pytest.approx(2 / 16 * 2) and bwt["verdict"] == "undecided"
    write_claims(rows, tmp_path / "out", folders)
    assert "NCFT forgets less than SeqFT" in (tmp_path / "out" / "claims.md").read_text()
    (tmp_path / "bare").mkdir()
    with pytest.raises(ContinualRunError, match="seeds"):
        order_claims([tmp_path / "bare"])


def test_means_over_orders_and_seeds_by_hand(tmp_path):
    """Two orders x 2 seeds: CL of NCFT is 50, 51 | 50, 51 (4 units); its interval is
    t(3) sqrt(s²/4 + se²) with se the test-example se the seed table recorded; FG_2 per unit
    from each seed's suite.json: 80, 82 | 84, 90; SeqFT (absent from order 1) is left out."""
    folders = []
    for o in range(2):
        methods = ("seqft", "ncft") if o else ("ncft",)
        per_seed = {
            s: _suite({m: 50.0 + s for m in methods}, {m: -10.0 - s for m in methods})
            for s in (0, 1)
        }
        folder = tmp_path / f"order{o}"
        folder.mkdir()
        write_seed_tables(per_seed, 100, folder)
        for s, fg in zip((0, 1), [(80.0, 82.0), (84.0, 90.0)][o], strict=True):
            suite = {"header": ["method", "x", "y", "CL", "BWT"], "rows": [],
                     "forgetting": {m: [None, fg] for m in methods}}  # fmt: skip
            (folder / f"seed{s}").mkdir()
            (folder / f"seed{s}" / "suite.json").write_text(json.dumps(suite))
            held = [["ncft", "z", 60.0 + 10 * o, 50.0, 10.0 + 10 * o + s]]  # change 10, 11 | 20, 21
            (folder / f"seed{s}" / "held_out.json").write_text(json.dumps({"rows": held}))
        folders.append(folder)
    rows = order_mean_rows(folders)
    assert [r[:2] for r in rows] == [
        ["ncft", "CL"], ["ncft", "BWT"], ["ncft", "FWT"], ["ncft", "z change"],
    ]  # fmt: skip
    # held-out change: a paired difference, its interval over the units alone
    held_sd = np.std([10.0, 11.0, 20.0, 21.0], ddof=1)
    assert rows[3][2:4] == [pytest.approx(15.5), pytest.approx(stats.t.ppf(0.975, 3) * held_sd / 2)]
    assert rows[3][-1] == 0.0
    seeds = json.loads((folders[0] / "seeds.json").read_text())
    se = next(r[7] for r in seeds["rows"] if r[:2] == ["ncft", "CL"])  # within-seed se
    s2 = np.var([50.0, 51.0, 50.0, 51.0], ddof=1)
    half = stats.t.ppf(0.975, 3) * math.sqrt(s2 / 4 + se**2)
    assert rows[0][2:4] == [pytest.approx(50.5), pytest.approx(half)] and rows[0][6] == 4
    assert rows[1][2] == pytest.approx(-10.5)
    assert math.isnan(rows[2][2]) and rows[2][6] == 4  # no FWT in these runs: no interval
    fg = forgetting_rows(folders)
    fg_half = stats.t.ppf(0.975, 3) * np.std([80.0, 82.0, 84.0, 90.0], ddof=1) / 2
    assert fg == [["ncft", 2, pytest.approx(84.0), pytest.approx(84.0 - fg_half),
                   pytest.approx(84.0 + fg_half), 4]]  # fmt: skip
    write_order_means(rows, fg, tmp_path / "out", {"runs": [str(f) for f in folders]})
    saved = json.loads((tmp_path / "out" / "order_means.json").read_text())
    assert saved["rows"][0][2] == pytest.approx(50.5)
    assert (tmp_path / "out" / "forgetting_over_orders.png").stat().st_size > 0
    with pytest.raises(ContinualRunError, match="seeds"):
        order_mean_rows([tmp_path / "out"])


def test_fg_j_counts_orders_that_begin_alike_once(tmp_path):
    """Orders a b c and a b d under seeds 0, 1: FG_2 (after a b) is the same model in both
    orders, 80 | 82, so it has 2 units, not 4; FG_3 differs by order: 70, 75 | 60, 65; the
    claims' clusters are the seeds (both orders begin with a)."""
    folders = []
    for o, (last, fg3) in enumerate([("c", (70.0, 75.0)), ("d", (60.0, 65.0))]):
        per_seed = {
            s: _suite({"ncft": 50.0 + s, "seqft": 40.0}, {"ncft": -10.0 - s, "seqft": -20.0})
            for s in (0, 1)
        }
        folder = tmp_path / f"order{o}"
        folder.mkdir()
        write_seed_tables(per_seed, 100, folder)
        for s, fg2 in zip((0, 1), (80.0, 82.0), strict=True):
            meta = {"config": {"order": ["a", "b", last], "seed": s}}
            suite = {"header": ["method", "a", "b", last, "CL", "BWT"], "rows": [], "meta": meta,
                     "forgetting": {"ncft": [None, fg2, fg3[s]]}}  # fmt: skip
            (folder / f"seed{s}").mkdir()
            (folder / f"seed{s}" / "suite.json").write_text(json.dumps(suite))
        folders.append(folder)
    fg2, fg3 = forgetting_rows(folders)
    half2 = stats.t.ppf(0.975, 1) * np.std([80.0, 82.0], ddof=1) / math.sqrt(2)
    assert fg2 == ["ncft", 2, pytest.approx(81.0), pytest.approx(81.0 - half2),
                   pytest.approx(81.0 + half2), 2]  # fmt: skip
    half3 = stats.t.ppf(0.975, 3) * np.std([70.0, 75.0, 60.0, 65.0], ddof=1) / 2
    assert fg3 == ["ncft", 3, pytest.approx(67.5), pytest.approx(67.5 - half3),
                   pytest.approx(67.5 + half3), 4]  # fmt: skip
    # the claims: the same two orders' units of one seed flip together (2 clusters of 2)
    bwt = order_claims(folders)[0]  # NCFT - SeqFT: 10, 9 | 10, 9
    assert (bwt["n_units"], bwt["p"]) == (4, pytest.approx(2 / 16))
    assert (bwt["n_clusters"], bwt["p_clusters"]) == (2, pytest.approx(2 / 4))  # ±38, ±2
    # its interval: over the 2 clusters (residual sums +1, -1: CR1 se sqrt(2 · 2) / 4 = 0.5),
    # wider than the one over 4 units that treats them as independent
    half_c = stats.t.ppf(0.975, 1) * math.sqrt(0.25 + bwt["test_se"] ** 2)
    assert bwt["half_width_clusters"] == pytest.approx(half_c)
    assert bwt["half_width"] == bwt["half_width_clusters"] > bwt["half_width_units"]
    # the means over orders take the same clusters: NCFT's CL 50, 51 | 50, 51
    cl = next(r for r in order_mean_rows(folders) if r[:2] == ["ncft", "CL"])
    assert cl[6:8] == [4, 2]
    assert cl[3] == pytest.approx(stats.t.ppf(0.975, 1) * math.sqrt(0.25 + cl[9] ** 2))
