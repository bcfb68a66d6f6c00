"""Neuron training by a masked optimizer step, under FSDP: the masks cut to each shard.

The method itself is :class:`~taskneurons.training.methods.MaskedNeuronsMethod`; what it does:

``TrainConfig(method="neurons", neuron_update="masked")``. Instead of a
:class:`~taskneurons.training.neuron_delta.NeuronDelta` beside the model, the FFN weights that
own selected slices are made trainable and, at every optimizer step, their gradients are
multiplied by the selection masks (:func:`~taskneurons.training.neuron_delta.selection_masks`)
before clipping and the step. With zero gradients, SGD (with or without momentum) and AdamW
leave an entry exactly as it was (their moments stay 0, the update is ``0 / eps``), so every
entry a selected neuron does not own stays bit-identical. Weight decay acts on the selected
entries only and pulls them towards their values before training, as it pulls a delta to 0.

Why: per-row gradient hooks and the delta's index arithmetic need whole parameters, while
under FSDP (``use_orig_params=True``) each process holds a flat shard of every parameter; a
mask cut to the same shard (:func:`fsdp_local_masks`) works there. The cost is a full-size
gradient for the FFN weights that own selected slices (the delta method keeps gradients and
AdamW state for the selected slices only). At the end the change of the selected slices
becomes a NeuronDelta (``result.delta``, the base weights restored bit-exactly), as with the
delta method; ``merge=True`` keeps the trained weights instead.

Example:
    >>> cfg = TrainConfig(method="neurons", neuron_update="masked")  # doctest: +SKIP
    >>> res = train(model, tok, task, cfg, neurons=task_neurons)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def fsdp_local_masks(
    fsdp_model: nn.Module, masks: Mapping[str, torch.Tensor]
) -> dict[int, tuple[nn.Parameter, torch.Tensor]]:
    """``id(param) -> (param, mask)`` with each mask cut to this process's FSDP shard.

    For an FSDP (``use_orig_params=True``) model: every original parameter is a flat view of
    the part of it that this process holds; its mask is the same part of the flattened
    full-size mask (``masks``: name in the unwrapped model -> bool mask of the full shape).

    Example:
        >>> local = fsdp_local_masks(FSDP(model, use_orig_params=True), masks)  # doctest: +SKIP
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    out: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}
    for module in FSDP.fsdp_modules(fsdp_model):
        flat = getattr(module, "_flat_param", None)
        if flat is None:
            continue
        prefix = _clean(next(n for n, m in fsdp_model.named_modules() if m is module))
        for param, info, fqn in zip(flat._params, flat._shard_param_infos, flat._fqns, strict=True):
            name = _clean(f"{prefix}.{fqn}" if prefix else fqn)
            if name not in masks:
                continue
            full = masks[name].reshape(-1)
            if info.in_shard:
                local = full[info.intra_param_start_idx : info.intra_param_end_idx + 1]
            else:
                local = full[:0]
            out[id(param)] = (param, local.to(param.device))
    return out


def _clean(name: str) -> str:
    return name.replace("_fsdp_wrapped_module.", "").replace("_fsdp_wrapped_module", "").strip(".")
