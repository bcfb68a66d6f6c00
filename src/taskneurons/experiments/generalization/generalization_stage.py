"""The ``generalization`` stage: train the groups' neurons per proportion; ID and OOD scores
(Figure 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskneurons.config import Config
from taskneurons.config_fields import test_examples, train_examples
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.generalization.groups import (
    GroupsConfig,
    ProportionOf,
    TaskGroup,
    check_percents,
    default_groups,
)
from taskneurons.experiments.generalization.overlap_stage import PAPER_PROPORTIONS
from taskneurons.experiments.stage import Stage, register
from taskneurons.training.train_config import TrainConfig

MODES: tuple[str, ...] = ("joint", "single")


SINGLE_NEURONS: tuple[str, ...] = ("union", "own")


@dataclass
class GeneralizationConfig(GroupsConfig, Config):
    """Knobs of the proportion sweep (PAPER.md Figure 2).

    Attributes:
        groups: the task groups (default PAPER.md Table 3).
        proportions: percentages of each training task's set to train, in ``(0, 100]``.
        proportion_of: ``model`` (the paper's: top ``p`` % of all neurons under the selection)
            or ``set`` (top ``p`` % of each task's set at the detect ``k``).
        modes: ``joint`` (one model per group) and/or ``single`` (one model per task).
        single_neurons: ``single`` mode trains the ``union`` of the group's sets or the
            task's ``own`` set.
        zero_shot: also score every task on the base model (the ``zero-shot`` rows).
        n_train: train examples per task (label-stratified with ``seed``; ``None``: all).
        n_test: test examples per task.
        seed: seed of the data subsets and of the resampling.
        n_boot: bootstrap resamples (and sign-flip draws) of the changes from zero-shot.
        save_runs: keep each training run's files (config, log, trained delta) under ``runs/``.
        train: the training knobs (method ``neurons``; ``merge`` must stay ``False``).
        eval: how tasks are evaluated.
    """

    groups: list[TaskGroup] = field(default_factory=default_groups)
    proportions: list[float] = field(default_factory=lambda: list(PAPER_PROPORTIONS))
    proportion_of: ProportionOf = "model"
    modes: list[str] = field(default_factory=lambda: list(MODES))
    single_neurons: str = "union"
    zero_shot: bool = True
    n_train: int | None = train_examples(512)
    n_test: int | None = test_examples(200)
    seed: int = 0
    n_boot: int = 1000
    save_runs: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        check_percents(self.proportions, "proportions")
        if not self.groups:
            raise ValueError("groups: give at least one group")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise ValueError(f"modes must be a non-empty list of {MODES}, got {self.modes}")
        if self.single_neurons not in SINGLE_NEURONS:
            raise ValueError(
                f"single_neurons must be one of {SINGLE_NEURONS}, got {self.single_neurons!r}"
            )
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {self.n_boot}")
        check_neuron_training(self.train)


def check_neuron_training(cfg: TrainConfig) -> None:
    """``ValueError`` unless ``cfg`` trains neurons and keeps the base model."""
    if cfg.method != "neurons":
        raise ValueError(f"train.method must be 'neurons' here, got {cfg.method!r}")
    if cfg.merge:
        raise ValueError("train.merge must stay false: every run starts from the base model")


#: what the stage writes, for the run README
FILES = """
    generalization_config.json: proportion-sweep knobs, score sources, time split
    evaluations: every evaluation of the proportion sweep (group, mode, proportion, task)
    evaluation_examples.json: the same evaluations with each test example's score
    figure2_*_change: change of the ID/OOD means from zero-shot, paired CI and p
    figure2_*_tasks: score vs proportion, one line per test task
    figure2_*_*: ID mean, OOD mean and their average vs proportion (Figure 2)
    figure2_*: score per task, ID/OOD means per mode and proportion (Figure 2)
"""

STAGE = register(Stage(
    name="generalization", config=GeneralizationConfig, order=90, uses=("detect",),
    run=".proportion_sweep:run_generalization", result=".proportion_sweep:GeneralizationResult",
    files=FILES,
    title="train the groups' neurons at each proportion; ID and OOD scores (Fig. 2)",
))  # fmt: skip
