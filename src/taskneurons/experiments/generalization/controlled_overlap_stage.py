"""The ``controlled_overlap`` stage: a fixed number of trained neurons, chosen overlap (Tables
9-11).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskneurons.config import Config
from taskneurons.config_fields import test_examples, train_examples
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.generalization.generalization_stage import check_neuron_training
from taskneurons.experiments.generalization.groups import (
    GroupsConfig,
    ProportionOf,
    TaskGroup,
    check_percents,
    default_groups,
)
from taskneurons.experiments.stage import Stage, register
from taskneurons.training.train_config import TrainConfig


@dataclass
class ControlledOverlapConfig(GroupsConfig, Config):
    """Knobs of the controlled-overlap ablation (PAPER.md Tables 9–11).

    Attributes:
        groups: the task groups (default PAPER.md Table 3).
        proportions: fix ``N`` = size of the union of the training tasks' top-``p`` % sets.
        proportion_of: ``model`` (the paper's: top ``p`` % of all neurons under the selection)
            or ``set`` (top ``p`` % of each task's set at the detect ``k``).
        overlaps: % of the ``N`` trained neurons drawn from the target, in ``[0, 100]``.
        seeds: one random draw (and training run) per seed and cell.
        target_proportion: the target is the union of the test tasks' top-``q`` % (read as
            ``proportion_of`` says); ``None``: their whole sets at the detect ``k``.
        in_domain: also score the training tasks.
        n_train, n_test, seed: data subsets (label-stratified, seeded; ``None``: all).
        save_runs: keep each training run's files under ``runs/``.
        train: the training knobs (method ``neurons``); eval: how tasks are scored.
    """

    groups: list[TaskGroup] = field(default_factory=default_groups)
    proportions: list[float] = field(default_factory=lambda: [30.0, 50.0])
    proportion_of: ProportionOf = "model"
    overlaps: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    target_proportion: float | None = None
    in_domain: bool = False
    n_train: int | None = train_examples(512)
    n_test: int | None = test_examples(200)
    seed: int = 0
    save_runs: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        check_percents(self.proportions, "proportions")
        check_percents(self.overlaps, "overlaps", low_open=False)
        if self.target_proportion is not None:
            check_percents([self.target_proportion], "target_proportion")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: give distinct seeds, got {self.seeds}")
        if not self.groups:
            raise ValueError("groups: give at least one group")
        check_neuron_training(self.train)


#: what the stage writes, for the run README
FILES = """
    controlled_overlap_config.json: controlled-overlap knobs, seeds and provenance
    controlled_overlap: a row per group, proportion and overlap: sizes, overlaps, OOD mean ± std over seeds
    controlled_scores: every evaluation (group, proportion, overlap, seed, task, score)
    controlled_overlap_*: score vs overlap at fixed size, mean ± std over seeds
    controlled_contrast: OOD at the highest minus the lowest overlap, CI over seeds and examples, Holm p
"""

STAGE = register(Stage(
    name="controlled_overlap", config=ControlledOverlapConfig, order=100, uses=("detect",),
    run=".controlled_overlap:run_controlled_overlap",
    result=".controlled_overlap:ControlledOverlapResult", files=FILES,
    title="fixed number of trained neurons, chosen overlap with the test tasks' (Tables 9-11)",
))  # fmt: skip
