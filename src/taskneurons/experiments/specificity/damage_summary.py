"""Pure analyses of experiment results (no model): diagonal dominance and summaries.

Example:
    >>> diagonal_dominance({"a": {"a": 40, "b": 70}, "b": {"a": 45, "b": 60}}, {"a": 50, "b": 75})
    {'a': True, 'b': True}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from taskneurons.analysis.specificity import (
    bootstrap,
    dominance,
    effects,
    permutation_test,
    summarize,
)
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


#: The rows of a deactivation table, in order, and the optional control rows after them.
ROW_NAMES = ("Original", "Deactivate-Random", "Deactivate-Task")
EXTRA_ROWS = ("Deactivate-Others", "Deactivate-General")


@dataclass
class Specificity:
    """How task-specific a deactivation matrix is, with its uncertainty.

    Attributes:
        readout: ``"score"`` (accuracy % / ROUGE-L; effect = drop) or ``"nll"`` (gold-label
            NLL in nats; effect = rise).
        effects: ``E[i][j]``, the damage to task j from deactivating task i's neurons.
        statistic: the mean double-centred diagonal of ``E`` (0 when nothing is specific).
        ci: its bootstrap percentile interval over test examples (``None`` without examples).
        p_value: one-sided permutation p-value of ``statistic`` (exact for up to 7 tasks).
        rows, columns: tasks whose row / column of ``E`` peaks on the diagonal.
        summary: one line in plain language.
    """

    readout: str
    effects: list[list[float]]
    statistic: float
    ci: tuple[float, float] | None
    p_value: float
    rows: list[str]
    columns: list[str]
    summary: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Specificity:
        """The inverse of :meth:`to_dict` (as JSON reads it back: ``ci`` a pair again)."""
        ci = data.get("ci")
        return cls(**{**data, "ci": None if ci is None else (ci[0], ci[1])})


@dataclass(frozen=True)
class Resampling:
    """How the specificity statistics resample: bootstrap draws of the test examples (the
    interval), permutations of the tasks (the p-value), and their seed.

    Example:
        >>> Resampling(n_boot=200).n_permutations
        10000
    """

    n_boot: int = 1000
    n_permutations: int = 10_000
    seed: int = 0

    @classmethod
    def of(cls, config: Any) -> Resampling:
        """The ``n_boot``, ``n_permutations`` and ``seed`` of a stage's config
        (``DeactivateConfig``, ``CrossTrainingConfig``)."""
        return cls(config.n_boot, config.n_permutations, config.seed)


def specificity(
    table: Comparison,
    per_example: dict[str, dict[str, list[float]]] | None = None,
    baseline: dict[str, list[float]] | None = None,
    readout: str = "score",
    resampling: Resampling | None = None,
    baseline_row: str = "Original",
    direction: str | None = None,
) -> Specificity:
    """Specificity statistics of a deactivation table (rows Original / ... and its matrix).

    Args:
        table: the deactivation :class:`Comparison` (its ``matrix[i][j]`` and ``Original``).
        per_example: ``[i][j]`` -> task j's per-example values with task i's neurons off, for
            bootstrap intervals over the test examples (``None``: no interval).
        baseline: ``[j]`` -> task j's per-example values with nothing off.
        readout: ``"score"`` (higher is better; effect = drop) or ``"nll"`` (effect = rise).
        resampling: bootstrap resamples, permutations and their seed (default
            :class:`Resampling`: 1000, 10 000, 0).
        baseline_row: the row of ``table`` the effects are taken against.
        direction: ``"drop"`` or ``"rise"`` (see :func:`effects`); ``None``: from ``readout``
            (a training experiment, whose effect is a gain in score, passes ``"rise"``).

    Example:
        >>> t = Comparison(["a", "b"], {"Original": {"a": 80, "b": 70}},
        ...                {"a": {"a": 50, "b": 70}, "b": {"a": 80, "b": 40}})
        >>> specificity(t).rows
        ['a', 'b']
        >>> specificity(t, resampling=Resampling(n_permutations=100, seed=1)).p_value
        0.5
    """
    rs = resampling if resampling is not None else Resampling()
    names = table.names
    if direction is None:
        direction = "drop" if readout == "score" else "rise"
    values = [[table.matrix[i][j] for j in names] for i in names]  # [i, j]
    E = effects(values, [table.row(baseline_row)[j] for j in names], direction)
    ci = None
    if per_example is not None and baseline is not None:
        cols = [np.array([per_example[i][j] for i in names]) for j in names]  # [i, n_j] each
        base = [np.array(baseline[j]) for j in names]  # [n_j] each
        boot = bootstrap(cols, base, direction=direction, n_boot=rs.n_boot, seed=rs.seed)
        ci = boot
    perm = permutation_test(E, rs.n_permutations, rs.seed)
    dom = dominance(E, names)
    return Specificity(
        readout=readout,
        effects=E.tolist(),
        statistic=float(perm.statistic),
        ci=None if ci is None else tuple(float(x) for x in ci.statistic_ci),
        p_value=float(perm.p_value),
        rows=list(dom.row_tasks),
        columns=list(dom.column_tasks),
        summary=summarize(E, names, ci=ci, n_permutations=rs.n_permutations, seed=rs.seed),
    )
