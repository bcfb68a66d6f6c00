"""EPI-style parameter isolation: a private LoRA per task, the task found from the input.

After Wang et al. 2023 ("Rehearsal-free Continual Language Learning via Efficient Parameter
Isolation"), simplified: each task trains its own LoRA adapter from the base model (the
earlier adapters are inactive and frozen); its prototype is the mean feature
(:func:`~taskneurons.continual.features.mean_features`, base model, adapters off) of up to
``n_vector_samples`` train inputs. A test input is routed to the trained task whose prototype
is nearest by cosine similarity to the input's own feature (no task id), and answered with
that task's adapter alone. (The paper's private parameters are prefixes and its distance is
Mahalanobis; here they are LoRA adapters and cosine, as in the W-NCFT features.)

Example:
    >>> method = EPI(model, tok, MethodConfig.make("epi"), TrainConfig(lr=3e-4))  # doctest: +SKIP
    >>> run_stage(method, sst2, 0); run_stage(method, agnews, 1)  # doctest: +SKIP
    >>> method.routes(["a great film", "stocks fell on monday"])  # doctest: +SKIP
    ['sst2', 'agnews']
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from taskneurons.continual.base import ContinualMethod, tensor_bytes
from taskneurons.continual.features import similarity_logits
from taskneurons.continual.lora import AdapterStack
from taskneurons.continual.method_config import FeatureOptions, MethodConfig
from taskneurons.data.tasks import Task


class EPI(ContinualMethod):
    """A private LoRA per task; the nearest prototype (cosine) picks it per input."""

    name = "epi"
    routes_inputs = True

    def __init__(self, model, tokenizer, config, train, progress=False) -> None:
        super().__init__(model, tokenizer, config, train, progress)
        self.stack = AdapterStack(model, train)
        self.prototypes: dict[str, torch.Tensor] = {}  # task id -> [d]

    def _adapter(self, task_id: str) -> str:
        return f"task{self.trained.index(task_id)}"

    def before_task(self, task: Task, stage: int) -> None:
        name = f"task{stage}"
        self.stack.add(name, seed=self.train_config.seed + stage)
        self.stack.activate([name], trainable=name)

    def train_task(self, task: Task, stage: int) -> dict:
        name = self.stack.names[-1]
        cfg = self.stage_config(stage, method="lora")
        summary = self.stack.train_adapter(name, self.tokenizer, task, cfg, None, self.progress)
        return {**summary, "adapter": name}

    def after_task(self, task: Task, stage: int) -> None:
        self.stack.activate([self.stack.names[-1]])  # frozen
        with self.stack.disabled() as base:
            self.prototypes[task.id] = self.task_vector(base, task)
        super().after_task(task, stage)

    def routes(self, texts: Sequence[str]) -> list[Hashable]:
        """The id of the trained task whose prototype is nearest (cosine) to each input."""
        with self.stack.disabled() as base:
            feats = self.input_features(base, texts)  # [n, d]
        protos = torch.stack([self.prototypes[t] for t in self.trained])  # [tasks, d]
        return [self.trained[int(similarity_logits(f, protos).argmax())] for f in feats]

    def weights_for(self, task: Task | None = None, route: Hashable = None) -> dict | None:
        """1 for the task the input is routed to, 0 for the other trained tasks."""
        if not self.trained:
            return None
        chosen = route if route is not None else (task.id if task is not None else None)
        return {t: float(t == chosen) for t in self.trained}

    @contextlib.contextmanager
    def answering(self, task: Task | None = None, route: Hashable = None) -> Iterator[nn.Module]:
        task_id = route if route is not None else (task.id if task is not None else None)
        if task_id is None:
            raise ValueError("EPI answers an input by its route (routes([text])) or its task")
        self.stack.activate([self._adapter(str(task_id))])
        yield self.stack.model

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "adapters": list(self.stack.names), **self.stack.state()}
        for i, tid in enumerate(self.trained):
            state[f"prototype{i}"] = self.prototypes[tid].clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["adapters"]:
            self.stack.load(state["adapters"], state)
            self.stack.activate([self.stack.names[-1]])
        self.prototypes = {tid: state[f"prototype{i}"] for i, tid in enumerate(self.trained)}

    def stored_bytes_per_task(self) -> int:
        names = self.stack.names
        if not names:
            return 0
        lora = sum(self.stack.bytes_of(n) for n in names) // len(names)
        return lora + tensor_bytes(list(self.prototypes.values())[:1])


@dataclass
class EpiConfig(FeatureOptions, MethodConfig, name="epi"):
    """EPI: the features of its prototypes (:class:`FeatureOptions`)."""

    method_class: ClassVar[Any] = EPI

    name: str = "epi"

    def validate(self) -> None:
        super().validate()
        self.check_features()
