"""The joint test of a grid of effect matrices and Holm's correction (pure statistics)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import stats

import taskneurons.analysis.grid_test as grid_test
from taskneurons.analysis.grid_test import holm, joint_permutation_test
from taskneurons.analysis.specificity import permutation_test


def test_doctests_pass():
    assert doctest.testmod(grid_test).failed == 0


@pytest.mark.parametrize("scale", ["raw", "z"])
def test_a_grid_specific_everywhere_is_at_the_floor(scale):
    rng = np.random.default_rng(1)
    grid = [k * np.eye(4) + rng.normal(0, 0.2, (4, 4)) for k in (1.0, 2.0, 5.0)]
    res = joint_permutation_test(grid, scale=scale)
    assert res.exact and res.n_permutations == 24
    assert res.p_value == res.floor == pytest.approx(1 / 24)
    assert res.statistic > 0 and (res.n_cells, res.n_tasks) == (3, 4)


def test_six_tasks_lower_the_floor_to_one_in_720():
    res = joint_permutation_test([np.eye(6)])
    assert res.floor == pytest.approx(1 / 720) and res.p_value == pytest.approx(1 / 720)


def test_without_structure_the_p_value_is_uniform():
    """200 grids of 3 cells, 5 tasks, no task specificity: p is uniform on the 120 orders."""
    rng = np.random.default_rng(7)
    ps = [
        joint_permutation_test([rng.normal(size=(5, 5)) for _ in range(3)]).p_value
        for _ in range(200)
    ]
    assert 0.01 <= np.mean(np.array(ps) <= 0.05) <= 0.11
    assert stats.kstest(ps, "uniform").pvalue > 0.01


def test_cells_that_share_one_interaction_are_one_test_not_many():
    """The issue's case: many cells sharing one task x task interaction (the same model and
    examples) and no specificity. Counting the cells at the per-cell floor overstates the
    evidence; the joint p is one uniform draw."""
    rng = np.random.default_rng(3)
    joint, floors = [], []
    for _ in range(100):
        shared = rng.normal(size=(4, 4))  # one interaction for the whole grid
        grid = [shared + rng.normal(0, 0.3, (4, 4)) for _ in range(48)]
        joint.append(joint_permutation_test(grid).p_value)
        floors.append(sum(permutation_test(E).p_value <= 1 / 24 + 1e-12 for E in grid))
    assert 0.0 <= np.mean(np.array(joint) <= 1 / 24 + 1e-12) <= 0.12  # about 1 in 24
    # whenever the shared interaction happens to look diagonal, most cells reach the floor
    # together: "many of 48 at the floor" is then one event, not 48 pieces of evidence
    assert max(floors) >= 20 and np.mean(floors) < 4


def test_z_scale_does_not_let_one_large_cell_decide():
    rng = np.random.default_rng(0)
    specific = np.eye(4) + rng.normal(0, 0.1, (4, 4))
    anti = 100 * (np.ones((4, 4)) - np.eye(4))  # large effects off the diagonal
    assert joint_permutation_test([specific, anti], scale="raw").p_value == 1.0
    assert joint_permutation_test([specific, anti], scale="z").statistic == pytest.approx(
        (joint_permutation_test([specific], scale="z").statistic
         + joint_permutation_test([anti], scale="z").statistic) / 2
    )  # fmt: skip


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.03, 0.5 -> x4, x3, x2, x1 = 0.04, 0.06, 0.06, 0.5
    assert holm([0.03, 0.5, 0.01, 0.02]).tolist() == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.04, 0.045]).tolist() == pytest.approx([0.08, 0.08])  # made monotone
    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]  # capped at 1
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        holm([1.5])


def test_cells_must_agree_in_size():
    with pytest.raises(ValueError, match="differ in size"):
        joint_permutation_test([np.eye(3), np.eye(4)])
    with pytest.raises(ValueError, match="at least one"):
        joint_permutation_test([])
