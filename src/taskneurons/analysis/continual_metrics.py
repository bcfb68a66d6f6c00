"""Continual-learning metrics: pure functions of the accuracy matrix (PAPER.md §4).

The accuracy matrix ``a`` is ``[tasks, stages]`` in training order: ``a[i, j]`` is the score
(accuracy %, or ROUGE-L) on task ``i`` after training stage ``j`` (the ``j``-th task of the
order), 0-based. Entries not measured are ``nan`` (e.g. a task before it is trained, when only
seen tasks are evaluated). ``single[i]`` is ``A(i)``, the score of a model trained on task
``i`` alone. As in Avalanche's ``evaluation/functional.py``, every metric is a function of these
arrays only, so each formula is pinned by a hand-computed test.

Definitions (1-based in the paper, 0-based here):

* CL = mean_i a(i, N): the mean score over all tasks after the last stage.
* FG_j = mean_{i<j} a(i, j) / A(i) × 100 %: at stage j, how much of each earlier task's
  single-task score is kept (100 % = no forgetting); undefined (``nan``) at the first stage.
* BWT = 1/(N-1) Σ_{i<N} (a(i, N) − a(i, i)): the mean change of each task from right after
  its own stage to the end (negative = forgetting; Lopez-Paz & Ranzato 2017).
* FWT = 1/(N-1) Σ_{i>1} (a(i, i−1) − b(i)): the mean gain on each task from the earlier
  stages before it is trained, against its zero-shot score ``b(i)``; needs each task measured
  once before its own stage (``a[i, i-1]``, the entries just below the diagonal).

Example:
    >>> import numpy as np
    >>> a = np.array([[90.0, 60.0], [np.nan, 80.0]])
    >>> cl(a), bwt(a), forgetting(a, np.array([90.0, 85.0])).tolist()
    (70.0, -30.0, [nan, 66.66666666666666])
"""

from __future__ import annotations

import numpy as np

ArrayLike = np.ndarray


def _matrix(a) -> np.ndarray:
    m = np.asarray(a, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
        raise ValueError(f"the accuracy matrix must be square [tasks, stages], got {m.shape}")
    return m


def _vector(v, n: int, what: str) -> np.ndarray:
    out = np.asarray(v, dtype=float)
    if out.shape != (n,):
        raise ValueError(f"{what} must have one value per task ({n}), got shape {out.shape}")
    return out


def cl(a) -> float:
    """CL: the mean score over all tasks after the last stage, ``mean_i a[i, -1]``.

    Example:
        >>> cl([[80.0, 70.0], [float("nan"), 90.0]])
        80.0
    """
    m = _matrix(a)
    return float(np.mean(m[:, -1]))


def forgetting(a, single) -> np.ndarray:
    """FG_j per stage, in %: ``mean_{i<j} a[i, j] / single[i] * 100`` (``nan`` at stage 0).

    Args:
        a: the accuracy matrix ``[tasks, stages]``.
        single: ``A(i)``, each task's single-task score ``[tasks]`` (must be > 0).

    Returns:
        ``[stages]`` FG values (100 = every earlier task keeps its single-task score).

    Example:
        >>> forgetting([[80.0, 40.0], [float("nan"), 90.0]], [80.0, 90.0]).tolist()
        [nan, 50.0]
    """
    m = _matrix(a)
    s = _vector(single, m.shape[0], "single")
    if np.any(s <= 0):
        raise ValueError("single-task scores must be > 0 to take ratios")
    out = np.full(m.shape[1], np.nan)
    for j in range(1, m.shape[1]):
        out[j] = float(np.mean(m[:j, j] / s[:j]) * 100.0)
    return out


def bwt(a) -> float:
    """Backward transfer: ``mean_{i<N-1} (a[i, -1] - a[i, i])`` (negative = forgetting).

    Example:
        >>> bwt([[80.0, 60.0, 50.0], [0, 70.0, 70.0], [0, 0, 90.0]])
        -15.0
    """
    m = _matrix(a)
    n = m.shape[0]
    if n < 2:
        return float("nan")
    return float(np.mean([m[i, -1] - m[i, i] for i in range(n - 1)]))


def fwt(a, zero_shot) -> float:
    """Forward transfer: ``mean_{i>0} (a[i, i-1] - zero_shot[i])``.

    Needs each task measured once before its own stage (``a[i, i-1]``, not ``nan``).

    Example:
        >>> fwt([[80.0, 60.0], [55.0, 90.0]], [50.0, 50.0])
        5.0
    """
    m = _matrix(a)
    b = _vector(zero_shot, m.shape[0], "zero_shot")
    n = m.shape[0]
    if n < 2:
        return float("nan")
    before = np.array([m[i, i - 1] for i in range(1, n)])
    if np.any(np.isnan(before)):
        raise ValueError("FWT needs a[i, i-1]: evaluate each task before its own stage")
    return float(np.mean(before - b[1:]))


def final_scores(a) -> np.ndarray:
    """Each task's score after the last stage, ``a[:, -1]`` (the row of a Table 5 layout)."""
    return _matrix(a)[:, -1].copy()


def cl_half_width(final, n_test, z: float = 1.96) -> float:
    """Half-width of a normal-approximation CI of CL from the final accuracies (%).

    Each final accuracy ``p_i`` (in %) over ``n_i`` test examples has binomial standard error
    ``sqrt(p_i (100 - p_i) / n_i)``; the tasks' test sets are independent, so CL (their mean)
    has standard error ``sqrt(sum_i se_i^2) / T``; the half-width is ``z`` times that (1.96:
    95 %). Only meaningful for accuracy; ``nan`` when a score is missing.

    Example:
        >>> round(cl_half_width([50.0, 50.0], [100, 100]), 2)
        6.93
    """
    p = np.asarray(final, dtype=np.float64)
    n = np.asarray(n_test, dtype=np.float64)
    if p.shape != n.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"one n_test per final score, got {p.shape} and {n.shape}")
    if np.any(n < 1):
        raise ValueError("n_test must be >= 1")
    return float(z * np.sqrt(np.sum(p * (100.0 - p) / n)) / p.size)


def bwt_half_width(a, n_test, z: float = 1.96) -> float:
    """Half-width of a normal-approximation CI of BWT from the accuracy matrix (%), conservative.

    BWT averages ``a[i, -1] - a[i, i]`` over the ``N - 1`` earlier tasks. Both terms are
    accuracies over task ``i``'s ``n_i`` test examples; their variances are added as if they
    were independent (``p (100 - p) / n`` each). They are measured on the same examples, and a
    model that keeps its answers makes them positively correlated, so the true standard error is
    smaller: the interval errs wide. The tasks are independent, so the terms' variances add and
    the mean divides by ``N - 1``. ``nan`` with fewer than two tasks.

    Example:
        >>> round(bwt_half_width([[50.0, 50.0], [0.0, 80.0]], [100, 100]), 2)
        13.86
    """
    m = _matrix(a)
    n = np.asarray(n_test, dtype=np.float64)
    if n.shape != (m.shape[0],):
        raise ValueError(f"one n_test per task, got {n.shape} for {m.shape[0]} tasks")
    if np.any(n < 1):
        raise ValueError("n_test must be >= 1")
    t = m.shape[0] - 1
    if t < 1:
        return float("nan")
    last, diag = m[:t, -1], np.diag(m)[:t]
    var = last * (100.0 - last) / n[:t] + diag * (100.0 - diag) / n[:t]
    return float(z * np.sqrt(np.sum(var)) / t)


__all__ = ["bwt", "bwt_half_width", "cl", "cl_half_width", "final_scores", "forgetting", "fwt"]
