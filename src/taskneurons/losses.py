"""The loss shared by attribution and training: each example's mean answer-token NLL."""

from __future__ import annotations

import torch
from torch import nn


def per_example_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each example's mean NLL (nats) over its loss tokens, ``[batch]``.

    The LM head runs only at the positions that predict a loss token (``logits_to_keep`` with
    a boolean ``[batch, pos]`` mask), as in the relevance scores. An example without loss
    tokens gets 0.

    Args:
        model: a causal LM (or a ``PeftModel`` around one).
        batch: ``input_ids``, ``attention_mask``, ``labels`` (``-100`` off the loss), all
            ``[batch, pos]``, as made by :func:`taskneurons.data.prompts.collate`.

    Example:
        >>> per_example_loss(model, batch).shape  # doctest: +SKIP
        torch.Size([8])
    """
    input_ids = batch["input_ids"]  # [batch, pos]
    labels = batch["labels"]  # [batch, pos]
    keep = torch.zeros_like(labels, dtype=torch.bool)  # [batch, pos]
    keep[:, :-1] = labels[:, 1:] != -100  # position p predicts token p+1
    if not bool(keep.any()):
        raise ValueError("a batch has no loss tokens (every label is -100)")
    out = model(
        input_ids=input_ids,
        attention_mask=batch["attention_mask"],
        logits_to_keep=keep,
        use_cache=False,
    )
    logits = out.logits.float()  # [n_kept, vocab]
    if logits.dim() == 3:  # a model that ignores the boolean mask: select here
        logits = logits[keep]
    rows, cols = keep.nonzero(as_tuple=True)  # [n_kept] each
    targets = labels[rows, cols + 1]  # [n_kept]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")  # [n_kept]
    counts = keep.sum(dim=1).clamp(min=1).to(nll.dtype)  # [batch]
    per_example = torch.zeros(input_ids.shape[0], dtype=nll.dtype, device=nll.device)
    per_example = per_example.index_add(0, rows, nll)  # [batch]
    return per_example / counts
