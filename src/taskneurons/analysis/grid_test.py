"""One test for a grid of effect matrices that share their data, and Holm's correction.

A sweep gives one task x task effect matrix per cell (selection x k, seeds, ...). The cells share
one model, one set of scores and the same test examples, so their permutation p-values are not
independent: counting how many cells reach the floor ``1/T!`` and multiplying their p-values as if
they were is not a test. :func:`joint_permutation_test` applies **one** relabelling of the tasks
to every cell at once and compares a grid statistic with its distribution over all relabellings:

* the grid statistic is the mean over cells of each cell's mean double-centred diagonal
  (:func:`~taskneurons.analysis.specificity.diagonal_statistic`), in the cells' units
  (``scale="raw"``), or of each cell's statistic divided by the standard deviation of its
  permutation distribution (``scale="z"``: no cell weighs more because its effects are larger);
* the p-value is exact over all ``T!`` orders for ``T <= 7`` tasks, so its floor is ``1/T!``
  (``1/24`` for 4 tasks, ``1/720`` for 6) however many cells the grid has.

Where several p-values are read one by one (cells of a grid, methods of a table),
:func:`holm` adjusts them for multiplicity (Holm 1979; controls the family-wise error rate under
any dependence).

Example:
    >>> E = np.eye(4)
    >>> joint_permutation_test([E, 2 * E]).p_value == 1 / 24
    True
    >>> holm([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from taskneurons.analysis.specificity import check_square, double_centre, task_orders


@dataclass
class JointTestResult:
    """The joint test of a grid of effect matrices.

    Attributes:
        statistic: the grid statistic (mean over cells; see the module docstring).
        p_value: one-sided p of the statistic over relabellings of the tasks.
        floor: the smallest p this test can give (``1/T!`` when exact).
        n_cells, n_tasks: the grid's size.
        n_permutations, exact: the relabellings used; all ``T!`` when ``exact``.
        scale: ``raw`` or ``z``.
    """

    statistic: float
    p_value: float
    floor: float
    n_cells: int
    n_tasks: int
    n_permutations: int
    exact: bool
    scale: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _centred(matrices: Sequence) -> np.ndarray:
    """The cells' double-centred matrices ``[cells, T, T]`` (one ``T`` for all)."""
    cells = [check_square(E) for E in matrices]
    if not cells:
        raise ValueError("a grid needs at least one effect matrix")
    if len({E.shape for E in cells}) != 1:
        raise ValueError(f"the cells' matrices differ in size: {sorted({E.shape for E in cells})}")
    return double_centre(np.stack(cells))


def joint_permutation_test(
    matrices: Sequence, scale: str = "raw", n_permutations: int = 10_000, seed: int = 0
) -> JointTestResult:
    """One relabelling of the tasks applied to every cell at once (see the module docstring).

    Args:
        matrices: the cells' effect matrices ``[T, T]`` (larger = more damage), one task order.
        scale: ``raw`` (mean of the cells' statistics, in their units) or ``z`` (each cell's
            statistic over its permutation standard deviation).
        n_permutations, seed: the Monte-Carlo relabellings when ``T > 7``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> grid = [np.eye(5) + rng.normal(0, 0.1, (5, 5)) for _ in range(3)]
        >>> res = joint_permutation_test(grid, scale="z")
        >>> res.p_value == res.floor == 1 / 120
        True
    """
    if scale not in ("raw", "z"):
        raise ValueError(f"scale must be 'raw' or 'z', got {scale!r}")
    D = _centred(matrices)  # [cells, T, T]
    C, T = D.shape[0], D.shape[1]
    perms, exact = task_orders(T, int(n_permutations), seed)  # [n, T]
    null = D[:, np.arange(T)[None, :], perms].mean(axis=2)  # [cells, n]
    observed = np.diagonal(D, axis1=1, axis2=2).mean(axis=1)  # [cells]
    if scale == "z":
        sd = null.std(axis=1)  # [cells]
        sd = np.where(sd > 0, sd, 1.0)
        null, observed = null / sd[:, None], observed / sd
    null_grid, stat = null.mean(axis=0), float(observed.mean())  # [n], scalar
    tol = 1e-12 * max(1.0, float(np.abs(null_grid).max()))
    hits = int((null_grid >= stat - tol).sum())
    n = len(perms)
    p = hits / n if exact else (1 + hits) / (1 + n)
    floor = 1 / n if exact else 1 / (1 + n)
    return JointTestResult(stat, float(p), float(floor), C, T, n, exact, scale)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    The ``r``-th smallest p (from 0) is multiplied by ``m - r``; the adjusted values are made
    monotone (a larger p never gets a smaller adjusted value) and capped at 1.

    Example:
        >>> holm([0.04, 0.01]).tolist()
        [0.04, 0.02]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError("p-values must be a list of numbers in [0, 1]")
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted
