"""Continual metrics over seeds: one interval over seeds and test examples; paired method tests.

A continual run repeated with ``S`` seeds (training order of examples, LoRA init, the methods'
random subsets; the train, validation and test examples fixed) gives per seed a value ``x_s``
of a metric (CL, BWT, FWT) with a standard error ``se_s`` over the test examples.
:func:`seed_interval` combines them as ``mean ± t(S-1) · sqrt(s²/S + mean se²)``: ``s²`` is the
variance between seeds; the test-example variance is added once because every seed scores the
*same* test examples, so that noise is common to all seeds and does not average out (the idea
of :func:`~taskneurons.analysis.seed_intervals.combine_seeds` with ``shared_test=True``,
which computes it).

:func:`paired_tests` compares methods on the same seeds: for each pair, a paired t-test over
seeds of ``x_a,s - x_b,s`` (scipy's ``ttest_rel``, two-sided), Holm-adjusted across all the
pairs (:func:`~taskneurons.analysis.grid_test.holm`; a pair whose differences do not vary
over seeds gets no test, ``nan``, and counts in the family as ``p = 1``). With 3 seeds a test has 2 degrees of
freedom: only large, consistent differences reach p < 0.05.

Example:
    >>> r = seed_interval([60.0, 62.0, 64.0])
    >>> r["mean"], round(r["half_width"], 2)
    (62.0, 4.97)
    >>> rows = paired_tests({"a": [60.0, 62.0, 64.0], "b": [50.0, 53.0, 55.0]})
    >>> rows[0]["pair"], rows[0]["mean_difference"]
    ('a - b', 9.333333333333334)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from taskneurons.analysis.grid_test import holm
from taskneurons.analysis.seed_intervals import combine_seeds


def seed_interval(
    values: Sequence[float], ses: Sequence[float] | None = None, level: float = 0.95
) -> dict[str, float]:
    """Mean over seeds with its interval (see the module docstring): :func:`~taskneurons.
    analysis.seed_intervals.combine_seeds` with ``shared_test=True``, the standard errors
    passed as the intervals ``value ± z se``.

    Args:
        values: the metric per seed (at least 2, finite).
        ses: its standard error over the (shared) test examples per seed (``None``: none).
        level: the coverage.

    Returns:
        ``mean``, ``lo``, ``hi``, ``half_width``, ``between_sd``, ``within_se``, ``n_seeds``.
    """
    z = float(stats.norm.ppf(0.5 + level / 2))
    intervals = (
        None
        if ses is None
        else [(v - z * se, v + z * se) for v, se in zip(values, ses, strict=True)]
    )
    res = combine_seeds(values, intervals, shared_test=True, level=level)
    out = {k: v for k, v in res.to_dict().items() if k != "shared_test"}
    return {**out, "half_width": res.half_width}


def paired_tests(values: Mapping[str, Sequence[float]]) -> list[dict]:
    """Paired t-tests over seeds between every two methods, Holm-adjusted across the pairs.

    Args:
        values: method -> the metric per seed (same seeds, same order, for every method).

    Returns:
        One dict per pair (in the methods' order): ``pair``, ``mean_difference``, ``t``,
        ``p``, ``p_holm`` (``nan`` when the differences do not vary: no test).
    """
    rows = []
    for a, b in itertools.combinations(values, 2):
        x, y = np.asarray(values[a], float), np.asarray(values[b], float)  # [seeds]
        d = x - y
        if d.size < 2 or np.allclose(d, d[0]):
            t, p = math.nan, math.nan
        else:
            res = stats.ttest_rel(x, y)
            t, p = float(res.statistic), float(res.pvalue)
        rows.append({"pair": f"{a} - {b}", "mean_difference": float(d.mean()), "t": t, "p": p})
    # an untested pair counts in Holm's family as p = 1 (conservative), its own p stays nan
    adjusted = holm([1.0 if math.isnan(r["p"]) else r["p"] for r in rows]) if rows else []
    for row, p in zip(rows, adjusted, strict=True):
        row["p_holm"] = math.nan if math.isnan(row["p"]) else float(p)
    return rows
