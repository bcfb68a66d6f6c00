"""Label scoring: the log-likelihood of every label's answer tokens after a prompt.

The prompt is run once per example with ``use_cache=True``; the key/value cache is repeated once
per label and the (right-padded) label tokens are scored on top of it (``cache``), or every
prompt+label row is scored on its own (``concat``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import EncodedExample, collate, encode_answer, pad_id_of
from taskneurons.data.tasks import Example, Task
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.evaluation.metrics import content_free_log_prior
from taskneurons.evaluation.model_io import (
    cache_kwarg,
    device_of,
    forward_params,
    output_cache,
    positions,
    run_batches,
)

log = logging.getLogger(__name__)


class LabelTable(NamedTuple):
    """Answer tokens of every label.

    Attributes:
        ids: ``[labels, A]`` token ids, right-padded with the pad id.
        mask: ``[labels, A]`` 1 on a label's tokens, 0 on padding.
        lengths: tokens per label (``A = max(lengths)``).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    lengths: list[int]


def label_table(tokenizer, labels: Sequence[str], prompt_cfg: PromptConfig) -> LabelTable:
    """Answer token ids of every label: ``ids`` ``[labels, A]`` right-padded, ``mask``, lengths.

    Raises:
        ValueError: a label encodes to no tokens.
    """
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
    return LabelTable(table, mask, [len(ids) for ids in encoded])


def score_batch_cache(
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
    device = device_of(model)
    n_labels, width = label_ids.shape
    enc = [EncodedExample(tuple(p), len(p)) for p in prompts]
    batch = collate(enc, pad_id, padding_side="left")
    ids = batch["input_ids"].to(device)  # [batch, P]
    mask = batch["attention_mask"].to(device)  # [batch, P]
    kwargs: dict[str, Any] = {"attention_mask": mask, "use_cache": True}
    if "position_ids" in params:
        kwargs["position_ids"] = positions(mask)
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    out = model(input_ids=ids, **kwargs)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [batch, V]
    lab = label_ids.to(device)  # [labels, A]
    lmask = label_mask.to(device)  # [labels, A]
    ll = first[:, lab[:, 0]]  # [batch, labels]
    if width == 1:
        return ll
    cache = output_cache(out)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    b = ids.shape[0]
    cache.batch_repeat_interleave(n_labels)  # rows example-major: (b0,l0), (b0,l1), ...
    inp = lab[:, :-1].repeat(b, 1)  # [batch*labels, A-1]
    inp_mask = lmask[:, :-1].repeat(b, 1)  # [batch*labels, A-1]
    full_mask = torch.cat([mask.repeat_interleave(n_labels, dim=0), inp_mask], dim=1)
    kwargs = {"attention_mask": full_mask, "use_cache": True, cache_kwarg(params): cache}
    if "position_ids" in params:
        start = mask.sum(-1).repeat_interleave(n_labels)  # [batch*labels]
        kwargs["position_ids"] = start[:, None] + torch.arange(width - 1, device=device)
    out = model(input_ids=inp, **kwargs)
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # [batch*labels, A-1, V]
    target = lab[:, 1:].repeat(b, 1)  # [batch*labels, A-1]
    tok_ll = logp.gather(-1, target[..., None]).squeeze(-1)  # [batch*labels, A-1]
    tok_ll = tok_ll * lmask[:, 1:].repeat(b, 1)
    return ll + tok_ll.sum(-1).view(b, n_labels)


def score_batch_concat(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    label_ids: torch.Tensor,
    label_lengths: Sequence[int],
    pad_id: int,
) -> torch.Tensor:
    """Summed label log-likelihoods ``[batch, labels]`` (nats) from prompt+label rows."""
    device = device_of(model)
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


def label_log_likelihoods(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    table: LabelTable,
    pad_id: int,
    config: EvalConfig,
    *,
    desc: str,
    progress: bool,
) -> list[torch.Tensor]:
    """Summed log-likelihood (nats) of every label after every prompt: one ``[labels]`` each.

    ``config.scoring="cache"`` scores through the repeated KV cache and falls back to
    ``concat`` (with a warning) for the rest of the run when the model gives no repeatable
    cache. Batching and ordering follow ``config.batch_size`` / ``config.sort_by_length``.
    """
    params = forward_params(model)
    use_cache = config.scoring == "cache"

    def step(chunk: list[Sequence[int]]) -> list[torch.Tensor]:
        nonlocal use_cache
        ll = None
        if use_cache:
            ll = score_batch_cache(model, chunk, table.ids, table.mask, pad_id, params)
            if ll is None:
                log.warning(
                    "%s returned no repeatable KV cache; scoring labels by concatenation instead",
                    type(model).__name__,
                )
                use_cache = False
        if ll is None:
            ll = score_batch_concat(model, chunk, table.ids, table.lengths, pad_id)
        return [ll[row].cpu() for row in range(len(chunk))]  # [labels] each

    return run_batches(
        model,
        prompts,
        step,
        batch_size=config.batch_size,
        sort_by_length=config.sort_by_length,
        desc=desc,
        progress=progress,
    )


def label_predictions(
    task: Task,
    examples: Sequence[Example],
    sums: Sequence[torch.Tensor],
    lengths: Sequence[int],
    config: EvalConfig,
) -> tuple[list[dict[str, Any]], float, dict[str, float] | None]:
    """Predictions from label log-likelihoods: the label with the highest (ranked) score.

    Args:
        sums: ``[labels]`` log-likelihoods (nats) of each example, followed by those of the
            content-free calibration inputs (if any).
        lengths: tokens per label; ``config.length_normalize`` divides the scores by them.

    Returns:
        ``(predictions, correct, calibration)``: one dict per example (``input``, ``gold``,
        ``prediction``, ``correct``, ``log_likelihoods``, ``label_scores``), the number of
        correct predictions, and label -> subtracted log prior (``None`` without calibration).
    """
    n = len(examples)
    ranked_all = torch.stack(list(sums))  # [examples + content-free, labels]
    if config.length_normalize:
        ranked_all = ranked_all / torch.tensor(lengths, dtype=torch.float32)  # / [labels]
    ranked_ex = ranked_all[:n]  # [examples, labels]
    calibration: dict[str, float] | None = None
    if len(sums) > n:
        log_prior = content_free_log_prior(ranked_all[n:])  # [labels]
        ranked_ex = ranked_ex - log_prior
        calibration = dict(zip(task.labels, log_prior.tolist(), strict=True))
    predictions: list[dict[str, Any]] = []
    total = 0.0
    for ex, ll, ranked in zip(examples, sums[:n], ranked_ex, strict=True):
        pred = task.labels[int(torch.argmax(ranked))]
        correct = pred == ex.output
        total += correct
        predictions.append(
            {
                "input": ex.input,
                "gold": ex.output,
                "prediction": pred,
                "correct": correct,
                "log_likelihoods": dict(zip(task.labels, ll.tolist(), strict=True)),
                "label_scores": dict(zip(task.labels, ranked.tolist(), strict=True)),
            }
        )
    return predictions, total, calibration
