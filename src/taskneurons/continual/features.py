"""Input features for task identification: mean last-layer hidden states, task vectors, weights.

The feature of an input text is the mean over its tokens of the model's last-layer hidden
state (``hidden_states[-1]``: after the final norm in Llama-like models), computed on the
input text alone (tokenizer's special tokens, no instruction or answer), so that the task's
instruction cannot give the task away. A task's vector (W-NCFT) or prototype (EPI) is the
mean feature of up to ``n`` of its train inputs (a seeded, label-stratified subset).

Example:
    >>> feats = mean_features(model, tok, ["the movie was good", "a cat sat"])  # [2, d]  # doctest: +SKIP
    >>> vec = task_vector(model, tok, sst2, n=1000, seed=0)  # [d]  # doctest: +SKIP
    >>> similarity_logits(feats[0], torch.stack([vec, vec2]), temperature=1.0)  # [2]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from taskneurons.data.prompts import pad_id_of
from taskneurons.data.tasks import Task, subset
from taskneurons.evaluation.model_io import device_of, run_batches


def _batch(tokenizer, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids [b, pos], attention_mask [b, pos])`` of ``texts``."""
    ids = [list(tokenizer(t, add_special_tokens=True)["input_ids"])[:max_length] for t in texts]
    ids = [row or [pad_id_of(tokenizer)] for row in ids]  # an empty text: one pad token
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id_of(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, row in enumerate(ids):
        input_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, : len(row)] = 1
    return input_ids, mask


def mean_features(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 8,
    max_length: int = 256,
    progress: bool = False,
    desc: str = "features",
) -> torch.Tensor:
    """Mean last-layer hidden state of each text, ``[n, d]`` float32 (CPU).

    Args:
        model: a causal LM (run in eval mode without gradients:
            :func:`~taskneurons.evaluation.model_io.run_batches`).
        tokenizer: its tokenizer.
        texts: the input texts, in batches of ``batch_size`` in their own order.
        batch_size: texts per forward.
        max_length: tokens kept per text.
        progress: show a tqdm bar over the batches, titled ``desc``.
        desc: the bar's title.

    Example:
        >>> mean_features(model, tok, ["good film"]).shape  # doctest: +SKIP
        torch.Size([1, 576])
    """
    device = device_of(model)

    def step(chunk: list[str]) -> torch.Tensor:
        ids, mask = _batch(tokenizer, chunk, max_length)
        res = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,
        )
        hidden = res.hidden_states[-1].float()  # [b, pos, d]
        m = mask.to(device).unsqueeze(-1).float()  # [b, pos, 1]
        return ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).cpu()  # [b, d]

    rows = run_batches(
        model, list(texts), step, batch_size=batch_size, sort_by_length=False,
        desc=desc, progress=progress,
    )  # fmt: skip
    return torch.stack(rows) if rows else torch.zeros(0)


def vector_inputs(task: Task, n: int = 1000, seed: int = 0) -> list[str]:
    """The inputs ``task``'s vector is the mean feature of: up to ``n`` of its train inputs
    (label-stratified for a classification task, seeded).

    Raises:
        ValueError: the task has no train examples.
    """
    if not task.train:
        raise ValueError(f"task {task.id!r} has no train examples to make its vector from")
    labels = task.labels if task.kind == "classification" else None
    return [e.input for e in subset(task.train, n, seed=seed, labels=labels)]


def task_vector(
    model: nn.Module,
    tokenizer,
    task: Task,
    n: int = 1000,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Mean feature ``[d]`` of :func:`vector_inputs` (up to ``n`` train inputs of ``task``);
    ``progress`` shows a bar over the forwards (they are ``n / batch_size``: minutes on a CPU).

    Raises:
        ValueError: the task has no train examples.
    """
    inputs = vector_inputs(task, n, seed)
    feats = mean_features(
        model, tokenizer, inputs, batch_size, max_length, progress, f"features of {task.id}"
    )  # [n, d]
    return feats.mean(0)


def similarity_logits(
    query: torch.Tensor, vectors: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``cos(query, vectors[t]) / temperature`` for every row ``t``, ``[tasks]`` float64.

    ``softmax`` of these is W-NCFT's task weighting; their argmax is EPI's nearest prototype.

    Example:
        >>> similarity_logits(torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        tensor([1., 0.], dtype=torch.float64)
    """
    q = query.double().unsqueeze(0)  # [1, d]
    cos = F.cosine_similarity(q, vectors.double(), dim=-1)  # [tasks]
    return cos / temperature
