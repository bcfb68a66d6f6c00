"""Label scoring: the log-likelihood of every label's answer tokens after a prompt.

The prompt is run once per example with ``use_cache=True``; the key/value cache is repeated once
per label and the (right-padded) label tokens are scored on top of it (``cache``), or every
prompt+label row is scored on its own (``concat``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from taskneurons.data.prompts import (
    EncodedExample,
    PromptConfig,
    collate,
    encode_answer,
    pad_id_of,
)


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _forward_params(model: nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _cache_kwarg(params: set[str]) -> str:
    """Name of the cache argument: ``cache`` (Transformers >= 5.x) or ``past_key_values``."""
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out) -> Any:
    for key in ("cache", "past_key_values"):
        value = out.get(key) if hasattr(out, "get") else getattr(out, key, None)
        if value is not None:
            return value
    return None


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``[batch, pos]`` of a left-padded mask (0 at the first real token)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _label_table(
    tokenizer, labels: Sequence[str], prompt_cfg: PromptConfig
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Answer token ids of every label: ``ids`` ``[labels, A]`` right-padded, ``mask``, lengths."""
    encoded = [encode_answer(tokenizer, label, prompt_cfg) for label in labels]
    for label, ids in zip(labels, encoded, strict=True):
        if not ids:
            raise ValueError(f"label {label!r} encodes to no tokens; cannot score it")
    width = max(len(ids) for ids in encoded)
    pad = pad_id_of(tokenizer)
    table = torch.full((len(labels), width), pad, dtype=torch.long)  # [labels, A]
    mask = torch.zeros((len(labels), width), dtype=torch.long)  # [labels, A]
    for row, ids in enumerate(encoded):
        table[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return table, mask, [len(ids) for ids in encoded]


def _score_batch_cache(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    label_ids: torch.Tensor,
    label_mask: torch.Tensor,
    pad_id: int,
    params: set[str],
) -> torch.Tensor | None:
    """Summed label log-likelihoods ``[batch, labels]`` (nats) through the KV cache.

    Returns ``None`` when the model gives no cache that can be repeated per label.
    """
    device = _device_of(model)
    n_labels, width = label_ids.shape
    enc = [EncodedExample(tuple(p), len(p)) for p in prompts]
    batch = collate(enc, pad_id, padding_side="left")
    ids = batch["input_ids"].to(device)  # [batch, P]
    mask = batch["attention_mask"].to(device)  # [batch, P]
    kwargs: dict[str, Any] = {"attention_mask": mask, "use_cache": True}
    if "position_ids" in params:
        kwargs["position_ids"] = _positions(mask)
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    out = model(input_ids=ids, **kwargs)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [batch, V]
    lab = label_ids.to(device)  # [labels, A]
    lmask = label_mask.to(device)  # [labels, A]
    ll = first[:, lab[:, 0]]  # [batch, labels]
    if width == 1:
        return ll
    cache = _output_cache(out)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    b = ids.shape[0]
    cache.batch_repeat_interleave(n_labels)  # rows example-major: (b0,l0), (b0,l1), ...
    inp = lab[:, :-1].repeat(b, 1)  # [batch*labels, A-1]
    inp_mask = lmask[:, :-1].repeat(b, 1)  # [batch*labels, A-1]
    full_mask = torch.cat([mask.repeat_interleave(n_labels, dim=0), inp_mask], dim=1)
    kwargs = {"attention_mask": full_mask, "use_cache": True, _cache_kwarg(params): cache}
    if "position_ids" in params:
        start = mask.sum(-1).repeat_interleave(n_labels)  # [batch*labels]
        kwargs["position_ids"] = start[:, None] + torch.arange(width - 1, device=device)
    out = model(input_ids=inp, **kwargs)
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # [batch*labels, A-1, V]
    target = lab[:, 1:].repeat(b, 1)  # [batch*labels, A-1]
    tok_ll = logp.gather(-1, target[..., None]).squeeze(-1)  # [batch*labels, A-1]
    tok_ll = tok_ll * lmask[:, 1:].repeat(b, 1)
    return ll + tok_ll.sum(-1).view(b, n_labels)


def _score_batch_concat(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    label_ids: torch.Tensor,
    label_lengths: Sequence[int],
    pad_id: int,
) -> torch.Tensor:
    """Summed label log-likelihoods ``[batch, labels]`` (nats) from prompt+label rows."""
    device = _device_of(model)
    n_labels = label_ids.shape[0]
    labels = [label_ids[i, :n].tolist() for i, n in enumerate(label_lengths)]
    enc = [EncodedExample(tuple(p) + tuple(lab), len(p)) for p in prompts for lab in labels]
    batch = collate(enc, pad_id, padding_side="right")
    ids = batch["input_ids"].to(device)  # [batch*labels, pos]
    mask = batch["attention_mask"].to(device)  # [batch*labels, pos]
    target = batch["labels"].to(device)  # [batch*labels, pos], -100 off-answer
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)  # [batch*labels, pos-1, V]
    tgt = target[:, 1:]  # [batch*labels, pos-1]
    on = tgt != -100
    tok_ll = logp.gather(-1, tgt.clamp(min=0)[..., None]).squeeze(-1) * on
    return tok_ll.sum(-1).view(len(prompts), n_labels)
