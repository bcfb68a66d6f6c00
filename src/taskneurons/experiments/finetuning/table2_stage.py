"""The ``table2`` stage: train only each task's neurons vs as many random ones (Table 2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskneurons.config import Config
from taskneurons.config_fields import test_examples, train_examples
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.knob_checks import check_ids, check_not_empty
from taskneurons.experiments.stage import Stage, register
from taskneurons.training.train_config import TrainConfig


@dataclass
class NeuronTrainingConfig(Config):
    """Knobs of the neuron-training experiment (PAPER.md Table 2, Figure 5 a).

    Attributes:
        tasks: ids of the run's tasks to train (``None``: all of them).
        n_train: train examples per task (label-stratified with ``seed``; ``None``: all).
        n_test: test examples per task.
        seed: seed of the data subsets.
        random_seed: seed of the random neuron sets (matched per layer and module).
        matrix: also score every task after training each task's neurons (Figure 5 a).
        train: the training knobs (method ``neurons``; ``merge`` must stay ``False``).
        eval: how tasks are evaluated.
    """

    tasks: list[str] | None = None
    n_train: int | None = train_examples(512)
    n_test: int | None = test_examples(200)
    matrix: bool = True
    seed: int = 0
    random_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        check_not_empty(self.tasks)
        if self.train.method != "neurons":
            raise ValueError(
                f"neuron training needs train.method='neurons', got {self.train.method!r}"
            )
        if self.train.merge:
            raise ValueError("neuron training keeps the base model: set train.merge=False")

    def check_tasks(self, tasks: Sequence[Any], key: str = "table2") -> None:
        """``tasks`` names tasks of the run."""
        check_ids(self.tasks, tasks, f"{key}.tasks")


#: what the stage writes, for the run README
FILES = """
    table2: Zero-shot / Train-Random / Train-Task (accuracy % / ROUGE-L)
    train_matrix: change of task j's score after training task i's neurons (points)
    finetune_config.json: neuron-training knobs, data hashes, per-run summaries
"""

STAGE = register(Stage(
    name="table2", config=NeuronTrainingConfig, order=30, needs=("sets",),
    run=".table2:run_table2", result=".table2:NeuronTrainingResult", files=FILES,
    title="train only each task's neurons vs as many random ones (Table 2, Figure 5 a)",
))  # fmt: skip
