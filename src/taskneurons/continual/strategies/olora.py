"""O-LoRA (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model Continual Learning").

Each task gets a new LoRA adapter; the earlier tasks' adapters stay frozen and active (their
outputs add up, so inference needs no task id). The new adapter is trained on

    loss = task loss + lambda_orth * L_orth + lambda_l2 * L_l2

with, over every targeted module ``m`` and every earlier adapter ``i`` (``A`` is ``[r, in]``):

* ``loss_form="repo"`` (default; the O-LoRA repository's trainer):
  ``L_orth = sum_m sum_i sum(|A_i^m (A_new^m)^T|)`` (``torch.abs(torch.mm(lora_A,
  loranew_A.T)).sum()``) and ``L_l2 = sum_{p in new LoRA tensors} ||p||_2`` (Frobenius norms,
  not squared, A and B of every module: ``torch.norm(param, p=2)``);
* ``loss_form="paper"``: squared entries ``sum((A_i A_new^T)^2)`` and squared norms.

The repository adds the terms to each micro-batch's loss; here they are added once per
optimizer step (the same when there is no gradient accumulation): the training loop's
``regulariser`` hook (:class:`~taskneurons.training.loop.TrainOptions`). Built on PEFT's
multiple adapters (:class:`~taskneurons.continual.lora.AdapterStack`), not a fork of it.

Example:
    >>> method = OLoRA(model, tok, MethodConfig.make("olora", lambda_orth=0.5), TrainConfig())  # doctest: +SKIP
    >>> run_stage(method, dbpedia, 0); run_stage(method, amazon, 1)  # doctest: +SKIP
    >>> orth, l2 = olora_terms(method.stack, "task1", ["task0"], "repo")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from taskneurons.continual.base import ContinualMethod
from taskneurons.continual.lora import AdapterStack
from taskneurons.continual.method_config import MethodConfig
from taskneurons.data.tasks import Task


def olora_terms(
    stack: AdapterStack, new: str, old: Sequence[str], form: str = "repo"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_orth, L_l2)`` of adapter ``new`` against the adapters ``old`` (scalar tensors).

    Args:
        stack: the adapters.
        new: the adapter being trained.
        old: the earlier (frozen) adapters.
        form: ``"repo"`` (absolute values, norms) or ``"paper"`` (squares).

    Example:
        >>> orth, l2 = olora_terms(stack, "task1", ["task0"])  # doctest: +SKIP
    """
    new_m = stack.matrices(new)
    first = next(iter(new_m.values()))[0]
    orth = torch.zeros((), dtype=torch.float32, device=first.device)
    for name in old:
        old_m = stack.matrices(name)
        for module, (a_new, _b) in new_m.items():
            prod = old_m[module][0].float() @ a_new.float().T  # [r_old, r_new]
            orth = orth + (prod.abs().sum() if form == "repo" else prod.pow(2).sum())
    l2 = torch.zeros_like(orth)
    for p in stack.parameters(new).values():
        l2 = l2 + (torch.norm(p.float(), p=2) if form == "repo" else p.float().pow(2).sum())
    return orth, l2


class OLoRA(ContinualMethod):
    """A new LoRA per task, kept orthogonal to the earlier (frozen, active) ones."""

    name = "olora"

    def __init__(self, model, tokenizer, config, train, progress=False) -> None:
        super().__init__(model, tokenizer, config, train, progress)
        self.stack = AdapterStack(model, train)

    def before_task(self, task: Task, stage: int) -> None:
        name = f"task{stage}"
        self.stack.add(name, seed=self.train_config.seed + stage)
        self.stack.activate(self.stack.names, trainable=name)

    def regulariser(self, new: str, old: Sequence[str]) -> torch.Tensor:
        """``lambda_orth * L_orth + lambda_l2 * L_l2`` (see :func:`olora_terms`)."""
        orth, l2 = olora_terms(self.stack, new, old, self.config.loss_form)
        return self.config.lambda_orth * orth + self.config.lambda_l2 * l2

    def train_task(self, task: Task, stage: int) -> dict:
        new, old = self.stack.names[-1], list(self.stack.names[:-1])
        cfg = self.stage_config(stage, method="lora")
        summary = self.stack.train_adapter(
            new, self.tokenizer, task, cfg, lambda: self.regulariser(new, old), self.progress
        )
        return {**summary, "adapter": new}

    def after_task(self, task: Task, stage: int) -> None:
        self.stack.activate(self.stack.names)  # every adapter active and frozen
        super().after_task(task, stage)

    @contextlib.contextmanager
    def answering(self, task: Task | None = None, route: Hashable = None) -> Iterator[nn.Module]:
        yield self.stack.model

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "adapters": list(self.stack.names), **self.stack.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["adapters"]:
            self.stack.load(state["adapters"], state)
            self.stack.activate(self.stack.names)

    def stored_bytes_per_task(self) -> int:
        names = self.stack.names
        return sum(self.stack.bytes_of(n) for n in names) // len(names) if names else 0


@dataclass
class OloraConfig(MethodConfig, name="olora"):
    """O-LoRA's options.

    Attributes:
        lambda_orth, lambda_l2: weights of the orthogonality and L2 terms (the O-LoRA
            repository's scripts use 0.5 and 0).
        loss_form: ``"repo"`` (the repository's code: ``|A_old A_new^T|`` summed, and the sum of
            the new LoRA tensors' Frobenius norms) or ``"paper"`` (squared entries and norms).
    """

    method_class: ClassVar[Any] = OLoRA

    name: str = "olora"
    lambda_orth: float = 0.5
    lambda_l2: float = 0.0
    loss_form: Literal["repo", "paper"] = "repo"

    def validate(self) -> None:
        super().validate()
        if self.lambda_orth < 0 or self.lambda_l2 < 0:
            raise ValueError("O-LoRA lambdas must be >= 0")
