"""One optimizer step: optimizer and schedule, micro-batch losses, cross-process gradient sum.

The loss of a step is the mean over its examples of the per-example loss (mean answer-token
NLL, nats), so it does not depend on how the step is split into micro-batches or processes:
each process backpropagates ``sum(its losses) / n_step`` and the gradients (and losses) are
summed across processes with ``accelerator.reduce``.

Example:
    >>> opt, sched = make_optimizer(params, cfg, total_steps=100)  # doctest: +SKIP
    >>> loss, lr, grad_norm = train_step(model, batches, 8, params, opt, sched, acc, 1.0)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from taskneurons.losses import per_example_loss
from taskneurons.training.train_config import SCHEDULES, TrainConfig


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


def train_step(
    model: nn.Module,
    batches: Iterable[dict],
    n_step: int,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler,
    accelerator,
    max_grad_norm: float | None,
) -> tuple[float, float, float | None]:
    """Forward/backward over ``batches``, sum across processes, clip, step optimizer and schedule.

    Args:
        model: the model in training mode.
        batches: this process's collated micro-batches of the step (CPU tensors).
        n_step: examples in the whole step (all processes).
        params: the trainable tensors.
        optimizer, scheduler: stepped once.
        accelerator: for the device, autocast and the cross-process sum.
        max_grad_norm: clip the global gradient norm to this (``None``: no clipping).

    Returns:
        ``(loss, lr, grad_norm)``: the step's mean per-example loss (nats), the learning rate
        the step used, the gradient norm before clipping (``None`` without clipping).
    """
    device = accelerator.device
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with accelerator.autocast():
            losses = per_example_loss(model, batch)  # [micro]
        loss = losses.sum() / n_step
        loss.backward()
        loss_sum += loss.detach()
    if accelerator.num_processes > 1:
        loss_sum = reduce_gradients(accelerator, params, loss_sum)
    grad_norm = None
    if max_grad_norm is not None:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    return float(loss_sum), lr, grad_norm
