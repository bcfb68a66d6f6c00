"""The ``overlap`` stage: overlap of training and test tasks' neurons per proportion (Table 8)."""

from __future__ import annotations

from dataclasses import dataclass, field

from taskneurons.config import Config
from taskneurons.experiments.generalization.groups import (
    GroupsConfig,
    ProportionOf,
    TaskGroup,
    check_percents,
    default_groups,
)
from taskneurons.experiments.stage import Stage, register

#: The proportions of PAPER.md Figure 2 and Table 8, in % of each task's set.
PAPER_PROPORTIONS = [10.0, 30.0, 50.0, 70.0, 100.0]


@dataclass
class OverlapConfig(GroupsConfig, Config):
    """Knobs of the overlap analysis (PAPER.md Table 8).

    Attributes:
        groups: the task groups (default PAPER.md Table 3).
        proportions: percentages of each task's set, in ``(0, 100]``.
        proportion_of: ``model`` (the paper's: top ``p`` % of all neurons under the selection)
            or ``set`` (top ``p`` % of each task's set at the detect ``k``).
    """

    groups: list[TaskGroup] = field(default_factory=default_groups)
    proportions: list[float] = field(default_factory=lambda: list(PAPER_PROPORTIONS))
    proportion_of: ProportionOf = "model"

    def validate(self) -> None:
        check_percents(self.proportions, "proportions")
        if not self.groups:
            raise ValueError("groups: give at least one group")


#: what the stage writes, for the run README
FILES = """
    overlap: overlap rate of training and test tasks' neurons per proportion (Table 8)
    overlap_vs_proportion: overlap rate vs proportion (Table 8 as a plot)
    overlap_config.json: overlap knobs and provenance
    pairwise/: pairwise IoU matrices of the tasks' sets per proportion
"""

STAGE = register(Stage(
    name="overlap", config=OverlapConfig, order=80, uses=("detect",),
    run=".overlap:run_overlap", result=".overlap:OverlapResult", files=FILES,
    title="overlap of training and test tasks' neurons at each proportion (Table 8)",
))  # fmt: skip
