"""Paired differences over test examples: mean, percentile bootstrap CI, sign-flip p-value.

Two conditions scored on the same test examples (e.g. a model whose task neurons were trained
vs the same model with as many random neurons trained) differ example by example; the
comparison resamples those paired differences, so the interval reflects which examples the
test set happened to hold. Several runs of one condition (random sets drawn with different
seeds) are averaged per example first, so their spread enters through the per-example means.

Example:
    >>> d = mean_difference([1.0, 1.0, 0.0, 1.0], [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    >>> d.mean, d.n
    (0.5, 4)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MeanDifference:
    """``mean`` of ``x - y`` per example with its ``level`` bootstrap CI ``(low, high)``.

    ``p_value`` is the two-sided sign-flip permutation p-value of ``mean != 0`` (each paired
    difference's sign flipped at random, ``n_perm`` draws, the observed one counted).
    Units are those of the inputs (accuracy points x 100, ROUGE-L, nats).
    """

    mean: float
    low: float
    high: float
    p_value: float
    n: int
    level: float
    n_boot: int
    seed: int

    def excludes_zero(self) -> bool:
        """``True`` when the whole interval lies on one side of 0."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_example(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 2:  # [runs, n]: several runs of the condition, averaged per example
        arr = arr.mean(axis=0)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}: expected [n] or [runs, n] values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: values must be finite")
    return arr


def mean_difference(
    x,
    y,
    *,
    n_boot: int = 2000,
    n_perm: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> MeanDifference:
    """Mean per-example difference ``x - y`` with a bootstrap CI and a sign-flip p-value.

    Args:
        x: ``[n]`` (or ``[runs, n]``, averaged over runs) per-example scores of condition x.
        y: ``[n]`` or ``[runs, n]`` scores of condition y on the same ``n`` examples.
        n_boot, n_perm: bootstrap resamples and sign-flip draws.
        level: CI coverage (0.95: the 2.5 and 97.5 percentiles).
        seed: seed of ``numpy.random.default_rng`` (both resampling schemes).

    Example:
        >>> mean_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).p_value
        1.0
    """
    a, b = _per_example(x, "x"), _per_example(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y need the same examples: {a.size} vs {b.size}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if n_boot < 1 or n_perm < 1:
        raise ValueError("n_boot and n_perm must be >= 1")
    d = a - b  # [n]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    boot = d[idx].mean(axis=1)  # [n_boot]
    low, high = np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    signs = rng.choice([-1.0, 1.0], size=(n_perm, d.size))
    flipped = np.abs((signs * d).mean(axis=1))  # [n_perm]
    observed = abs(d.mean())
    p = (1 + np.count_nonzero(flipped >= observed - 1e-12)) / (n_perm + 1)
    return MeanDifference(
        mean=float(d.mean()),
        low=float(low),
        high=float(high),
        p_value=float(min(1.0, p)),
        n=int(d.size),
        level=level,
        n_boot=n_boot,
        seed=seed,
    )
