"""Model plumbing shared by label scoring and generation.

The device of a model, the arguments its ``forward`` accepts, the name of its cache argument,
position ids of left-padded batches, and :func:`run_batches`, which runs a per-batch step over
prompts (longest first if asked) in eval mode under ``torch.inference_mode()``.

Example:
    >>> positions(torch.tensor([[0, 0, 1, 1, 1]]))
    tensor([[0, 0, 0, 1, 2]])
    >>> cache_kwarg({"input_ids", "past_key_values"})
    'past_key_values'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from taskneurons.models.placement import grad_free, input_device

T = TypeVar("T")


def device_of(model: nn.Module) -> torch.device:
    """Where a batch for ``model`` goes: its first parameter's device, or the first device of
    its ``device_map`` (:func:`~taskneurons.models.placement.input_device`; ``cpu`` for a
    model without parameters)."""
    return input_device(model)


def forward_params(model: nn.Module) -> set[str]:
    """The argument names of ``model.forward`` (to pass ``position_ids`` etc. only if known)."""
    return set(inspect.signature(model.forward).parameters)


def cache_kwarg(params: set[str]) -> str:
    """Name of the cache argument: ``cache`` (Transformers >= 5.x) or ``past_key_values``."""
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out) -> Any:
    """The key/value cache of a model output (``cache`` or ``past_key_values``), else ``None``."""
    for key in ("cache", "past_key_values"):
        value = out.get(key) if hasattr(out, "get") else getattr(out, key, None)
        if value is not None:
            return value
    return None


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``[batch, pos]`` of a left-padded mask (0 at the first real token)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def batches(order: list[int], size: int) -> list[list[int]]:
    """``order`` cut into consecutive chunks of ``size`` (the last may be shorter).

    Example:
        >>> batches([4, 3, 2, 1, 0], 2)
        [[4, 3], [2, 1], [0]]
    """
    return [order[i : i + size] for i in range(0, len(order), size)]


def run_batches(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    step: Callable[[list[Sequence[int]]], Sequence[T]],
    *,
    batch_size: int,
    sort_by_length: bool,
    desc: str,
    progress: bool,
    length: Callable[[Any], int] = len,
) -> list[T]:
    """``step`` over batches of ``prompts``; one output per prompt, in the order of ``prompts``.

    The batches are ``batch_size`` prompts, longest first when ``sort_by_length`` (a stable
    sort by ``length(prompt)``, so equal lengths keep their order). ``step(chunk)`` returns one value per prompt of
    the chunk. The model runs in eval mode under ``torch.inference_mode()`` (``no_grad`` for a
    model a ``device_map`` placed: :func:`~taskneurons.models.placement.grad_free`) and gets its previous
    mode back afterwards, also on errors. ``progress`` shows a tqdm bar titled ``desc``.
    """
    from tqdm.auto import tqdm

    order = list(range(len(prompts)))
    if sort_by_length:
        order.sort(key=lambda i: -length(prompts[i]))
    results: list[Any] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with grad_free(model):  # inference mode; no_grad under a device_map
            for idx in tqdm(
                batches(order, batch_size), desc=desc, disable=not progress, leave=False
            ):
                out = step([prompts[i] for i in idx])
                for row, i in enumerate(idx):
                    results[i] = out[row]
    finally:
        model.train(was_training)
    return results
