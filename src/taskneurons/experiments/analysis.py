"""Pure analyses of experiment results (no model): diagonal dominance and summaries."""

from __future__ import annotations


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


def deactivation_summary(result: dict, higher_is_better: bool = True) -> str:
    """Two lines on a :func:`deactivation_experiment` result (or its ``"nll"`` part).

    How many tasks lose more with their own neurons off than with as many random ones, and
    for how many the largest drop of their matrix column is on the diagonal.
    """
    sign = 1.0 if higher_is_better else -1.0
    names = list(result["original"])
    own = [n for n in names if sign * (result["task"][n] - result["random"][n]) < 0]
    diag = diagonal_dominance(result["matrix"], result["original"], higher_is_better)
    on_diag = [n for n in names if diag[n]]
    return (
        f"own neurons off hurt more than random ones: {len(own)} of {len(names)} "
        f"({', '.join(own) or 'none'})\n"
        f"largest drop of a column on its diagonal: {len(on_diag)} of {len(names)} "
        f"({', '.join(on_diag) or 'none'})"
    )
