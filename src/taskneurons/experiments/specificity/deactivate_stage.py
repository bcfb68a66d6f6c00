"""The ``deactivate`` stage: Table 1 rows and the task x task deactivation matrix."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from taskneurons.config import Config
from taskneurons.config_fields import flag, test_examples
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.knob_checks import check_count, check_counts
from taskneurons.experiments.stage import Stage, register

#: how neurons are switched off (:data:`taskneurons.neurons.intervention.MODES`)
DeactivationMode = Literal["activation", "parameters", "mean"]


@dataclass
class DeactivateConfig(Config):
    """Knobs of the deactivation experiment.

    Attributes:
        mode: ``activation`` (hooks) or ``parameters`` (zeroed slices, restored bit-exactly),
            or ``mean`` (mean ablation: each neuron held at its mean activation over the
            measured task's ``detect.attribution`` examples, its train examples).
        n_test: test examples per task (label-stratified subset with ``seed``; ``None``: all).
        seed: seed of the test subset.
        random_seed: seed of the random neuron sets (matched per layer and module).
        random_excludes_task: draw the random neurons from outside the task's own set.
        others: also deactivate the union of the *other* tasks' sets and score each task
            (row ``Deactivate-Others``): if a task's own set is specific, the others' sets
            hurt it less than its own.
        general: also deactivate the general set (neurons in most tasks' top-k, from a
            ``specific`` detection) and score every task (row ``Deactivate-General``).
        n_boot: bootstrap resamples of the test examples for the specificity intervals.
        n_permutations: permutations for the specificity p-value (exact up to 7 tasks).
        eval: how tasks are evaluated.
    """

    mode: DeactivationMode = field(
        default="activation",
        metadata=flag("--mode", help="zero by hooks or parameters, or hold at the mean"),
    )
    n_test: int | None = test_examples(200)
    seed: int = 0
    random_seed: int = 0
    random_excludes_task: bool = True
    others: bool = True
    general: bool = True
    n_boot: int = 1000
    n_permutations: int = 10_000
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if self.mode not in typing.get_args(DeactivationMode):
            raise ValueError(
                f"mode must be one of {typing.get_args(DeactivationMode)}, got {self.mode!r}"
            )
        if self.n_test is not None and self.n_test < 1:
            raise ValueError(f"n_test must be >= 1 or None, got {self.n_test}")
        check_counts(self, "n_boot", "n_permutations")

    def check_tasks(self, tasks: Sequence[Any], key: str = "deactivate") -> None:
        """Its matrix and specificity statistics need two tasks or more."""
        check_count(tasks, key)


#: what the stage writes, for the run README
FILES = """
    table1: Original / Deactivate-Random / Deactivate-Task (accuracy % / ROUGE-L)
    table1_nll: the same evaluations by gold-label NLL (nats per example)
    matrix: change of task j's score with task i's neurons off (points)
    matrix_nll: change of task j's gold-label NLL with task i's neurons off (nats)
    deactivate_config.json: deactivation knobs, data hashes, neuron-set records
    specificity: specificity statistics of the matrices (diagonal, CI, p-value)
"""

STAGE = register(Stage(
    name="deactivate", config=DeactivateConfig, order=20, needs=("sets",),
    run=".deactivation:run_deactivate", result=".deactivation_result:DeactivationResult",
    files=FILES,
    title="deactivate each task's neurons vs as many random ones (Table 1, Figure 5 b)",
))  # fmt: skip
