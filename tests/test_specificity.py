"""Specificity statistics of a task x task effect matrix: hand-computed values, calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kstest

from taskneurons.analysis.specificity import (
    bootstrap,
    diagonal_statistic,
    dominance,
    double_centre,
    effects,
    permutation_test,
    summarize,
)

# E1: row means 4/3, 2, 7/3; column means 4/3, 7/3, 2; grand mean 17/9
E1 = np.array([[3.0, 1, 0], [1, 4, 1], [0, 2, 5]])
D1 = np.array([[20, -7, -13], [-4, 14, -10], [-16, -7, 23]]) / 9
# E2: another order of the columns beats the identity
E2 = np.array([[1.0, 4, 0], [3, 2, 0], [0, 0, 2]])


def test_double_centre_by_hand():
    np.testing.assert_allclose(double_centre(E1), D1, atol=1e-12)
    np.testing.assert_allclose(double_centre(E1).sum(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(double_centre(E1).sum(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(
        double_centre(E2), np.array([[-2, 5, -3], [4, -1, -3], [-2, -4, 6]]) / 3, atol=1e-12
    )


def test_diagonal_statistic_by_hand():
    assert diagonal_statistic(E1) == pytest.approx((20 + 14 + 23) / 27)  # 19/9
    assert diagonal_statistic(E2) == pytest.approx(1 / 3)
    # a row effect (important neurons) and a column effect (fragile task) add nothing
    rows, cols = np.array([[5.0], [0.0], [2.0]]), np.array([[0.0, 3.0, 1.0]])
    assert diagonal_statistic(E1 + rows + cols) == pytest.approx(19 / 9)
    assert diagonal_statistic(rows + cols) == pytest.approx(0.0, abs=1e-12)
    # stacks of matrices
    np.testing.assert_allclose(diagonal_statistic(np.stack([E1, E2])), [19 / 9, 1 / 3])


def test_dominance_by_hand():
    d = dominance(E1, ["a", "b", "c"])
    assert (d.n_rows, d.n_columns) == (3, 3)
    E3 = np.array([[3.0, 1, 0], [5, 4, 1], [0, 2, 5]])
    d = dominance(E3, ["a", "b", "c"])
    assert d.rows.tolist() == [True, False, True]  # row b: 4 < 5
    assert d.columns.tolist() == [False, True, True]  # column a: 3 < 5
    assert (d.row_tasks, d.column_tasks, d.n_rows, d.n_columns) == (["a", "c"], ["b", "c"], 2, 2)
    d = dominance(E2)
    assert d.rows.tolist() == [False, False, True] and d.columns.tolist() == [False, False, True]
    # a tie does not dominate
    assert dominance([[1.0, 1.0], [0.0, 2.0]]).rows.tolist() == [False, True]


def test_exact_permutation_p_by_hand():
    # E1: the 6 column orders give 19/9, 1/9, 4/9, -11/9, -8/9, -5/9: only the identity >= 19/9
    r = permutation_test(E1)
    assert r.exact and r.n_permutations == 6
    assert r.statistic == pytest.approx(19 / 9)
    assert r.p_value == pytest.approx(1 / 6)
    # E2: orders give 1/3, -1, 5/3, 0, -1/3, -2/3: the identity and (1, 0, 2) reach 1/3
    assert permutation_test(E2).p_value == pytest.approx(2 / 6)
    assert permutation_test(np.eye(4)).p_value == pytest.approx(1 / 24)
    # a constant matrix: every order ties with the identity
    assert permutation_test(np.ones((3, 3))).p_value == 1.0


def test_monte_carlo_permutation_is_seeded():
    E = np.eye(9) * 3 + np.random.default_rng(0).normal(size=(9, 9))
    a = permutation_test(E, n_permutations=999, seed=1)
    b = permutation_test(E, n_permutations=999, seed=1)
    assert not a.exact and a.n_permutations == 999
    assert a.p_value == b.p_value == pytest.approx(1 / 1000)  # (1 + 0) / (1 + 999)


@pytest.mark.parametrize("T,n_perm", [(5, 10_000), (8, 999)])
def test_p_values_calibrated_without_structure(T, n_perm):
    rng = np.random.default_rng(123)
    ps = np.array(
        [permutation_test(rng.normal(size=(T, T)), n_perm, seed=i).p_value for i in range(200)]
    )
    assert kstest(ps, "uniform").pvalue > 0.01
    assert 0.01 <= (ps < 0.05).mean() <= 0.12
    # and power: a planted diagonal is found
    planted = permutation_test(rng.normal(size=(T, T)) + 3 * np.eye(T), n_perm, seed=0)
    assert planted.p_value <= 0.01


def test_effects_orientation():
    np.testing.assert_allclose(effects([[2.0, 3.0]], [1.0, 1.0], "rise"), [[1.0, 2.0]])
    np.testing.assert_allclose(effects([[0.5, 0.9]], [0.9, 0.9], "drop"), [[0.4, 0.0]], atol=1e-12)
    with pytest.raises(ValueError, match="direction"):
        effects([[1.0]], [1.0], "up")


def test_bootstrap_by_hand():
    # column 0 of row 0 has examples 0 and 2: a resample's mean is 0, 1 or 2 with probability
    # 1/4, 1/2, 1/4, so the 95 % interval is (0, 2); constant cells have zero-width intervals
    per = np.array([[[0.0, 2.0], [1.0, 1.0]], [[3.0, 3.0], [5.0, 5.0]]])  # [i, j, examples]
    r = bootstrap(per, n_boot=2000, seed=0)
    np.testing.assert_allclose(r.E, [[1.0, 1.0], [3.0, 5.0]])
    assert r.statistic == pytest.approx((1 + 5 - 1 - 3) / 4)  # (E00 + E11 - E01 - E10) / 4
    assert (r.E_low[0, 0], r.E_high[0, 0]) == (0.0, 2.0)
    assert r.E_low[1, 1] == r.E_high[1, 1] == 5.0
    # the statistic is (x + 1) / 4 for the resampled mean x of column 0 row 0's cell
    assert r.statistic_ci == pytest.approx((0.25, 0.75))  # x = 0 and x = 2
    assert r.level == 0.95 and r.n_boot == 2000 and r.samples.shape == (2000,)


def test_bootstrap_uses_the_same_examples_down_a_column():
    # values[i, j, e] = a[i, j] + b[j, e]: the example noise b is shared by the rows, so with
    # the same resampled examples for every row, double-centring removes it exactly
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4)) + 2 * np.eye(4)
    b = rng.normal(size=(4, 50)) * 5  # [j, examples]
    r = bootstrap(a[:, :, None] + b[None], n_boot=500, seed=3)
    lo, hi = r.statistic_ci
    assert hi - lo < 1e-9
    assert r.statistic == pytest.approx(diagonal_statistic(a))
    assert (r.E_high - r.E_low).min() > 0.5  # the cells themselves do vary


def test_bootstrap_with_baseline_and_ragged_columns():
    values = [np.array([[0.5, 0.0, 1.0], [1.0, 1.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 0.5]])]
    base = [np.ones(3), np.ones(2)]  # accuracy 1 without intervention
    r = bootstrap(values, base, direction="drop", n_boot=200, seed=0)
    np.testing.assert_allclose(r.E, [[0.5, 0.0], [0.0, 0.75]])
    # the same as a nan-padded [T, T, n] array and [T, n] baseline
    padded = np.full((2, 2, 3), np.nan)
    padded[:, 0, :] = values[0]
    padded[:, 1, :2] = values[1]
    base_arr = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, np.nan]])
    r2 = bootstrap(padded, base_arr, direction="drop", n_boot=200, seed=0)
    np.testing.assert_allclose(r2.E, r.E)
    assert r2.statistic_ci == r.statistic_ci
    # rise: values - baseline
    r3 = bootstrap(values, base, direction="rise", n_boot=10, seed=0)
    np.testing.assert_allclose(r3.E, -r.E)


def test_bootstrap_is_seeded():
    per = np.random.default_rng(1).normal(size=(3, 3, 20))
    assert bootstrap(per, seed=5).statistic_ci == bootstrap(per, seed=5).statistic_ci
    assert bootstrap(per, seed=5).statistic_ci != bootstrap(per, seed=6).statistic_ci


def test_summarize():
    assert summarize(E1) == (
        "diagonal not above chance at the 0.05 level: mean double-centred diagonal 2.11, "
        "p = 0.167 (exact, 6 orders); rows 3/3, columns 3/3"
    )
    E = np.eye(5) * 4
    per = E[:, :, None] + np.zeros((5, 5, 4))
    line = summarize(E, ci=bootstrap(per, n_boot=50))
    assert line == (
        "diagonal exceeds chance: mean double-centred diagonal 3.2 (95% CI 3.2..3.2), "
        "p = 0.00833 (exact, 120 orders); rows 5/5, columns 5/5"
    )


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        permutation_test(np.ones((2, 3)))
    with pytest.raises(ValueError, match="nan"):
        dominance([[1.0, np.nan], [0.0, 1.0]])
    with pytest.raises(ValueError, match="task names"):
        dominance(E1, ["a"])
    with pytest.raises(ValueError, match="level"):
        bootstrap(np.ones((2, 2, 3)), level=95)
