"""The vocabulary a neuron writes towards: its down-projection column through the unembedding.

A FFN neuron ``u`` of layer ``L`` adds ``a_u * W_down[:, u]`` to the residual stream. Read
through the final norm's gain ``g`` and the unembedding ``W_U`` ``[vocab, d_model]`` (the logit
lens), ``W_U @ (g * W_down[:, u])`` ``[vocab]`` says which tokens a positive activation
promotes (largest entries) and suppresses (smallest). The choice made here: the final norm's
*weight* is applied (Gemma's ``1 + weight``), its bias and the normalisation by the residual's
scale are not (they depend on the input, not on the neuron); the unembedding's bias is left
out (the same for every neuron). A model without a final norm with a weight uses ``W_U`` alone.

Example:
    >>> lens = logit_lens(model, tok, layer=0, unit=3, n=5)  # doctest: +SKIP
    >>> lens.promoted[0]  # doctest: +SKIP
    ('" good"', 0.41)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

from taskneurons.models.adapters import get_adapter

#: attribute names of the final norm on the base model, by family
NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f")


@dataclass
class Lens:
    """Promoted and suppressed tokens (text, logit contribution per unit activation)."""

    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    promoted_ids: list[int]
    note: str


def final_norm_gain(model: nn.Module) -> tuple[torch.Tensor | None, str]:
    """``(gain [d_model] or None, what was used)``: the final norm's weight, if any."""
    base = getattr(model, "base_model", model)
    for name in NORM_NAMES:
        norm = getattr(base, name, None)
        weight = getattr(norm, "weight", None)
        if isinstance(weight, torch.Tensor):
            gemma = type(norm).__name__.startswith("Gemma")
            gain = weight.detach().float() + (1.0 if gemma else 0.0)
            return gain, f"final norm gain ({name}.weight{' + 1' if gemma else ''}) applied"
    return None, "no final norm weight found: W_U alone"


def direction_logits(model: nn.Module, layer: int, unit: int) -> tuple[torch.Tensor, str]:
    """``(W_U @ (g * W_down[:, unit]) [vocab], note)`` for FFN neuron ``unit`` of ``layer``."""
    adapter = get_adapter(model)
    w_down = adapter.weight_out_in(layer, adapter.spec.w2)  # [d_model, d_ff]
    column = w_down[:, unit].detach().float()  # [d_model]
    gain, note = final_norm_gain(model)
    if gain is not None:
        column = column * gain.to(column.device)
    w_u = model.get_output_embeddings().weight.detach().float()  # [vocab, d_model]
    return w_u @ column.to(w_u.device), note  # [vocab]


def logit_lens(model: nn.Module, tokenizer, layer: int, unit: int, n: int = 8) -> Lens:
    """The ``n`` tokens neuron ``(layer, unit)`` promotes most and suppresses most."""
    logits, note = direction_logits(model, layer, unit)  # [vocab]
    n = min(n, logits.numel())
    top = torch.topk(logits, n)
    bottom = torch.topk(-logits, n)

    def named(ids: torch.Tensor, values: torch.Tensor) -> list[tuple[str, float]]:
        """``(token as a quoted string, value)``: spaces and newlines stay visible."""
        return [
            (json.dumps(tokenizer.decode([int(i)]), ensure_ascii=False), float(v))
            for i, v in zip(ids, values, strict=True)
        ]

    return Lens(
        named(top.indices, top.values),
        named(bottom.indices, -bottom.values),
        [int(i) for i in top.indices],
        note,
    )
