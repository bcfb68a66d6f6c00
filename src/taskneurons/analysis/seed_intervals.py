"""An estimate repeated over seeds, and one interval for it over seeds *and* test examples.

A run repeated with several seeds (the fine-tuning data order, the scoring subset, the random
control sets, the test subset: whatever the seed draws upstream) gives one estimate per seed,
each with its own interval over test examples. :func:`combine_seeds` reports their mean and an
interval that holds both sources of variation:

* **between seeds**: the sample variance ``s²`` of the per-seed estimates; the mean of ``S`` of
  them has variance ``s² / S``;
* **within a seed** (test examples): each seed's standard error, read from its interval as
  ``(hi - lo) / (2 z)``. When every seed draws its own test examples this noise is already in
  ``s²`` (each estimate carries its own) and nothing is added. When the seeds share the same
  test examples (``shared_test``) it is common to all seeds, does not average out and does not
  show in ``s²``, so the mean of the squared standard errors is added once.

The interval is ``mean ± t(S-1) · sqrt(s²/S [+ mean se²])`` (Student's t with ``S - 1`` degrees
of freedom: with 3 seeds ``t = 4.30``, so three seeds give honest but wide intervals).

Example:
    >>> res = combine_seeds([1.0, 2.0, 3.0])
    >>> res.mean, round(res.half_width, 3)
    (2.0, 2.484)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class SeedInterval:
    """The mean over seeds of an estimate and its interval (see the module docstring).

    Attributes:
        mean: mean of the per-seed estimates.
        lo, hi: the interval at ``level``.
        between_sd: standard deviation of the per-seed estimates (``ddof=1``).
        within_se: root mean square of the per-seed standard errors (0 without intervals).
        n_seeds: how many estimates.
        shared_test: whether the within-seed noise was added (the seeds share test examples).
    """

    mean: float
    lo: float
    hi: float
    between_sd: float
    within_se: float
    n_seeds: int
    shared_test: bool

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def to_dict(self) -> dict:
        return asdict(self)


def combine_seeds(
    estimates: Sequence[float],
    intervals: Sequence[tuple[float, float] | None] | None = None,
    shared_test: bool = False,
    level: float = 0.95,
) -> SeedInterval:
    """Mean of ``estimates`` (one per seed) with an interval over seeds and test examples.

    Args:
        estimates: the per-seed estimates (at least 2).
        intervals: each seed's interval over test examples at ``level`` (``None`` entries, or
            no list: no within-seed term).
        shared_test: the seeds share their test examples (adds the within-seed term).
        level: the coverage of the given intervals and of the result.

    Raises:
        ValueError: fewer than 2 estimates, a non-finite one, or intervals of another length.

    Example:
        >>> combine_seeds([1.0, 3.0], [(0.0, 2.0), (2.0, 4.0)], shared_test=True).within_se > 0
        True
    """
    x = np.asarray(estimates, dtype=float)  # [seeds]
    if x.size < 2:
        raise ValueError(f"combining seeds needs at least 2 estimates, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"every estimate must be finite, got {x.tolist()}")
    if intervals is not None and len(intervals) != x.size:
        raise ValueError(f"{len(intervals)} intervals for {x.size} estimates")
    z = stats.norm.ppf(0.5 + level / 2)
    ses = [(hi - lo) / (2 * z) for lo, hi in (c for c in intervals or () if c is not None)]
    within = math.sqrt(float(np.mean(np.square(ses)))) if ses else 0.0
    between = float(x.std(ddof=1))
    var = between**2 / x.size + (within**2 if shared_test else 0.0)
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * math.sqrt(var)
    mean = float(x.mean())
    return SeedInterval(mean, mean - half, mean + half, between, within, int(x.size), shared_test)
