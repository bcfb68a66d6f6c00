"""Is a task x task effect matrix diagonal? Pure statistics (numpy only).

``E[i, j]`` is the effect on task ``j`` of intervening on task ``i``'s neurons, oriented so
that larger = more damage (for accuracy the drop, for NLL the rise; see :func:`effects`).
Task-specific neurons make the diagonal stand out; neurons that are merely important damage
every column alike. The statistics:

* :func:`dominance` — is ``E[i, i]`` the largest of row ``i`` (of column ``i``)? (PAPER.md:
  "the diagonal dominates its row and column").
* :func:`double_centre` / :func:`diagonal_statistic` — ``D = E - row means - column means +
  grand mean`` removes "task i's neurons are important" (row) and "task j is fragile"
  (column); the statistic is ``mean(diag(D))`` (0 when the diagonal is like any other cell).
* :func:`permutation_test` — one-sided p-value of that statistic against shuffled column
  labels (exactly over all ``T!`` orders when ``T`` is small).
* :func:`bootstrap` — percentile confidence intervals over test examples.
* :func:`summarize` — one line of plain language.

Example:
    >>> E = np.array([[3.0, 1, 0], [1, 4, 1], [0, 2, 5]])
    >>> round(diagonal_statistic(E), 3), permutation_test(E).p_value
    (2.111, 0.16666666666666666)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: Up to this many tasks the permutation test enumerates all T! column orders.
EXACT_MAX_TASKS = 7


def check_square(E) -> np.ndarray:
    """``E`` as a float64 ``[T, T]`` array, ``T >= 2``, all finite; ``ValueError`` otherwise."""
    E = np.asarray(E, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] != E.shape[1] or E.shape[0] < 2:
        raise ValueError(f"effect matrix must be square [T, T] with T >= 2, got {E.shape}")
    if not np.isfinite(E).all():
        raise ValueError("effect matrix contains nan or inf")
    return E


def _names(tasks: Sequence[str] | None, n: int) -> list[str]:
    names = [str(t) for t in tasks] if tasks is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} task names for a {n} x {n} matrix")
    return names


def effects(values, baseline, direction: str = "rise") -> np.ndarray:
    """Effects oriented so larger = more damage: ``values - baseline`` or ``baseline - values``.

    Args:
        values: metric under intervention, ``[i, j]`` or ``[i, j, examples]``.
        baseline: metric without intervention, ``[j]`` or ``[j, examples]``.
        direction: ``"rise"`` (NLL: damage raises it) or ``"drop"`` (accuracy, ROUGE).

    Example:
        >>> effects([[0.5, 0.8], [0.9, 0.6]], [0.9, 0.9], "drop").round(2).tolist()
        [[0.4, 0.1], [0.0, 0.3]]
    """
    v = np.asarray(values, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)[None]  # [1, j(, examples)]
    if direction == "rise":
        return v - b
    if direction == "drop":
        return b - v
    raise ValueError(f"direction must be 'rise' or 'drop', got {direction!r}")


@dataclass
class Dominance:
    """Which diagonal entries are the strict maximum of their row and of their column.

    Attributes:
        rows, columns: bool ``[T]``: ``E[i, i] > E[i, j]`` for all ``j != i`` (resp.
            ``E[j, j] > E[i, j]`` for all ``i != j``); ties do not dominate.
        row_tasks, column_tasks: the names of the dominant rows / columns.
    """

    rows: np.ndarray
    columns: np.ndarray
    row_tasks: list[str]
    column_tasks: list[str]

    @property
    def n_rows(self) -> int:
        return int(self.rows.sum())

    @property
    def n_columns(self) -> int:
        return int(self.columns.sum())


def dominance(E, tasks: Sequence[str] | None = None) -> Dominance:
    """Row and column dominance of the diagonal of ``E`` ``[T, T]``.

    Example:
        >>> d = dominance([[3.0, 1, 0], [5, 4, 1], [0, 2, 5]], ["a", "b", "c"])
        >>> d.rows.tolist(), d.column_tasks
        ([True, False, True], ['b', 'c'])
    """
    E = check_square(E)
    names = _names(tasks, len(E))
    diag = np.diag(E)  # [T]
    off = E.copy()
    np.fill_diagonal(off, -np.inf)
    rows = diag > off.max(axis=1)  # [T]
    cols = diag > off.max(axis=0)  # [T]
    return Dominance(
        rows,
        cols,
        [n for n, r in zip(names, rows, strict=True) if r],
        [n for n, c in zip(names, cols, strict=True) if c],
    )


def double_centre(E) -> np.ndarray:
    """``D = E - row means - column means + grand mean``, ``[T, T]`` (rows and columns sum to 0).

    Example:
        >>> double_centre([[1.0, 0], [0, 1]]).tolist()
        [[0.5, -0.5], [-0.5, 0.5]]
    """
    E = np.asarray(E, dtype=np.float64)
    return (
        E
        - E.mean(axis=-1, keepdims=True)
        - E.mean(axis=-2, keepdims=True)
        + E.mean(axis=(-2, -1), keepdims=True)
    )


def diagonal_statistic(E) -> float | np.ndarray:
    """Mean of the double-centred diagonal; also works on a stack ``[..., T, T]`` -> ``[...]``.

    In the units of ``E`` (e.g. nats, accuracy points): how much more the diagonal cell is
    damaged than its row's and column's averages predict. 0 when nothing is task-specific.

    Example:
        >>> diagonal_statistic([[2.0, 1], [1, 2]])
        0.5
    """
    D = double_centre(E)
    out = np.diagonal(D, axis1=-2, axis2=-1).mean(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


@dataclass
class PermutationResult:
    """``statistic`` (mean double-centred diagonal), one-sided ``p_value`` (diagonal larger
    than chance), how many column orders were used and whether that was all ``T!``."""

    statistic: float
    p_value: float
    n_permutations: int
    exact: bool


def task_orders(T: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """Column orders ``[n, T]``: all ``T!`` when ``T <= EXACT_MAX_TASKS`` (or ``T!`` is at most
    ``n_permutations``), else ``n_permutations`` random ones from ``default_rng(seed)``."""
    if T <= EXACT_MAX_TASKS or math.factorial(T) <= n_permutations:
        return np.array(list(itertools.permutations(range(T))), dtype=np.int64), True
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(T), (n_permutations, 1)), axis=1), False


def permutation_test(E, n_permutations: int = 10_000, seed: int = 0) -> PermutationResult:
    """One-sided permutation p-value of :func:`diagonal_statistic`.

    Null: the column labels are exchangeable relative to the rows. Reordering the columns by
    ``pi`` double-centres to ``D[:, pi]`` (centring commutes with permuting), so each order's
    statistic is ``mean_i D[i, pi(i)]``, computed for all orders at once. Exact (all ``T!``
    orders, identity included): ``p = #{stat_pi >= stat} / T!``; smallest possible ``1/T!``
    (``1/6`` for 3 tasks, ``1/24`` for 4). Monte-Carlo (``T > 7``): ``p = (1 + #{stat_pi >=
    stat}) / (1 + n_permutations)``, random orders from ``numpy.random.default_rng(seed)``.

    Example:
        >>> permutation_test(np.eye(4)).p_value  # only the identity order reaches 1.0
        0.041666666666666664
    """
    E = check_square(E)
    D = double_centre(E)
    stat = float(np.diag(D).mean())
    perms, exact = task_orders(len(E), int(n_permutations), seed)  # [n, T]
    null = D[np.arange(len(E))[None, :], perms].mean(axis=1)  # [n]
    tol = 1e-12 * max(1.0, float(np.abs(D).max()))
    hits = int((null >= stat - tol).sum())
    p = hits / len(perms) if exact else (1 + hits) / (1 + len(perms))
    return PermutationResult(stat, float(p), int(len(perms)), exact)


@dataclass
class BootstrapResult:
    """Percentile bootstrap over test examples.

    Attributes:
        E: point estimate ``[T, T]`` (mean effect over each column's examples).
        statistic: :func:`diagonal_statistic` of ``E``.
        statistic_ci: ``(low, high)`` of the statistic.
        E_low, E_high: ``[T, T]`` bounds of each cell.
        level, n_boot, seed: the interval's coverage, resamples and seed.
    """

    E: np.ndarray
    statistic: float
    statistic_ci: tuple[float, float]
    E_low: np.ndarray
    E_high: np.ndarray
    level: float
    n_boot: int
    seed: int
    samples: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


def _columns(per_example, baseline, direction: str | None) -> list[np.ndarray]:
    """Per column ``j`` the effects ``[T, n_j]`` (rows = intervened tasks, finite only)."""
    if isinstance(per_example, np.ndarray) or not isinstance(per_example, Sequence):
        arr = np.asarray(per_example, dtype=np.float64)  # [T, T, n]
        if arr.ndim != 3 or arr.shape[0] != arr.shape[1]:
            raise ValueError(f"per-example effects must be [T, T, examples], got {arr.shape}")
        cols = [arr[:, j, :] for j in range(arr.shape[1])]
    else:
        cols = [np.asarray(c, dtype=np.float64) for c in per_example]  # T x [T, n_j]
    if baseline is not None:
        base = [np.asarray(b, dtype=np.float64) for b in baseline]  # T x [n_j]
        cols = [effects(c, b, direction or "rise") for c, b in zip(cols, base, strict=True)]
    out = []
    for j, c in enumerate(cols):
        if c.ndim != 2 or c.shape[0] != len(cols):
            raise ValueError(f"column {j}: effects must be [T={len(cols)}, n], got {c.shape}")
        keep = np.isfinite(c).all(axis=0)  # [n_j]: nan pads a column with fewer examples
        if not keep.any():
            raise ValueError(f"column {j} has no finite examples")
        out.append(c[:, keep])
    return out


def bootstrap(
    per_example,
    baseline=None,
    *,
    direction: str | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile CIs of the diagonal statistic and of every ``E[i, j]``, resampling examples.

    For each column ``j`` (a test task) its ``n_j`` examples are drawn with replacement, the
    same indices for every row ``i`` (the rows are interventions on the same examples), with
    ``numpy.random.default_rng(seed)``; ``E*[i, j]`` is the mean effect of the resample.

    Args:
        per_example: ``[T, T, n]`` array (nan-padded where a column has fewer examples) or a
            list of ``T`` arrays ``[T, n_j]`` (column ``j``): per-example effects, or, with
            ``baseline``, per-example metric values under intervention.
        baseline: per-example metric without intervention, ``[T, n]`` or ``T`` x ``[n_j]``;
            ``None`` when ``per_example`` already holds effects.
        direction: with ``baseline``: ``"rise"`` (NLL) or ``"drop"`` (accuracy); see
            :func:`effects`.
        n_boot, level, seed: resamples, coverage (0.95: the 2.5 and 97.5 percentiles), seed.

    Example:
        >>> r = bootstrap(np.ones((2, 2, 5)) + np.eye(2)[..., None])
        >>> r.statistic, r.statistic_ci
        (0.5, (0.5, 0.5))
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    cols = _columns(per_example, baseline, direction)
    T = len(cols)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, T, T))  # [B, i, j]
    for j, c in enumerate(cols):
        idx = rng.integers(0, c.shape[1], size=(n_boot, c.shape[1]))  # [B, n_j]
        for lo in range(0, n_boot, 256):  # c[:, idx]: [T, <=256, n_j] at a time
            boot[lo : lo + 256, :, j] = c[:, idx[lo : lo + 256]].mean(axis=2).T
    E = np.stack([c.mean(axis=1) for c in cols], axis=1)  # [i, j]
    stats = diagonal_statistic(boot)  # [B]
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    lo, hi = np.percentile(stats, [lo_q, hi_q])
    return BootstrapResult(
        E=E,
        statistic=float(diagonal_statistic(E)),
        statistic_ci=(float(lo), float(hi)),
        E_low=np.percentile(boot, lo_q, axis=0),
        E_high=np.percentile(boot, hi_q, axis=0),
        level=level,
        n_boot=n_boot,
        seed=seed,
        samples=stats,
    )


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def summarize(
    E,
    tasks: Sequence[str] | None = None,
    *,
    ci: BootstrapResult | None = None,
    alpha: float = 0.05,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> str:
    """One line of plain language on whether ``E``'s diagonal exceeds chance.

    Example:
        >>> summarize([[3.0, 1, 0], [1, 4, 1], [0, 2, 5]])
        'diagonal not above chance at the 0.05 level: mean double-centred diagonal 2.11, p = 0.167 (exact, 6 orders); rows 3/3, columns 3/3'
    """
    E = check_square(E)
    perm = permutation_test(E, n_permutations, seed)
    dom = dominance(E, tasks)
    verdict = (
        "diagonal exceeds chance"
        if perm.p_value < alpha
        else (f"diagonal not above chance at the {alpha:g} level")
    )
    interval = ""
    if ci is not None:
        lo, hi = ci.statistic_ci
        interval = f" ({round(100 * ci.level):d}% CI {_fmt(lo)}..{_fmt(hi)})"
    how = "exact" if perm.exact else "Monte-Carlo"
    return (
        f"{verdict}: mean double-centred diagonal {_fmt(perm.statistic)}{interval}, "
        f"p = {perm.p_value:.3g} ({how}, {perm.n_permutations} orders); "
        f"rows {dom.n_rows}/{len(E)}, columns {dom.n_columns}/{len(E)}"
    )
