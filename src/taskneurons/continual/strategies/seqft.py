"""SeqFT: the whole model fine-tuned on the tasks in sequence (the lower baseline).

Each stage trains every parameter in place with ``train(method="full")``; nothing is kept per
task, and every task is answered by the one model.

Example:
    >>> method = SeqFT(model, tok, MethodConfig.make("seqft"), TrainConfig(lr=2e-5))  # doctest: +SKIP
    >>> run_stage(method, sst2, 0)["final_loss"]  # doctest: +SKIP
    0.41
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from taskneurons.continual.base import ContinualMethod
from taskneurons.continual.method_config import MethodConfig
from taskneurons.data.tasks import Task
from taskneurons.training.loop import train


class SeqFT(ContinualMethod):
    """Full fine-tuning of one model, task after task."""

    name = "seqft"

    def train_task(self, task: Task, stage: int) -> dict:
        cfg = self.stage_config(stage, method="full", merge=False)
        res = train(self.model, self.tokenizer, [task], cfg, progress=self.progress)
        return res.summary()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for name, value in self.model.state_dict().items():
            state[f"model.{name}"] = value.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        if weights:
            with torch.no_grad():
                self.model.load_state_dict(weights)


@dataclass
class SeqftConfig(MethodConfig, name="seqft"):
    """SeqFT: no options (every parameter is trained)."""

    method_class: ClassVar[Any] = SeqFT

    name: str = "seqft"
