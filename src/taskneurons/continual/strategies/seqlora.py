"""SeqLoRA: one LoRA adapter (PEFT) trained on the tasks in sequence.

The first stage adds the adapter (B = 0, A drawn with the stage's seed); every stage trains
the same adapter further (a fresh optimizer per stage) with the base weights frozen; every
task is answered with it.

Example:
    >>> method = SeqLoRA(model, tok, MethodConfig.make("seqlora"), TrainConfig(lr=3e-4))  # doctest: +SKIP
    >>> run_stage(method, sst2, 0); run_stage(method, agnews, 1)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from taskneurons.continual.base import ContinualMethod
from taskneurons.continual.lora import AdapterStack
from taskneurons.continual.method_config import MethodConfig
from taskneurons.data.tasks import Task

#: the one adapter's name
ADAPTER = "seq"


class SeqLoRA(ContinualMethod):
    """One LoRA adapter, trained task after task."""

    name = "seqlora"

    def __init__(self, model, tokenizer, config, train, progress=False) -> None:
        super().__init__(model, tokenizer, config, train, progress)
        self.stack = AdapterStack(model, train)

    def before_task(self, task: Task, stage: int) -> None:
        if not self.stack.names:
            self.stack.add(ADAPTER, seed=self.train_config.seed + stage)
        self.stack.activate([ADAPTER], trainable=ADAPTER)

    def train_task(self, task: Task, stage: int) -> dict:
        cfg = self.stage_config(stage, method="lora")
        return self.stack.train_adapter(ADAPTER, self.tokenizer, task, cfg, None, self.progress)

    def after_task(self, task: Task, stage: int) -> None:
        self.stack.activate([ADAPTER])  # frozen
        super().after_task(task, stage)

    @contextlib.contextmanager
    def answering(self, task: Task | None = None, route: Hashable = None) -> Iterator[nn.Module]:
        yield self.stack.model

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.stack.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.trained:
            self.stack.load([ADAPTER], state)
            self.stack.activate([ADAPTER])


@dataclass
class SeqloraConfig(MethodConfig, name="seqlora"):
    """SeqLoRA: no options (the adapter is ``train``'s LoRA)."""

    method_class: ClassVar[Any] = SeqLoRA

    name: str = "seqlora"
