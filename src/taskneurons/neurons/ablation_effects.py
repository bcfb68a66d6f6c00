"""The true effect of zeroing one neuron: ``|ΔL|`` measured by ablation, many neurons per pass.

Relevance scores (:mod:`~taskneurons.neurons.attribution`) are a first-order estimate of the
loss change when a neuron is set to zero. This module measures that change itself, so the
estimate can be checked: for each neuron of a list, its activation is zeroed at every position
(the same site and meaning as :func:`~taskneurons.neurons.intervention.deactivate`) and each
example's loss (:func:`~taskneurons.losses.per_example_loss`) is compared with the unablated
one. ``chunk`` neurons are measured in one forward pass: the batch is repeated ``chunk`` times
and copy ``c`` has neuron ``c`` zeroed (a per-row mask in the site hook), which equals
``chunk`` separate passes up to float rounding.

Aggregation matches the relevance scores' ``aggregate``:

* ``"example"`` and ``"token_abs"``: ``mean_examples |ΔL_e|`` (for ``token_abs`` the estimate
  ``Σ_tokens |g·a|`` bounds the first-order ``|ΔL_e|`` from above);
* ``"task"``: ``|mean_examples ΔL_e|``.

Example:
    >>> effects = ablation_effects(model, batches, space, [Neuron(0, "ffn", 3)])  # doctest: +SKIP
    >>> effects.shape  # [n_neurons], float64, nats  # doctest: +SKIP
    torch.Size([1])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from taskneurons.losses import per_example_loss
from taskneurons.models.placement import input_device
from taskneurons.neurons.sites import hook_sites
from taskneurons.neurons.space import Neuron, NeuronSpace


def _row_masks(
    space: NeuronSpace, chunk: Sequence[Neuron], batch: int
) -> dict[tuple[int, str], torch.Tensor]:
    """Per site, a ``[len(chunk) * batch, units]`` mask: copy ``c`` of the batch zeroes neuron
    ``chunk[c]``; sites without a neuron of the chunk are absent."""
    masks: dict[tuple[int, str], torch.Tensor] = {}
    for c, n in enumerate(chunk):
        key = (n.layer, n.module)
        if key not in masks:
            masks[key] = torch.ones(len(chunk) * batch, space.units[n.module])
        masks[key][c * batch : (c + 1) * batch, n.unit] = 0.0
    return masks


def _chunk_deltas(
    model: nn.Module,
    space: NeuronSpace,
    batch: dict[str, torch.Tensor],
    chunk: Sequence[Neuron],
    base: torch.Tensor,
) -> torch.Tensor:
    """``ΔL_e`` of every example (columns) under each neuron of ``chunk`` zeroed (rows),
    ``[len(chunk), batch]`` float64."""
    b = int(batch["input_ids"].shape[0])
    masks = _row_masks(space, chunk, b)

    def make_fn(layer: int, module: str):
        mask = masks.get((layer, module))
        if mask is None:
            return None
        return lambda act: act * mask.to(act)[:, None, :]  # [rows, pos, units] * [rows, 1, units]

    big = {k: v.repeat(len(chunk), 1) for k, v in batch.items()}  # [chunk * batch, pos]
    handles = hook_sites(space, make_fn)
    try:
        losses = per_example_loss(model, big).double()  # [chunk * batch]
    finally:
        for h in handles:
            h.remove()
    return losses.view(len(chunk), b) - base  # [chunk, batch]


def ablation_effects(
    model: nn.Module,
    batches: Sequence[dict[str, torch.Tensor]],
    space: NeuronSpace,
    neurons: Sequence[Neuron],
    aggregate: str = "example",
    chunk: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """The loss change of zeroing each of ``neurons`` alone, ``[len(neurons)]`` float64 (nats).

    Args:
        model: the causal LM (put in eval mode for the duration; no gradients).
        batches: batches as made by :func:`taskneurons.data.prompts.collate` (``input_ids``,
            ``attention_mask``, ``labels``, all ``[batch, pos]``).
        space: the neurons' space.
        neurons: which neurons to zero, one at a time.
        aggregate: ``example``/``token_abs`` (mean ``|ΔL_e|``) or ``task`` (``|mean ΔL_e|``).
        chunk: neurons measured per forward pass (the batch is repeated that many times).
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    device = input_device(model)
    sums = torch.zeros(len(neurons), dtype=torch.float64)
    n_examples = 0
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(batches) * len(neurons), desc="ablation", disable=not progress)
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            base = per_example_loss(model, batch).double()  # [batch]
            for start in range(0, len(neurons), chunk):
                part = neurons[start : start + chunk]
                delta = _chunk_deltas(model, space, batch, part, base).cpu()  # [chunk, batch]
                sums[start : start + len(part)] += (
                    delta.sum(1) if aggregate == "task" else delta.abs().sum(1)
                )
                bar.update(len(part))
            n_examples += int(base.shape[0])
    bar.close()
    model.train(was_training)
    if n_examples == 0:
        raise ValueError("no examples to ablate on (empty batches)")
    mean = sums / n_examples
    return mean.abs() if aggregate == "task" else mean
