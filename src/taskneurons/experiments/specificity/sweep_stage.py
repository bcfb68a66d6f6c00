"""The ``sweep`` stage: deactivation over k x selection, from scores computed once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskneurons.config import Config
from taskneurons.experiments.knob_checks import check_count
from taskneurons.experiments.stage import Stage, register
from taskneurons.neurons.selection.percent import check_k
from taskneurons.neurons.selection.selection_config import SelectionConfig


@dataclass
class SweepConfig(Config):
    """The grid of a selection sweep (fixed in the experiment file before anything runs).

    Attributes:
        k: percentages of neurons per task.
        selections: selection methods (default: every registered one, ``topk``, ``specific``,
            ``contrastive``, ``lape``), each a name or a section of its own options
            (``{method: specific, m: 2}``); a name takes the ``detect.selection`` section when
            it names that method, else the method's defaults with its ``normalize``.
    """

    k: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
    selections: list[SelectionConfig | str] = field(default_factory=SelectionConfig.names)

    def validate(self) -> None:
        if not self.k:
            raise ValueError("k: an empty list sweeps nothing; give percentages, e.g. [1, 5, 10]")
        for k in self.k:
            check_k(k)
        if len(set(self.k)) != len(self.k):
            raise ValueError(f"k: a percentage is listed twice: {self.k}")
        known = SelectionConfig.names()
        names = [s if isinstance(s, str) else s.method for s in self.selections]
        unknown = [s for s in names if s not in known]
        if unknown or not self.selections:
            raise ValueError(
                f"selections must be a non-empty list of {tuple(known)} (got {self.selections})"
            )
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"selections: {twice} listed twice (a cell folder is <method>-k<k>)")

    def check_tasks(self, tasks: Sequence[Any], key: str = "sweep") -> None:
        """Every cell's deactivation matrix and specificity need two tasks or more."""
        check_count(tasks, key)

    def cells(self, selection: SelectionConfig) -> list[SelectionConfig]:
        """Each selection of the grid as a config (names completed from ``selection``)."""
        return [
            s if isinstance(s, SelectionConfig) else selection.with_method(s)
            for s in self.selections
        ]


#: what the stage writes, for the run README
FILES = """
    sweep: one row per (selection, k): set size, overlap, specificity by accuracy and NLL
    specificity_vs_k: specificity statistic vs k, one line per selection (accuracy)
    specificity_vs_k_nll: specificity statistic vs k, one line per selection (gold NLL)
"""

STAGE = register(Stage(
    name="sweep", config=SweepConfig, order=40, uses=("detect", "deactivate"),
    run=".sweep:run_sweep", result=".sweep:SweepResult", files=FILES, extends=("k", "selections"),
    title="deactivation over k x selection from scores computed once (where specificity lives)",
))  # fmt: skip
