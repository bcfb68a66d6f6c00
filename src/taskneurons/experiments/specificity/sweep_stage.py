"""The ``sweep`` stage: deactivation over k x selection, from scores computed once."""

from __future__ import annotations

from dataclasses import dataclass, field

from taskneurons.config import Config
from taskneurons.experiments.stage import Stage, register
from taskneurons.neurons.multitask_selection import METHODS as SELECTION_METHODS
from taskneurons.neurons.selection import check_k


@dataclass
class SweepConfig(Config):
    """The grid of a selection sweep (fixed in the experiment file before anything runs).

    Attributes:
        k: percentages of neurons per task.
        selections: selection methods (``topk``, ``specific``, ``contrastive``, ``lape``);
            their options come from the ``detect.selection`` section.
    """

    k: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
    selections: list[str] = field(default_factory=lambda: list(SELECTION_METHODS))

    def validate(self) -> None:
        for k in self.k:
            check_k(k)
        unknown = [s for s in self.selections if s not in SELECTION_METHODS]
        if unknown or not self.selections or not self.k:
            raise ValueError(
                f"selections must be a non-empty list of {SELECTION_METHODS} (got "
                f"{self.selections}) and k a non-empty list"
            )


STAGE = register(
    Stage(
        name="sweep",
        config=SweepConfig,
        run="taskneurons.experiments.specificity.sweep:run_sweep",
        result="taskneurons.experiments.specificity.sweep:SweepResult",
        title="deactivation over k x selection from scores computed once (where specificity lives)",
        order=40,
        uses=("detect", "deactivate"),
        files={
            "sweep": "one row per (selection, k): set size, overlap, specificity by accuracy and NLL",
            "specificity_vs_k": "specificity statistic vs k, one line per selection (accuracy)",
            "specificity_vs_k_nll": "specificity statistic vs k, one line per selection (gold NLL)",
        },
    )
)
