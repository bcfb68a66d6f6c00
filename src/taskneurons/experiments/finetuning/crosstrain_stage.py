"""The ``crosstrain`` stage: task i's neurons trained on task j's data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskneurons.config import Config
from taskneurons.config_fields import test_examples, train_examples
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.knob_checks import check_count, check_counts
from taskneurons.experiments.stage import Stage, register
from taskneurons.training.train_config import TrainConfig


@dataclass
class CrossTrainingConfig(Config):
    """Knobs of the cross-training matrix.

    Attributes:
        n_train: train examples per task (label-stratified with ``seed``; ``None``: all).
        n_test: test examples per task.
        seed: seed of the data subsets and of the statistics' resampling.
        train: the training knobs (method ``neurons``; ``merge`` must stay ``False``).
        eval: how tasks are evaluated.
        n_boot: bootstrap resamples of the test examples for the specificity interval.
        n_permutations: permutations for the p-value (exact up to 7 tasks).
    """

    n_train: int | None = train_examples(256)
    n_test: int | None = test_examples(100)
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    n_boot: int = 1000
    n_permutations: int = 10_000

    def validate(self) -> None:
        if self.train.method != "neurons" or self.train.merge:
            raise ValueError("cross-training trains neurons: train.method='neurons', merge off")
        check_counts(self, "n_boot", "n_permutations")

    def check_tasks(self, tasks: Sequence[Any], key: str = "crosstrain") -> None:
        """Its gain matrix and specificity statistics need two tasks or more."""
        check_count(tasks, key)


#: what the stage writes, for the run README
FILES = """
    cross_training: task j's score after training task i's neurons on task j's data
    cross_gain: gain over zero-shot of task j from training task i's neurons on its data
    cross_training_config.json: cross-training knobs, neuron-set records, run summaries
"""

STAGE = register(Stage(
    name="crosstrain", config=CrossTrainingConfig, order=60, needs=("sets",),
    run=".cross_training:run_crosstrain", result=".cross_training:CrossTrainingResult",
    files=FILES,
    title="train each task's neurons on each task's data: the gain matrix's specificity",
))  # fmt: skip
