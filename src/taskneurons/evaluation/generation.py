"""Greedy generation from left-padded prompts, cut at EOS and (optionally) the first newline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from taskneurons.data.prompts import (
    EncodedExample,
    collate,
)
from taskneurons.evaluation.label_scoring import _device_of


class _NewlineStop:
    """Stop a row once its generated text has a newline after some non-blank text.

    (Transformers' ``stop_strings`` needs a tokenizer that can encode ``"abcdef"`` into known
    tokens; this works with any tokenizer.) Follows the ``StoppingCriteria`` protocol:
    ``(input_ids [batch, pos], scores) -> BoolTensor [batch]``.
    """

    def __init__(self, tokenizer, prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.prompt_width :].tolist()  # [batch, new]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        done = ["\n" in text.lstrip() for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _cut_generation(text: str, stop_at_newline: bool) -> str:
    """The answer in a generated text: up to the first newline after leading blanks, stripped.

    Example:
        >>> _cut_generation("\\n Good\\nBad", True)
        'Good'
    """
    if stop_at_newline:
        text = text.lstrip().split("\n", 1)[0]
    return text.strip()


def _generate_batch(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    max_new_tokens: int,
    stop_at_newline: bool,
) -> list[str]:
    """Greedy continuations of left-padded prompts, cut at EOS and (optionally) a newline."""
    device = _device_of(model)
    enc = [EncodedExample(tuple(p), len(p)) for p in prompts]
    batch = collate(enc, pad_id, padding_side="left")
    ids = batch["input_ids"].to(device)  # [batch, P]
    mask = batch["attention_mask"].to(device)  # [batch, P]
    eos = getattr(tokenizer, "eos_token_id", None)
    gen_kwargs: dict[str, Any] = {
        "do_sample": False,
        "max_new_tokens": max_new_tokens,
        "pad_token_id": pad_id,
        "num_beams": 1,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    if eos is not None:
        gen_kwargs["eos_token_id"] = eos
    if stop_at_newline:
        from transformers import StoppingCriteriaList

        gen_kwargs["stopping_criteria"] = StoppingCriteriaList(
            [_NewlineStop(tokenizer, ids.shape[1])]
        )
    out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
    new = out[:, ids.shape[1] :]  # [batch, new]
    stops = {eos} if eos is not None else set()
    texts = []
    for row in new.tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        text = tokenizer.decode(row[:cut], skip_special_tokens=True)
        texts.append(_cut_generation(text, stop_at_newline))
    return texts
