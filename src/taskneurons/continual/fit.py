"""A single-process step loop over given tensors, with an optional regulariser (LoRA methods).

:func:`taskneurons.training.loop.train` trains a fresh model through one of its methods; the
LoRA-based continual methods need to train *some* adapters of a model that already holds
others, and O-LoRA adds a regulariser to the loss. :func:`fit` reuses the training package's
pieces (the pooled, seeded step order of :class:`~taskneurons.training.batches.TrainData`, the
optimizer and schedule of :func:`~taskneurons.training.step.make_optimizer`, the per-example
answer NLL of :func:`~taskneurons.losses.per_example_loss`) and adds only the step:

    loss = mean_examples NLL  +  regulariser()      (regulariser once per optimizer step)

Single process only (no cross-process gradient sum).

Example:
    >>> params = [p for p in model.parameters() if p.requires_grad]  # doctest: +SKIP
    >>> summary = fit(model, tok, task, TrainConfig(max_steps=10), params)  # doctest: +SKIP
    >>> summary["steps"], summary["final_loss"]  # doctest: +SKIP
    (10, 0.52)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from taskneurons.data.tasks import Task
from taskneurons.evaluation.model_io import device_of
from taskneurons.losses import per_example_loss
from taskneurons.training.batches import TrainData
from taskneurons.training.step import make_optimizer
from taskneurons.training.train_config import TrainConfig

#: ``regulariser() -> scalar tensor`` (its gradient is added to the step's)
Regulariser = Callable[[], torch.Tensor]


def fit(
    model: nn.Module,
    tokenizer,
    task: Task,
    config: TrainConfig,
    params: Sequence[nn.Parameter],
    regulariser: Regulariser | None = None,
) -> dict:
    """Train ``params`` of ``model`` on ``task``'s train examples; return a summary.

    Args:
        model: a causal LM whose forward uses ``params`` (e.g. a model with LoRA layers).
        tokenizer: its tokenizer.
        task: the task (its train split, pooled and shuffled with ``config.seed``).
        config: lr, steps/epochs, batch size, accumulation, schedule, clipping, prompt.
        params: the tensors to train (they must require grad).
        regulariser: added to the loss once per optimizer step.

    Returns:
        ``{"steps", "final_loss", "final_regulariser", "n_trainable", "wall_s"}``; losses in
        nats (mean per-example answer NLL).
    """
    t0 = time.perf_counter()
    params = list(params)
    data = TrainData.encode(tokenizer, [task], config)
    torch.manual_seed(config.seed)  # dropout
    optimizer, scheduler = make_optimizer(params, config, data.total_steps)
    device = device_of(model)
    was_training = model.training
    model.train()
    loss = reg = None
    try:
        for _step, _epoch, chunk in data.steps(0):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=device)
            for batch in data.micro_batches(chunk, 0, 1):
                batch = {k: v.to(device) for k, v in batch.items()}
                part = per_example_loss(model, batch).sum() / len(chunk)  # scalar
                part.backward()
                loss += part.detach()
            if regulariser is not None:
                reg = regulariser()
                reg.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
    return {
        "steps": data.total_steps,
        "final_loss": None if loss is None else float(loss),
        "final_regulariser": None if reg is None else float(reg.detach()),
        "n_trainable": int(sum(p.numel() for p in params)),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
