"""Naive reference computations, used as oracles by the tests and as baselines by the benchmarks.

They are slow on purpose (parameter gradients on, logits everywhere, float64): each is the plain
textbook computation that the library's fast path must equal.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from taskneurons.neurons.attribution_config import Aggregate
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.sites import hook_sites
from taskneurons.neurons.space import NeuronSpace
from taskneurons.training.neuron_delta import selection_masks


def masked_gradient_hooks(
    model: nn.Module, neurons: NeuronSet, space: NeuronSpace | None = None
) -> list[RemovableHandle]:
    """Naive neuron training, for tests and benchmarks only: mask every parameter's gradient.

    Registers a gradient hook on every parameter of ``model`` (turning ``requires_grad`` on)
    that zeroes the entries not owned by a neuron of ``neurons`` (all entries of parameters
    outside the FFN). Full fine-tuning with these hooks, SGD or AdamW without weight decay,
    changes exactly the entries a :class:`NeuronDelta` trains, by the same amounts (AdamW's
    decoupled decay would also shrink the masked entries; use ``weight_decay=0``).

    Returns:
        The hook handles (call ``.remove()`` on each to undo).

    Example:
        >>> handles = masked_gradient_hooks(model, task_neurons)  # doctest: +SKIP
        >>> train(model, tok, task, TrainConfig(method="full", weight_decay=0))  # doctest: +SKIP
        >>> for h in handles: h.remove()  # doctest: +SKIP
    """
    masks = selection_masks(model, neurons, space)
    handles: list[RemovableHandle] = []
    for name, p in model.named_parameters():
        p.requires_grad_(True)
        mask = masks.get(name)
        if mask is None:
            handles.append(p.register_hook(torch.zeros_like))
        else:
            handles.append(p.register_hook(lambda g, m=mask: g * m.to(g.dtype)))
    return handles


def reference_relevance_scores(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    space: NeuronSpace,
    aggregate: Aggregate = "example",
) -> dict[str, torch.Tensor]:
    """The naive reference computation of :func:`relevance_scores` (test oracle and baseline).

    Parameter gradients on, logits at every position, ``retain_grad`` on every activation,
    float64 accumulation. Same loss and aggregation as :func:`relevance_scores`; kept only to
    check it and to measure what its shortcuts save (``benchmarks/attribution.py``).

    Returns:
        module -> float64 ``[layers, units]``.
    """
    sums = space.zeros(torch.float64)
    n = 0
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    device = next(model.parameters()).device
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            _add_batch_scores(model, batch, space, aggregate, sums)
            n += batch["input_ids"].shape[0]
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in flags:
            p.requires_grad_(flag)
    if n == 0:
        raise ValueError("no examples were scored (empty data)")
    return {m: (s / n).abs() if aggregate == "task" else s / n for m, s in sums.items()}


def _add_batch_scores(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    space: NeuronSpace,
    aggregate: Aggregate,
    sums: dict[str, torch.Tensor],
) -> None:
    """Add one batch's activation x gradient attributions, aggregated per example, to ``sums``."""
    logits, acts = _forward_keeping_activations(model, batch, space)
    logp = torch.log_softmax(logits.float()[:, :-1], dim=-1)  # [batch, pos-1, vocab]
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * valid
    loss = (nll.sum(1) / valid.sum(1).clamp(min=1)).sum()
    model.zero_grad(set_to_none=True)
    loss.backward()
    mask = batch["attention_mask"][..., None].double()  # [batch, pos, 1]
    for (layer, m), (a, value) in acts.items():
        prod = (a.grad.double() * value.double()).reshape(*mask.shape[:2], -1)
        prod = prod * mask  # [batch, pos, units]
        per_ex = prod.abs().sum(1) if aggregate == "token_abs" else prod.sum(1)
        sums[m][layer] += (per_ex.abs().sum(0) if aggregate == "example" else per_ex.sum(0)).cpu()


def _forward_keeping_activations(
    model: nn.Module, batch: dict[str, torch.Tensor], space: NeuronSpace
) -> tuple[torch.Tensor, dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]]:
    """The logits ``[batch, pos, vocab]`` and, per ``(layer, module)`` site, the activation
    (its gradient retained) with a copy of its value."""
    acts: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(layer: int, module: str):
        def fn(act: torch.Tensor) -> torch.Tensor:
            act.retain_grad()
            # the value is copied: a model may add into the output in place (Falcon)
            acts[(layer, module)] = (act, act.detach().clone())
            return act

        return fn

    handles = hook_sites(space, keep)
    try:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        for h in handles:
            h.remove()
    return logits, acts
