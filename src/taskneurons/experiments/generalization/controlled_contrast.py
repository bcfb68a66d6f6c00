"""Does the OOD score rise with overlap at a fixed number of trained neurons? One contrast per cell.

The controlled-overlap ablation (PAPER.md Tables 9–11) trains, per group, proportion ``p`` and
seed ``s``, sets of one size that differ only in how many of their neurons lie in the test
tasks' neurons. The paper reads "the score rises with overlap" off the table; this module gives
the statistic: per group and proportion, the *contrast* highest overlap − lowest overlap of
the OOD score, paired over test examples (every overlap is scored on the same examples; a
seed's sets are drawn nested across overlaps, so the seed pairs them too).

* **per seed**: the mean per-example difference, pooled over the group's OOD test tasks'
  examples, with its bootstrap interval (:func:`~taskneurons.analysis.paired.mean_difference`);
* **over seeds and examples**: :func:`~taskneurons.analysis.seed_intervals.combine_seeds`
  with ``shared_test=True`` (every seed is scored on the same test examples, so the
  test-example noise is added once to the between-seed variance); with one seed, that seed's
  interval;
* **p**: the sign-flip p of the seed-averaged per-example differences (test-example noise
  given these draws), Holm-adjusted across every (group, proportion) row read.

Example:
    >>> ex = {("a", 30.0, o, s, "t"): [100.0 * (o > 0), 0.0, 100.0, 0.0]
    ...       for o in (0.0, 100.0) for s in (0, 1)}
    >>> header, rows = overlap_contrast(ex, [("a", ["t"])], [30.0], [0.0, 100.0], [0, 1])
    >>> rows[0][header.index("contrast")]
    25.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from taskneurons.analysis.grid_test import holm
from taskneurons.analysis.paired import mean_difference
from taskneurons.analysis.seed_intervals import combine_seeds

#: per-example scores of one evaluation, keyed by (group, proportion, overlap, seed, task)
ExampleScores = Mapping[tuple[str, float, float, int, str], Sequence[float]]

HEADER = [
    "group", "proportion %", "low overlap %", "high overlap %", "seeds", "examples",
    "per-seed contrast", "contrast", "CI low", "CI high", "p", "p (Holm)",
]  # fmt: skip


def _pooled(
    examples: ExampleScores, key: tuple[str, float, float], seed: int, tests: Sequence[str]
) -> np.ndarray:
    """One evaluation's per-example scores, concatenated over the OOD test tasks: ``[n]``."""
    group, p, o = key
    return np.concatenate([np.asarray(examples[(group, p, o, seed, t)], float) for t in tests])


def _row(
    examples: ExampleScores, group: str, tests: Sequence[str], p: float,
    overlaps: Sequence[float], seeds: Sequence[int],
) -> list:  # fmt: skip
    """The contrast row of one (group, proportion), before the Holm column."""
    low, high = min(overlaps), max(overlaps)
    hi = np.stack([_pooled(examples, (group, p, high), s, tests) for s in seeds])  # [seeds, n]
    lo = np.stack([_pooled(examples, (group, p, low), s, tests) for s in seeds])  # [seeds, n]
    per_seed = [mean_difference(h, lo_s, seed=s) for h, lo_s, s in zip(hi, lo, seeds, strict=True)]
    if len(seeds) > 1:
        both = combine_seeds(
            [d.mean for d in per_seed], [(d.low, d.high) for d in per_seed], shared_test=True
        )
        mean, ci = both.mean, (both.lo, both.hi)
    else:
        mean, ci = per_seed[0].mean, (per_seed[0].low, per_seed[0].high)
    p_value = mean_difference(hi, lo).p_value  # seed-averaged per example
    spread = " / ".join(f"{d.mean:.2f}" for d in per_seed)
    return [group, p, low, high, len(seeds), hi.shape[1], spread, mean, *ci, p_value]


def overlap_contrast(
    examples: ExampleScores,
    groups: Sequence[tuple[str, Sequence[str]]],
    proportions: Sequence[float],
    overlaps: Sequence[float],
    seeds: Sequence[int],
) -> tuple[list[str], list[list]]:
    """A row per (group, proportion): OOD score at the highest minus the lowest overlap.

    Args:
        examples: every evaluation's per-example scores (accuracy 100/0 or ROUGE-L x 100).
        groups: ``(name, OOD test tasks)`` per group.
        proportions, overlaps, seeds: the cells that ran (at least two distinct overlaps).

    Raises:
        ValueError: fewer than two distinct overlaps; KeyError: an evaluation is missing.
    """
    if len(set(overlaps)) < 2:
        raise ValueError(f"a contrast needs two distinct overlaps, got {list(overlaps)}")
    rows = [
        _row(examples, name, tests, float(p), overlaps, seeds)
        for name, tests in groups
        for p in proportions
    ]
    adjusted = holm([r[-1] for r in rows])
    return list(HEADER), [[*r, float(a)] for r, a in zip(rows, adjusted, strict=True)]
