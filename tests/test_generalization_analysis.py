"""Generalization analyses (overlap, proportions, controlled overlap, similarity, correlation):
hand-computed values on tiny masks and vectors."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from scipy.stats import t as student_t

from taskneurons.analysis import parameter_similarity as similarity
from taskneurons.analysis import set_overlap as generalization
from taskneurons.analysis.parameter_similarity import (
    correlation,
    layer_similarity,
    mean_similarity,
    neuron_vectors,
    set_vectors,
)
from taskneurons.analysis.set_overlap import (
    chance_overlap_rate,
    controlled_overlap,
    group_overlap,
    overlap_matrix,
    overlap_rate,
    proportion_of_set,
    union,
)
from taskneurons.experiments.generalization import controlled_contrast
from taskneurons.experiments.generalization.controlled_contrast import overlap_contrast


def _m(*rows: str) -> torch.Tensor:
    """A bool mask from strings of 0/1, one string per layer: ``_m("110", "001")``."""
    return torch.tensor([[c == "1" for c in r] for r in rows])


def test_doctests_pass():
    assert doctest.testmod(generalization).failed == 0
    assert doctest.testmod(similarity).failed == 0
    assert doctest.testmod(controlled_contrast).failed == 0


# --- overlap -------------------------------------------------------------------------------


def test_chance_overlap_rate_by_hand_and_by_simulation():
    assert chance_overlap_rate(50, 50, 100) == pytest.approx(25 / 75)
    assert chance_overlap_rate(0, 0, 10) == 0.0 and chance_overlap_rate(10, 3, 10) == 0.3
    with pytest.raises(ValueError, match="0 <= a, b <= n"):
        chance_overlap_rate(11, 3, 10)
    gen = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(400):
        a, b = torch.zeros(1000, dtype=torch.bool), torch.zeros(1000, dtype=torch.bool)
        a[torch.randperm(1000, generator=gen)[:300]] = True
        b[torch.randperm(1000, generator=gen)[:200]] = True
        rates.append(overlap_rate(a, b))
    assert sum(rates) / len(rates) == pytest.approx(chance_overlap_rate(300, 200, 1000), abs=0.005)


def test_overlap_rate_by_hand():
    assert overlap_rate(_m("11110"), _m("00111")) == pytest.approx(2 / 5)  # {2,3} of {0..4}
    assert overlap_rate(_m("110", "000"), _m("010", "001")) == pytest.approx(1 / 3)
    assert overlap_rate(_m("101"), _m("101")) == 1.0
    assert overlap_rate(_m("100"), _m("011")) == 0.0
    assert overlap_rate(_m("000"), _m("000")) == 0.0  # 0/0 is defined as 0.0
    assert overlap_rate(_m("000"), _m("010")) == 0.0


def test_overlap_rate_rejects_bad_masks():
    with pytest.raises(ValueError, match="one shape"):
        overlap_rate(_m("110"), _m("1100"))
    with pytest.raises(ValueError, match="one shape"):
        overlap_rate(_m("11", "00"), _m("1100"))
    with pytest.raises(ValueError, match="bool"):
        overlap_rate(torch.tensor([1.0, 0.0]), _m("10"))


def test_union_by_hand():
    assert union([_m("100"), _m("001"), _m("101")]).tolist() == [[True, False, True]]
    assert union({"a": _m("010")}).tolist() == [[False, True, False]]
    with pytest.raises(ValueError, match="no masks"):
        union([])
    with pytest.raises(ValueError, match="shape"):
        union([_m("10"), _m("100")])


def test_overlap_matrix_by_hand():
    names, R = overlap_matrix({"a": _m("1100"), "b": _m("0110"), "c": _m("0000"), "d": _m("0011")})
    assert names == ["a", "b", "c", "d"]
    expected = np.array(
        [
            [1, 1 / 3, 0, 0],
            [1 / 3, 1, 0, 1 / 3],
            [0, 0, 0, 0],  # the empty set overlaps nothing, not even itself
            [0, 1 / 3, 0, 1],
        ]
    )
    np.testing.assert_allclose(R, expected)
    np.testing.assert_array_equal(R, R.T)


def test_group_overlap_by_hand():
    train = [_m("10000"), _m("01000")]  # Nx = {0, 1}
    test = {"x": _m("01100"), "y": _m("00010")}  # Ny = {1, 2, 3}
    assert group_overlap(train, test) == pytest.approx(1 / 4)  # {1} of {0, 1, 2, 3}
    assert group_overlap(train, [_m("00001")]) == 0.0
    assert group_overlap([_m("11000")], train) == 1.0


# --- proportion of a set -------------------------------------------------------------------


def test_proportion_of_set_picks_the_top_inside_the_mask():
    scores = torch.tensor([[0.9, 5.0, 0.2, 0.7], [0.3, 0.8, 0.1, 0.6]])
    mask = _m("1011", "1101")  # 5.0 at (0, 1) is outside the set and ignored
    # in the set: 0.9 (id 0), 0.2 (2), 0.7 (3), 0.3 (4), 0.8 (5), 0.6 (7)
    assert proportion_of_set(scores, mask, 0.5).tolist() == _m("1001", "0100").tolist()
    assert proportion_of_set(scores, mask, 1 / 6).tolist() == _m("1000", "0000").tolist()
    assert proportion_of_set(scores, mask, 0.7).tolist() == _m("1001", "0101").tolist()  # 4.2->4
    assert torch.equal(proportion_of_set(scores, mask, 1.0), mask)


def test_proportion_of_set_ties_and_rounding():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 1.0, 2.0]])
    mask = _m("111101")
    # 2.0 at ids 1, 2, 3, 5: the lower ids win; 5 * 0.5 = 2.5 rounds half up to 3
    assert proportion_of_set(scores, mask, 0.5).tolist() == _m("011100").tolist()
    assert proportion_of_set(scores, mask, 0.2).tolist() == _m("010000").tolist()
    assert proportion_of_set(scores, mask, 0.8).tolist() == _m("011101").tolist()
    assert not proportion_of_set(torch.ones(1, 3), _m("100"), 0.4).any()  # 0.4 rounds to 0


def test_proportion_of_set_rejects_bad_input():
    scores, mask = torch.ones(2, 3), _m("110", "011")
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="proportion"):
            proportion_of_set(scores, mask, bad)
    with pytest.raises(ValueError, match="differ"):
        proportion_of_set(torch.ones(3, 2), mask, 0.5)
    with pytest.raises(ValueError, match="nan"):
        proportion_of_set(torch.tensor([[float("nan"), 1, 1], [1, 1, 1]]), mask, 0.5)


# --- controlled overlap --------------------------------------------------------------------


def _contrast_examples() -> dict:
    """Two seeds, two OOD tasks of two examples; proportion 30: a gain; proportion 50: none."""
    ex = {
        ("g", 30.0, 100.0, 0, "t1"): [100, 100], ("g", 30.0, 100.0, 0, "t2"): [0, 100],
        ("g", 30.0, 0.0, 0, "t1"): [0, 100], ("g", 30.0, 0.0, 0, "t2"): [0, 0],
        ("g", 30.0, 100.0, 1, "t1"): [100, 0], ("g", 30.0, 100.0, 1, "t2"): [100, 100],
        ("g", 30.0, 0.0, 1, "t1"): [100, 0], ("g", 30.0, 0.0, 1, "t2"): [0, 100],
    }  # fmt: skip
    for key in list(ex):
        ex[("g", 50.0, *key[2:])] = [0, 100]
    return ex


def test_overlap_contrast_by_hand():
    header, rows = overlap_contrast(
        _contrast_examples(), [("g", ["t1", "t2"])], [30.0, 50.0], [0.0, 50.0, 100.0], [0, 1]
    )
    row = dict(zip(header, rows[0], strict=True))
    # seed 0: differences [100, 0, 0, 100] -> 50; seed 1: [0, 0, 100, 0] -> 25
    assert row["per-seed contrast"] == "50.00 / 25.00" and row["contrast"] == 37.5
    assert (row["low overlap %"], row["high overlap %"], row["examples"]) == (0.0, 100.0, 4)
    # over seeds: sd 17.68, t(1) = 12.71 -> half-width >= 12.71 * 17.68 / sqrt(2) = 158.9
    assert row["CI low"] <= 37.5 - 158.8 and row["CI high"] >= 37.5 + 158.8
    # seed-averaged differences [50, 0, 50, 50]: all three signs alike with probability 1/4
    assert row["p"] == pytest.approx(0.25, abs=0.04)
    assert row["p (Holm)"] == pytest.approx(2 * row["p"])  # two rows read
    flat = dict(zip(header, rows[1], strict=True))
    assert flat["contrast"] == 0.0 and flat["p"] == flat["p (Holm)"] == 1.0


def test_overlap_contrast_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="two distinct overlaps"):
        overlap_contrast(_contrast_examples(), [("g", ["t1"])], [30.0], [0.0, 0.0], [0, 1])
    with pytest.raises(KeyError):
        overlap_contrast(_contrast_examples(), [("g", ["t3"])], [30.0], [0.0, 100.0], [0, 1])
    one = overlap_contrast(_contrast_examples(), [("g", ["t1"])], [30.0], [0.0, 100.0], [0])
    assert one[1][0][one[0].index("contrast")] == 50.0  # one seed: that seed's difference


TARGET = torch.zeros(2, 10, dtype=torch.bool)
TARGET[0, :6] = True
TARGET[1, 5:9] = True  # 10 target neurons of 20


@pytest.mark.parametrize(
    ("n_total", "overlap", "k"),
    [
        (0, 0.5, 0),
        (1, 0.5, 1),  # 0.5 rounds half up
        (5, 0.5, 3),
        (4, 0.25, 1),
        (10, 0.25, 3),  # 2.5 -> 3
        (10, 0.0, 0),
        (10, 1.0, 10),
        (20, 0.5, 10),
        (8, 0.3, 2),  # 2.4 -> 2
        (8, 0.7, 6),  # 5.6 -> 6
    ],
)
def test_controlled_overlap_hits_the_requested_overlap(n_total, overlap, k):
    out = controlled_overlap(TARGET, n_total, overlap, generator=3)
    assert out.dtype == torch.bool and out.shape == TARGET.shape
    assert int(out.sum()) == n_total
    assert int((out & TARGET).sum()) == k


def test_controlled_overlap_stays_inside_candidates():
    cand = _m("1111111111", "0000011111")  # target: 6 + 4, others: 4 + 1
    for seed in range(5):
        out = controlled_overlap(TARGET, 8, 0.5, generator=seed, candidates=cand)
        assert not (out & ~cand).any()
        assert (int(out.sum()), int((out & TARGET).sum())) == (8, 4)
    with pytest.raises(ValueError, match="non-target"):  # needs 6 others, 5 exist in cand
        controlled_overlap(TARGET, 8, 0.25, generator=0, candidates=cand)
    only_layer0 = _m("1111111111", "0000000000")  # 6 target, 4 others
    out = controlled_overlap(TARGET, 10, 0.6, generator=0, candidates=only_layer0)
    assert torch.equal(out, only_layer0)


def test_controlled_overlap_is_seed_deterministic():
    a = controlled_overlap(TARGET, 10, 0.5, generator=0)
    assert torch.equal(a, controlled_overlap(TARGET, 10, 0.5, generator=0))
    assert not torch.equal(a, controlled_overlap(TARGET, 10, 0.5, generator=1))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    first = controlled_overlap(TARGET, 10, 0.5, generator=g1)
    assert torch.equal(first, controlled_overlap(TARGET, 10, 0.5, generator=g2))
    assert torch.equal(first, controlled_overlap(TARGET, 10, 0.5, generator=7))  # int = fresh gen


def test_controlled_overlap_draws_uniformly():
    target = _m("11110000")
    counts = torch.zeros(8)
    for seed in range(400):
        counts += controlled_overlap(target, 3, 1 / 3, generator=seed).float()[0]
    # 1 of 4 target neurons and 2 of 4 others per draw: expected 100 and 200 hits each
    assert counts[:4].sum() == 400 and counts[4:].sum() == 800
    assert ((counts[:4] > 70) & (counts[:4] < 130)).all()
    assert ((counts[4:] > 160) & (counts[4:] < 240)).all()


def test_controlled_overlap_rejects_impossible_requests():
    with pytest.raises(ValueError, match="11 target neurons, 10 exist"):
        controlled_overlap(TARGET, 11, 1.0, generator=0)
    with pytest.raises(ValueError, match="11 non-target neurons, 10 exist"):
        controlled_overlap(TARGET, 11, 0.0, generator=0)
    with pytest.raises(ValueError, match="target"):
        controlled_overlap(TARGET, 21, 0.5, generator=0)
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="overlap must"):
            controlled_overlap(TARGET, 4, bad, generator=0)
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="n_total"):
            controlled_overlap(TARGET, bad, 0.5, generator=0)
    with pytest.raises(ValueError, match="differ"):
        controlled_overlap(TARGET, 4, 0.5, generator=0, candidates=_m("11"))


# --- parameter similarity ------------------------------------------------------------------


def test_neuron_vectors_concatenates_rows_and_columns():
    up = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # [d_ff=3, d=2]
    down = torch.tensor([[7.0, 8.0, 9.0], [10.0, 11.0, 12.0]])  # [d=2, d_ff=3]
    v = neuron_vectors([up], [down])
    assert v.tolist() == [[1, 2, 7, 10], [3, 4, 8, 11], [5, 6, 9, 12]]
    assert neuron_vectors(columns=[down]).tolist() == [[7, 10], [8, 11], [9, 12]]
    with pytest.raises(ValueError, match="d_ff"):
        neuron_vectors([up], [torch.ones(2, 4)])
    with pytest.raises(ValueError, match="at least one"):
        neuron_vectors()


PARAMS = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-2.0, 0.0]])] * 4


def test_set_vectors_by_hand():
    v = set_vectors(PARAMS, _m("1100", "0010", "0000", "1111"))
    np.testing.assert_allclose(v[[0, 1, 3]], [[0.5, 0.5], [1.0, 1.0], [0.0, 0.5]])
    assert np.isnan(v[2]).all()
    with pytest.raises(ValueError, match="layers"):
        set_vectors(PARAMS, _m("1100"))
    with pytest.raises(ValueError, match="d_ff, p"):
        set_vectors(PARAMS, _m("110", "001", "000", "111"))


def test_layer_similarity_by_hand():
    mask_i = _m("1000", "1000", "1100", "1000")
    mask_j = _m("0100", "1000", "0010", "0001")
    # orthogonal, identical, (0.5, 0.5) vs (1, 1), (1, 0) vs (-2, 0)
    np.testing.assert_allclose(layer_similarity(PARAMS, mask_i, mask_j), [0.0, 1.0, 1.0, -1.0])
    diag = layer_similarity(PARAMS, mask_i, _m("0010", "0000", "0010", "0000"))
    assert diag[0] == pytest.approx(1 / math.sqrt(2))
    assert np.isnan(diag[1]) and np.isnan(diag[3])  # an empty set in that layer
    assert diag[2] == pytest.approx(1.0)


def test_layer_similarity_scale_invariant_and_zero_vector():
    rng = np.random.default_rng(0)
    params = [torch.tensor(rng.normal(size=(5, 3))) for _ in range(2)]
    a, b = _m("11000", "00111"), _m("01110", "10000")
    base = layer_similarity(params, a, b)
    np.testing.assert_allclose(layer_similarity([7.5 * p for p in params], a, b), base)
    assert np.isfinite(base).all()
    zero = [torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])]
    assert np.isnan(layer_similarity(zero, _m("110"), _m("001"))[0])  # mean vector is 0


def test_mean_similarity_ignores_nan():
    out = mean_similarity([np.array([0.2, np.nan, 1.0]), np.array([0.4, np.nan, np.nan])])
    np.testing.assert_allclose(out[[0, 2]], [0.3, 1.0])
    assert np.isnan(out[1])
    with pytest.raises(ValueError, match="at least one"):
        mean_similarity([])


# --- correlation ---------------------------------------------------------------------------

X5, Y5 = [1.0, 2, 3, 4, 5], [2.0, 1, 4, 3, 5]  # centred sums: 8 / sqrt(10 * 10) = 0.8


def test_correlation_matches_scipy_and_hand_values():
    c = correlation(X5, Y5, n_boot=200)
    assert c.pearson_r == pytest.approx(0.8) and c.spearman_rho == pytest.approx(0.8)
    tval = 0.8 * math.sqrt(3) / 0.6  # t with n - 2 = 3 degrees of freedom
    assert c.pearson_p == pytest.approx(2 * student_t.sf(tval, 3))
    assert c.pearson_p == pytest.approx(pearsonr(X5, Y5)[1])
    assert c.spearman_p == pytest.approx(spearmanr(X5, Y5)[1])
    assert c.n == 5 and c.n_boot == 200 and 0 < c.n_boot_used <= 200
    # Spearman differs from Pearson once the relation is monotone but not linear
    x, y = [1.0, 2, 3, 4, 5, 6], [1.0, 3, 2, 10, 50, 100]
    c = correlation(x, y, n_boot=50)
    assert c.spearman_rho == pytest.approx(spearmanr(x, y)[0])
    assert c.pearson_r == pytest.approx(pearsonr(x, y)[0])
    assert c.spearman_rho == pytest.approx(1 - 6 * 2 / (6 * 35))  # one swapped pair: d^2 = 2


def test_correlation_of_perfect_monotone_data():
    x = np.arange(1.0, 9.0)
    c = correlation(x, np.exp(x), n_boot=300, seed=1)
    assert c.spearman_rho == pytest.approx(1.0) and c.spearman_ci == (1.0, 1.0)
    assert c.pearson_r < 1.0
    c = correlation(x, 3 * x - 2, n_boot=300, seed=1)
    assert c.pearson_r == pytest.approx(1.0)
    assert c.pearson_ci == pytest.approx((1.0, 1.0))
    c = correlation(x, -x, n_boot=100)
    assert c.spearman_ci == (-1.0, -1.0)


def test_correlation_interval_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    c = correlation(x, y, n_boot=500, seed=3)
    assert c.pearson_ci[0] < c.pearson_r < c.pearson_ci[1]
    assert c.spearman_ci[0] < c.spearman_rho < c.spearman_ci[1]
    assert c.to_dict() == correlation(x, y, n_boot=500, seed=3).to_dict()
    assert correlation(x, y, n_boot=500, seed=4).pearson_ci != c.pearson_ci
    narrow = correlation(x, y, n_boot=500, seed=3, confidence=0.5)
    assert c.pearson_ci[0] < narrow.pearson_ci[0] < narrow.pearson_ci[1] < c.pearson_ci[1]
    d = json.loads(json.dumps(c.to_dict()))
    assert d["pearson_ci"] == list(c.pearson_ci) and d["n"] == 30 and d["seed"] == 3


def test_correlation_skips_constant_resamples():
    c = correlation([1.0, 1.0, 2.0], [1.0, 2.0, 3.0], n_boot=400)
    # a resample is constant in x when it draws id 2 never or only: (2/3)^3 + (1/3)^3 = 1/3
    assert 200 < c.n_boot_used < 330
    assert all(np.isfinite(c.pearson_ci)) and all(np.isfinite(c.spearman_ci))


def test_correlation_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        correlation([1.0, 2.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="one length"):
        correlation([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="finite"):
        correlation([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="constant"):
        correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="n_boot"):
        correlation(X5, Y5, n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        correlation(X5, Y5, confidence=1.0)
