"""Pure analyses of experiment results (numpy/scipy only; no model, no I/O).

* :mod:`taskneurons.analysis.specificity` — is a task x task effect matrix diagonal?
* :mod:`taskneurons.analysis.continual_metrics` — CL, FG_j, BWT, FWT of an accuracy matrix.
"""

from __future__ import annotations

from taskneurons.analysis.specificity import (
    BootstrapResult,
    Dominance,
    PermutationResult,
    bootstrap,
    diagonal_statistic,
    dominance,
    double_centre,
    effects,
    permutation_test,
    summarize,
)

__all__ = [
    "BootstrapResult",
    "Dominance",
    "PermutationResult",
    "bootstrap",
    "diagonal_statistic",
    "dominance",
    "double_centre",
    "effects",
    "permutation_test",
    "summarize",
]
