"""The stage loop of a continual run: train (or take from the references), score, checkpoint.

One stage of :func:`~taskneurons.experiments.continual.method_run.continual_experiments`, for one run
or several runs sharing one training (W-NCFT scored with the task given and inferred):
:func:`advance` trains stage ``j`` once, then each run scores every task with its own
:class:`~taskneurons.continual.base.MethodConfig` in place (its answering mode: the only
difference such runs may have), and each run's checkpoint is written in its own folder.

The stages a method takes from the reference scores (:func:`reference_stages`, the method's
:meth:`~taskneurons.continual.base.ContinualMethod.reference_stages`: per-task FT's stages
whose training is the one behind A(i)) are not trained: the method's ``derive_stage`` records
them, and the task's row is copied from the reference scores: A(i) from its stage on, the
zero-shot score before it (``nan`` when unseen tasks are not scored).

Example:
    >>> derive = reference_stages(method, config.single_train, len(ordered))  # doctest: +SKIP
    >>> for j in range(runs[0].start, len(ordered)):  # doctest: +SKIP
    ...     advance(method, tok, ordered, test, runs, j, derive)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from taskneurons.continual.base import ContinualMethod, run_stage, score_task
from taskneurons.continual.method_config import MethodConfig
from taskneurons.continual.stage_checkpoint import write_checkpoint
from taskneurons.data.tasks import Example, Task
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.training.train_config import TrainConfig


class RunKnobs(Protocol):
    """What the loop reads of a run's config (a ``ContinualConfig``)."""

    method: MethodConfig
    eval: EvalConfig
    eval_unseen: bool


@dataclass
class StageRun:
    """One result's state from stage to stage (and into its checkpoint).

    Attributes:
        config: the run's config; out: its folder; record: what a resume must match.
        matrix: ``a[i, j]`` so far; single, zero_shot: A(i) and b(i) by task id.
        stages: the stages' training summaries; start: the next stage to run.
        resumed_from: the stage a resumed run continued with (``None``: not resumed).
        held_out: held-out task id -> its score after the last stage (:func:`score_held_out`).
        routing: per stage, task id -> the task weights on its test inputs and the routing
            accuracy (:func:`~taskneurons.continual.base.routing_record`; empty for methods
            that weigh no task).
    """

    config: RunKnobs
    out: Path
    record: dict
    matrix: np.ndarray
    single: dict[str, float]
    zero_shot: dict[str, float]
    stages: list[dict]
    start: int
    resumed_from: int | None
    routing: list[dict] = field(default_factory=list)
    held_out: dict[str, float] = field(default_factory=dict)

    def saved(self) -> dict[str, Any]:
        """The checkpoint's record of the run so far (``nan`` as ``None``)."""
        matrix = [[None if math.isnan(v) else float(v) for v in row] for row in self.matrix]
        keep = {"single": self.single, "zero_shot": self.zero_shot, "stages": self.stages}
        keep["routing"] = self.routing
        return {"run": self.record, "matrix": matrix, **keep}


def reference_stages(method: ContinualMethod, single_train: TrainConfig, n: int) -> set[int]:
    """The stages taken from the reference scores (:meth:`ContinualMethod.reference_stages`:
    per-task FT's, none for the other methods)."""
    return set(method.reference_stages(single_train, n))


def advance(
    method: ContinualMethod,
    tokenizer,
    ordered: Sequence[Task],
    test: Mapping[str, Sequence[Example]],
    runs: Sequence[StageRun],
    j: int,
    derive: set[int],
) -> None:
    """Train (or derive) stage ``j``; every run scores every task; write their checkpoints."""
    if j in derive:
        summary = method.derive_stage(ordered[j], j)
    else:
        summary = run_stage(method, ordered[j], j)
    own = method.config
    for run in runs:
        run.stages.append(dict(summary))
        method.config = run.config.method  # its answering mode (the only difference)
        try:
            _score(method, tokenizer, ordered, test, run, j, derive)
        finally:
            method.config = own
    state = method.state_dict()
    for run in runs:
        write_checkpoint(run.out / "checkpoint", j, state, run.saved())


def _score(method, tokenizer, ordered, test, run: StageRun, j: int, derive: set[int]) -> None:
    """Column ``j`` of ``run.matrix``; the rows of derived tasks from the references."""
    derived = method.derived
    routing: dict[str, dict] = {}
    for i, task in enumerate(ordered):
        if task.id in derived or (i > j and i in derive):
            if i <= j:
                run.matrix[i, j] = run.single[task.id]
            elif run.config.eval_unseen:
                run.matrix[i, j] = run.zero_shot[task.id]
        elif i <= j or run.config.eval_unseen:
            examples = test[task.id]
            trace: dict = {}
            run.matrix[i, j] = score_task(
                method, tokenizer, task, examples, run.config.eval, method.progress, trace
            )
            if trace:
                routing[task.id] = trace
    run.routing.append(routing)


def score_held_out(
    method: ContinualMethod,
    tokenizer,
    held: Sequence[Task],
    test: Mapping[str, Sequence[Example]],
    runs: Sequence[StageRun],
) -> None:
    """After the last stage: each run scores the tasks none trained on (general ability kept)."""
    own = method.config
    for run in runs:
        method.config = run.config.method
        try:
            for task in held:
                run.held_out[task.id] = score_task(
                    method, tokenizer, task, test[task.id], run.config.eval, method.progress
                )
        finally:
            method.config = own
