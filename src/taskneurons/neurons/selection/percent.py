"""The share ``k`` of neurons a selection keeps: checked as a percentage, turned into a count.

No torch here: configs check ``k`` with :func:`check_k` when the command line reads them.

Example:
    >>> check_k(10), count_for(10, 46080)
    (10.0, 4608)
"""

from __future__ import annotations

import math


def check_k(k: float) -> float:
    """``k`` as a float percentage; ``ValueError`` unless it is a number in ``(0, 100]``.

    Example:
        >>> check_k(10), check_k("2.5")
        (10.0, 2.5)
    """
    try:
        kf = float(k)
    except (TypeError, ValueError):
        raise ValueError(f"k must be a percentage in (0, 100], got {k!r}") from None
    if not (0.0 < kf <= 100.0):  # also rejects nan
        raise ValueError(f"k must be a percentage in (0, 100], got {k!r}")
    return kf


def count_for(k: float, n: int) -> int:
    """How many of ``n`` neurons the top ``k`` % keeps: ``round(k / 100 * n)``, at least 1.

    Rounds half up (``2.5 -> 3``), so the count does not depend on Python's banker's rounding.

    Example:
        >>> count_for(10, 46080), count_for(1, 30), count_for(50, 5)
        (4608, 1, 3)
    """
    kf = check_k(k)
    return max(1, min(n, math.floor(kf / 100.0 * n + 0.5)))


__all__ = ["check_k", "count_for"]
