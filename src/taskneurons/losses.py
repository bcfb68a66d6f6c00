"""The loss shared by attribution and training: each example's mean answer-token NLL."""

from __future__ import annotations

import torch
from torch import nn


def loss_width(labels: torch.Tensor) -> int:
    """How many leading positions of a ``[batch, pos]`` batch the loss depends on.

    Position ``p`` predicts token ``p + 1``; in a causal LM nothing after the last position
    that predicts a loss token can change the loss (typically the final answer token and the
    right padding of the longest row), so the model need not run there. Returns ``pos`` when
    no position carries loss (the caller reports that).

    Example:
        >>> loss_width(torch.tensor([[-100, -100, 7, 8, -100]]))  # positions 1, 2 predict 7, 8
        3
    """
    predicts = (labels[:, 1:] != -100).any(dim=0)  # [pos - 1]
    if not bool(predicts.any()):
        return int(labels.shape[1])
    return int(predicts.nonzero().max()) + 1


def per_example_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each example's mean NLL (nats) over its loss tokens, ``[batch]``.

    The model runs only on the positions up to the last one that predicts a loss token
    (:func:`loss_width`; a causal LM's later positions cannot change the loss), and the LM
    head only at the positions that predict a loss token (``logits_to_keep`` with a boolean
    ``[batch, pos]`` mask), as in the relevance scores. An example without loss tokens gets 0.

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
    predicts = labels[:, 1:] != -100  # [batch, pos - 1]: position p predicts token p+1
    if not bool(predicts.any()):
        raise ValueError("a batch has no loss tokens (every label is -100)")
    width = loss_width(labels)  # <= pos - 1 here
    keep = predicts[:, :width]  # [batch, width]
    out = model(
        input_ids=input_ids[:, :width],
        attention_mask=batch["attention_mask"][:, :width],
        logits_to_keep=keep,
        use_cache=False,
    )
    # at least float32 (a float64 model keeps its precision)
    logits = out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))  # [n_kept, vocab]
    if logits.dim() == 3:  # a model that ignores the boolean mask: select here
        logits = logits[keep]
    rows, cols = keep.nonzero(as_tuple=True)  # [n_kept] each
    targets = labels[rows, cols + 1]  # [n_kept]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")  # [n_kept]
    counts = keep.sum(dim=1).clamp(min=1).to(nll.dtype)  # [batch]
    per_example = torch.zeros(input_ids.shape[0], dtype=nll.dtype, device=nll.device)
    per_example = per_example.index_add(0, rows, nll)  # [batch]
    return per_example / counts
