"""One optimizer step: optimizer and schedule, micro-batch losses, cross-process gradient sum.

The loss of a step is the mean over its examples of the per-example loss (mean answer-token
NLL, nats), so it does not depend on how the step is split into micro-batches or processes:
each process backpropagates ``sum(its losses) / n_step`` and the gradients (and losses) are
summed across processes with ``accelerator.reduce``. A regulariser (O-LoRA's penalty) is then
backpropagated once per step, on every process alike, and a ``before_step`` hook (MIGU's
gradient mask) runs last, before clipping:

    loss = mean_examples NLL  +  regulariser()

Example:
    >>> opt, sched = make_optimizer(params, cfg, total_steps=100)  # doctest: +SKIP
    >>> parts = StepParts(model, params, opt, sched, acc, max_grad_norm=1.0)  # doctest: +SKIP
    >>> out = train_step(parts, batches, n_step=8)  # doctest: +SKIP
    >>> out.loss, out.lr, out.grad_norm, out.regulariser  # doctest: +SKIP
    (0.52, 0.001, 3.1, None)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from taskneurons.losses import per_example_loss
from taskneurons.training.train_config import SCHEDULES, TrainConfig

#: ``regulariser() -> scalar tensor``, added to the loss once per optimizer step
Regulariser = Callable[[], torch.Tensor]


@dataclass
class StepParts:
    """What every optimizer step of a run works on.

    Attributes:
        model: the model in training mode.
        params: the trainable tensors.
        optimizer, scheduler: stepped once per step.
        accelerator: for the device, autocast and the cross-process sum.
        max_grad_norm: clip the global gradient norm to this (``None``: no clipping).
        regulariser: added to the loss once per step (``None``: none).
        before_step: called once per step after the gradients are complete (and the
            regulariser's added), before clipping and the optimizer step; it may change the
            gradients in place (``None``: none).
        grad_filter: called on the summed gradients before the regulariser and clipping (the
            masked neuron update zeroes the entries outside the selection there).
    """

    model: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: object
    accelerator: object
    max_grad_norm: float | None
    regulariser: Regulariser | None = None
    before_step: Callable[[], None] | None = None
    grad_filter: Callable[[], None] | None = None


@dataclass
class StepOutcome:
    """What one optimizer step reports.

    Attributes:
        loss: the step's mean per-example loss (nats; without the regulariser).
        lr: the learning rate the step used.
        grad_norm: the gradient norm before clipping (``None`` without clipping).
        regulariser: the regulariser's value (``None`` without one).
    """

    loss: float
    lr: float
    grad_norm: float | None
    regulariser: float | None = None


def make_optimizer(
    params: list[nn.Parameter], config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, object]:
    """``(optimizer, scheduler)`` for ``params``: AdamW or SGD, and the config's schedule.

    The warm-up lasts ``round(config.warmup_ratio * total_steps)`` steps.
    """
    from transformers import get_scheduler

    warmup = int(round(config.warmup_ratio * total_steps))
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(
            params,
            lr=config.lr,
            betas=config.adam_betas,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
    else:
        optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    scheduler = get_scheduler(
        SCHEDULES[config.schedule],
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total_steps,
    )
    return optimizer, scheduler


def reduce_gradients(
    accelerator, params: list[nn.Parameter], loss_sum: torch.Tensor
) -> torch.Tensor:
    """Sum the gradients of ``params`` (in place) and ``loss_sum`` across processes.

    A parameter without a gradient on this process (no example reached it) counts as zeros.

    Returns:
        The summed loss (a scalar tensor).
    """
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = accelerator.reduce([p.grad for p in params], reduction="sum")
    for p, g in zip(params, grads, strict=True):
        p.grad.copy_(g)
    return accelerator.reduce(loss_sum, reduction="sum")


def train_step(parts: StepParts, batches: Iterable[dict], n_step: int) -> StepOutcome:
    """Forward/backward over ``batches``, sum across processes, add the regulariser, clip, step.

    Args:
        parts: the model, trainable tensors, optimizer, schedule, accelerator and knobs.
        batches: this process's collated micro-batches of the step (CPU tensors).
        n_step: examples in the whole step (all processes).

    Returns:
        The :class:`StepOutcome`.
    """
    acc, params = parts.accelerator, parts.params
    parts.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=acc.device)
    for batch in batches:
        batch = {k: v.to(acc.device) for k, v in batch.items()}
        with acc.autocast():
            losses = per_example_loss(parts.model, batch)  # [micro]
        loss = losses.sum() / n_step
        loss.backward()
        loss_sum += loss.detach()
    if acc.num_processes > 1:
        loss_sum = reduce_gradients(acc, params, loss_sum)
    if parts.grad_filter is not None:
        parts.grad_filter()
    reg = None
    if parts.regulariser is not None:
        reg = parts.regulariser()  # scalar; the same on every process, so added once
        reg.backward()
    if parts.before_step is not None:
        parts.before_step()
    grad_norm = None
    if parts.max_grad_norm is not None:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, parts.max_grad_norm))
    lr = parts.scheduler.get_last_lr()[0]
    parts.optimizer.step()
    parts.scheduler.step()
    return StepOutcome(float(loss_sum), lr, grad_norm, None if reg is None else float(reg.detach()))
