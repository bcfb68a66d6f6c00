"""How well an estimated ranking of neurons agrees with the true one: pure functions.

Used to check relevance scores (a first-order estimate of ``|ΔL|``) against the loss change
that zeroing each neuron really causes (:mod:`~taskneurons.neurons.ablation_effects`), as
Kramár et al. (2024) bound attribution patching's false negatives.

Example:
    >>> spearman([1.0, 2.0, 3.0], [10.0, 30.0, 20.0])
    0.5
    >>> missed_share([4.0, 3.0, 2.0, 1.0], [1.0, 3.0, 2.0, 4.0], k=2)  # true top-2 {3, 1}
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import rankdata


def spearman(estimate: Sequence[float], true: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); ``nan`` with fewer than 3 pairs
    or a constant side (no ranking to compare)."""
    if len(estimate) != len(true):
        raise ValueError(f"estimate has {len(estimate)} values, true {len(true)}")
    if len(estimate) < 3:
        return math.nan
    a, b = rankdata(estimate), rankdata(true)
    ma, mb = a.mean(), b.mean()
    da, db = a - ma, b - mb
    den = math.sqrt(float((da * da).sum()) * float((db * db).sum()))
    return float((da * db).sum()) / den if den > 0 else math.nan


def top(values: Sequence[float], k: int) -> set[int]:
    """Positions of the ``k`` largest values (ties broken by the lower position)."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return set(order[:k])


def missed_share(estimate: Sequence[float], true: Sequence[float], k: int) -> float:
    """Share of the true top-``k`` that the estimate's top-``k`` leaves out, in ``[0, 1]``.

    Raises:
        ValueError: ``k`` outside ``[1, len(values)]`` or different lengths.
    """
    if len(estimate) != len(true):
        raise ValueError(f"estimate has {len(estimate)} values, true {len(true)}")
    if not 1 <= k <= len(true):
        raise ValueError(f"k must be in [1, {len(true)}], got {k}")
    return len(top(true, k) - top(estimate, k)) / k
