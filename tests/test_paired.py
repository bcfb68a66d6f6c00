"""Paired differences over test examples (analysis/paired.py), on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from taskneurons.analysis.paired import mean_difference


def test_mean_and_runs_are_averaged_per_example():
    d = mean_difference([100, 100, 0, 100], [[0, 100, 0, 0], [0, 0, 0, 100]])
    # per-example random means 0, 50, 0, 50 -> differences 100, 50, 0, 50
    assert d.mean == pytest.approx(50.0) and d.n == 4
    assert d.low <= d.mean <= d.high


def test_constant_difference_has_a_point_interval_and_small_p():
    d = mean_difference(np.full(12, 3.0), np.zeros(12), n_perm=4000)
    assert (d.low, d.high) == (3.0, 3.0) and d.excludes_zero()
    # every sign flip but the all-plus and all-minus ones gives a smaller |mean|
    assert d.p_value == pytest.approx((1 + 4000 * 2 / 2**12) / 4001, abs=0.01)


def test_no_difference_gives_p_one_and_zero_inside():
    x = np.arange(10.0)
    d = mean_difference(x, x)
    assert d.mean == 0.0 and d.p_value == 1.0 and not d.excludes_zero()


def test_p_value_is_calibrated_without_a_difference():
    rng = np.random.default_rng(1)
    ps = [
        mean_difference(
            rng.normal(size=30), rng.normal(size=30), n_boot=10, n_perm=200, seed=s
        ).p_value
        for s in range(200)
    ]
    assert 0.02 <= np.mean(np.array(ps) <= 0.05) <= 0.1
    assert 0.4 <= np.mean(ps) <= 0.6


def test_seeded_and_checked():
    x, y = [1.0, 0.0, 2.0, 5.0], [0.0, 1.0, 1.0, 1.0]
    assert mean_difference(x, y, seed=3) == mean_difference(x, y, seed=3)
    with pytest.raises(ValueError, match="same examples"):
        mean_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        mean_difference([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="level"):
        mean_difference(x, y, level=1.0)
