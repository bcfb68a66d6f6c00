"""Per-task FT: one fully fine-tuned model per task, chosen by the task id (the upper bound).

Stage ``j`` starts from the base weights, trains every parameter on its task
(``train(method="full")``), keeps a copy of the trained weights and puts the base weights
back. ``answering(task)`` loads that task's copy (the base model for a task not trained yet,
i.e. its zero-shot score) and restores the base weights on exit. Memory: one full copy of the
model per trained task, plus the base copy (CPU tensors).

Example:
    >>> method = PerTaskFT(model, tok, MethodConfig(name="pertask"), TrainConfig(lr=2e-5))  # doctest: +SKIP
    >>> run_stage(method, sst2, 0)  # doctest: +SKIP
    >>> with method.answering(sst2) as m:  # sst2's own model  # doctest: +SKIP
    ...     evaluate(m, tok, sst2).score
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from typing import Any

import torch
from torch import nn

from taskneurons.continual.base import ContinualMethod, tensor_bytes
from taskneurons.data.tasks import Task
from taskneurons.training.loop import train


def _copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class PerTaskFT(ContinualMethod):
    """One full fine-tuned copy of the model per task; the task id picks the copy."""

    name = "pertask"

    def __init__(self, model, tokenizer, config, train, progress=False) -> None:
        super().__init__(model, tokenizer, config, train, progress)
        self._base = _copy(model)
        self.states: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def uses_task_id(self) -> bool:
        return True

    def _load(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.model.load_state_dict(state)

    def train_task(self, task: Task, stage: int) -> dict:
        cfg = self.stage_config(stage, method="full", merge=False)
        try:
            res = train(self.model, self.tokenizer, [task], cfg, progress=self.progress)
            self.states[task.id] = _copy(self.model)
        finally:
            self._load(self._base)
        return res.summary()

    @contextlib.contextmanager
    def answering(self, task: Task | None = None, route: Hashable = None) -> Iterator[nn.Module]:
        if task is None:
            raise ValueError("per-task FT needs the task of each test input (answering(task))")
        state = self.states.get(task.id)
        if state is None:  # not trained yet: the base model
            yield self.model
            return
        self._load(state)
        try:
            yield self.model
        finally:
            self._load(self._base)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for i, tid in enumerate(self.trained):  # keyed by stage index: any task id is safe
            for name, value in self.states[tid].items():
                state[f"task{i}.{name}"] = value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.states = {}
        for i, tid in enumerate(self.trained):
            prefix = f"task{i}."
            self.states[tid] = {
                k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)
            }

    def stored_bytes_per_task(self) -> int:
        if not self.states:
            return 0
        return tensor_bytes(next(iter(self.states.values())).values())
