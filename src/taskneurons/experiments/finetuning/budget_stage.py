"""The ``budget`` stage: Table 2 over optimizer x steps x k x seeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskneurons.config import Config
from taskneurons.config_fields import test_examples, train_examples
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.knob_checks import check_counts, check_ids, check_not_empty
from taskneurons.experiments.stage import Stage, register
from taskneurons.neurons.selection import check_k
from taskneurons.training.train_config import OPTIMIZERS, TrainConfig


@dataclass
class BudgetGridConfig(Config):
    """The grid of the budget experiment (fixed in the experiment file before anything runs).

    Attributes:
        tasks: ids of the run's tasks to train (``None``: all of them).
        optimizers: optimizer names (``sgd``, ``adamw``), each with its learning rate in
            ``lrs`` (same order: SGD steps scale with the gradient, AdamW's do not).
        lrs: one learning rate per optimizer.
        steps: optimizer steps after which the task is scored (its learning curve); every run
            trains ``max(steps)`` steps (epochs repeat as needed).
        k: percentages of neurons per task.
        seeds: seeds of the matched random sets (one training run each).
        n_train: train examples per task (label-stratified with ``seed``; ``None``: all).
        n_test: test examples per task.
        seed: seed of the data subsets.
        train: the other training knobs (method ``neurons``; ``optimizer``, ``lr`` and
            ``max_steps`` are set by the grid).
        eval: how tasks are evaluated.
        n_boot: bootstrap resamples (and sign-flip draws) of each difference.
    """

    tasks: list[str] | None = None
    optimizers: list[str] = field(default_factory=lambda: ["sgd", "adamw"])
    lrs: list[float] = field(default_factory=lambda: [0.1, 1e-4])
    steps: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    k: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    n_train: int | None = train_examples(256)
    n_test: int | None = test_examples(100)
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    n_boot: int = 2000

    def validate(self) -> None:
        check_not_empty(self.tasks)
        check_counts(self, "n_boot")
        if len(self.optimizers) != len(self.lrs) or not self.optimizers:
            raise ValueError("optimizers and lrs need one learning rate per optimizer")
        bad = [o for o in self.optimizers if o not in OPTIMIZERS]
        if bad:
            raise ValueError(f"optimizers: unknown {bad}; known: {list(OPTIMIZERS)}")
        if any(lr <= 0 for lr in self.lrs):
            raise ValueError("lrs must be > 0")
        if (
            not self.steps
            or any(s < 1 for s in self.steps)
            or sorted(set(self.steps)) != self.steps
        ):
            raise ValueError(f"steps must be increasing positive counts, got {self.steps}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        for k in self.k:
            check_k(k)
        if self.train.method != "neurons" or self.train.merge:
            raise ValueError("the budget grid trains neurons: train.method='neurons', merge off")

    def check_tasks(self, tasks: Sequence[Any], key: str = "budget") -> None:
        """``tasks`` names tasks of the run."""
        check_ids(self.tasks, tasks, f"{key}.tasks")


#: what the stage writes, for the run README
FILES = """
    budget: Train-Task vs Train-Random per (task, optimizer, k, step), paired CI and p
    curves.json: learning curves: the score after every scored step, own and random sets
    learning_curves_sgd: score vs step with SGD, own set and mean of the random sets
    learning_curves_adamw: score vs step with AdamW, own set and mean of the random sets
    task_minus_random: Train-Task - Train-Random vs step per (optimizer, k)
    budget_config.json: budget-grid knobs, zero-shot scores and provenance
"""

STAGE = register(Stage(
    name="budget", config=BudgetGridConfig, order=50, uses=("detect",),
    run=".budget_grid:run_budget", result=".budget_grid:BudgetGridResult", files=FILES,
    title="train own vs random neurons over optimizer x steps x k x seeds (Table 2 budgets)",
))  # fmt: skip
