"""Continual-learning metrics pinned on hand-computed accuracy matrices (PAPER.md §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from taskneurons.analysis.continual_metrics import bwt, cl, final_scores, forgetting, fwt

NAN = float("nan")
# 3 tasks in training order; a[i, j]: score on task i after stage j
A = np.array(
    [
        [80.0, 60.0, 40.0],
        [30.0, 90.0, 45.0],
        [20.0, 35.0, 70.0],
    ]
)
SINGLE = np.array([80.0, 90.0, 70.0])  # A(i): each task trained alone
ZERO = np.array([25.0, 25.0, 25.0])  # b(i): zero-shot


def test_cl_half_width_by_hand():
    from taskneurons.analysis.continual_metrics import cl_half_width

    # se^2: 20*80/16 = 100 and 50*50/25 = 100 -> CL se = sqrt(200) / 2
    assert cl_half_width([20.0, 50.0], [16, 25], z=1.0) == pytest.approx(200**0.5 / 2)
    assert cl_half_width([100.0, 0.0], [5, 5]) == 0.0
    with pytest.raises(ValueError, match="one n_test"):
        cl_half_width([20.0], [16, 25])


def test_cl_is_the_mean_of_the_last_column():
    assert cl(A) == pytest.approx((40.0 + 45.0 + 70.0) / 3)


def test_forgetting_per_stage_by_hand():
    fg = forgetting(A, SINGLE)
    assert math.isnan(fg[0])
    assert fg[1] == pytest.approx(60.0 / 80.0 * 100)  # only task 0 is earlier than stage 1
    assert fg[2] == pytest.approx((40.0 / 80.0 + 45.0 / 90.0) / 2 * 100)  # = 50 %


def test_bwt_and_fwt_by_hand():
    assert bwt(A) == pytest.approx(((40.0 - 80.0) + (45.0 - 90.0)) / 2)  # -42.5
    assert fwt(A, ZERO) == pytest.approx(((30.0 - 25.0) + (35.0 - 25.0)) / 2)  # 7.5


def test_no_forgetting_gives_100_and_zero_bwt():
    a = np.array([[80.0, 80.0], [NAN, 90.0]])
    assert forgetting(a, [80.0, 90.0])[1] == pytest.approx(100.0)
    assert bwt(a) == 0.0
    assert final_scores(a).tolist() == [80.0, 90.0]


def test_bad_shapes_and_values_are_refused():
    with pytest.raises(ValueError, match="square"):
        cl(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one value per task"):
        forgetting(A, [1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        forgetting(A, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="before its own stage"):
        fwt(np.array([[80.0, 60.0], [NAN, 90.0]]), [0.0, 0.0])


def test_bwt_half_width_by_hand():
    from taskneurons.analysis.continual_metrics import bwt_half_width

    a = [[20.0, 50.0, 50.0], [0.0, 80.0, 60.0], [0.0, 0.0, 90.0]]
    # terms: task 0 (50 vs 20, n 16), task 1 (60 vs 80, n 25); variances add, mean over 2
    var = 50 * 50 / 16 + 20 * 80 / 16 + 60 * 40 / 25 + 80 * 20 / 25
    assert bwt_half_width(a, [16, 25, 4], z=1.0) == pytest.approx(var**0.5 / 2)
    assert bwt_half_width([[100.0, 0.0], [0.0, 50.0]], [5, 5]) == 0.0
    assert math.isnan(bwt_half_width([[50.0]], [10]))
    with pytest.raises(ValueError, match="one n_test per task"):
        bwt_half_width(a, [16, 25])
