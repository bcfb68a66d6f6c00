"""Pure analyses of experiment results (no model): diagonal dominance and summaries.

Example:
    >>> diagonal_dominance({"a": {"a": 40, "b": 70}, "b": {"a": 45, "b": 60}}, {"a": 50, "b": 75})
    {'a': True, 'b': True}
"""

from __future__ import annotations

from taskneurons.report.comparison import Comparison


def diagonal_dominance(
    matrix: dict[str, dict[str, float]],
    original: dict[str, float],
    higher_is_better: bool = True,
) -> dict[str, bool]:
    """For each measured task j: is the largest drop in column j on the diagonal (i = j)?

    Args:
        matrix: ``matrix[i][j]``, task j's value with task i's neurons deactivated.
        original: task j's value with nothing deactivated.
        higher_is_better: ``True`` for accuracy / ROUGE-L; ``False`` for a loss such as the
            gold NLL, where the largest *rise* is the largest drop in quality.

    Example:
        >>> diagonal_dominance({"a": {"a": 40, "b": 70}, "b": {"a": 45, "b": 60}}, {"a": 50, "b": 75})
        {'a': True, 'b': True}
    """
    sign = 1.0 if higher_is_better else -1.0
    out = {}
    for j in original:
        drops = {i: sign * (original[j] - matrix[i][j]) for i in matrix}
        out[j] = max(drops, key=drops.get) == j
    return out


def deactivation_summary(table: Comparison, higher_is_better: bool = True) -> str:
    """Two lines on a deactivation table (rows Original / Deactivate-Random / Deactivate-Task).

    How many tasks lose more with their own neurons off than with as many random ones, and
    for how many the largest drop of their matrix column is on the diagonal.

    Example:
        >>> t = Comparison(["a", "b"], {"Original": {"a": 50, "b": 75},
        ...     "Deactivate-Random": {"a": 45, "b": 55}, "Deactivate-Task": {"a": 40, "b": 60}},
        ...     {"a": {"a": 40, "b": 70}, "b": {"a": 35, "b": 60}})
        >>> print(deactivation_summary(t))
        own neurons off hurt more than random ones: 1 of 2 (a)
        largest drop of a column on its diagonal: 1 of 2 (b)
    """
    sign = 1.0 if higher_is_better else -1.0
    original, rand, own = (table.row(r) for r in ROW_NAMES)
    names = table.names
    hurt = [n for n in names if sign * (own[n] - rand[n]) < 0]
    diag = diagonal_dominance(table.matrix or {}, original, higher_is_better)
    on_diag = [n for n in names if diag[n]]
    return (
        f"own neurons off hurt more than random ones: {len(hurt)} of {len(names)} "
        f"({', '.join(hurt) or 'none'})\n"
        f"largest drop of a column on its diagonal: {len(on_diag)} of {len(names)} "
        f"({', '.join(on_diag) or 'none'})"
    )


#: The rows of a deactivation table, in order.
ROW_NAMES = ("Original", "Deactivate-Random", "Deactivate-Task")
