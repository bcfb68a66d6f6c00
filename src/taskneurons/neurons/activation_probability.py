"""Activation probability: how often each neuron fires on a task's tokens (for LAPE).

``P[n] = (# tokens where activation_n > threshold) / (# tokens)`` over a task's examples, per
neuron, in ``[0, 1]``, laid out as :class:`~taskneurons.neurons.scores.NeuronScores`
(``[layers, units]`` per module) so that
:func:`~taskneurons.neurons.selection.algorithms.lape.select_lape` can compare tasks. The
activation is the one the relevance scores use (the input of W2 for ``ffn`` neurons, each FFN
linear's output for ``linear`` neurons), read with :func:`~taskneurons.neurons.sites.hook_sites`
in one forward pass per batch (no gradients).

Which tokens count (``tokens``):

* ``"answer"`` (default): the positions that predict an answer token (those the answer-only
  loss and the relevance scores are computed at);
* ``"all"``: every non-padding token of prompt and answer.

Example:
    >>> p = activation_probability(model, task, tokenizer=tok, threshold=0.0)  # doctest: +SKIP
    >>> p.scores["ffn"].shape, float(p.scores["ffn"].max()) <= 1  # doctest: +SKIP
    (torch.Size([30, 1536]), True)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Literal

import torch
from torch import nn

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import iter_batches
from taskneurons.data.tasks import Example, Task, examples_hash
from taskneurons.losses import loss_width
from taskneurons.models.placement import input_device
from taskneurons.models.saving import tuned_on
from taskneurons.neurons.attribution import scoring_examples, tuned_overlap
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.sites import hook_sites
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint

Tokens = Literal["answer", "all"]


def token_mask(batch: dict[str, torch.Tensor], tokens: Tokens) -> torch.Tensor:
    """Which positions of a batch count, bool ``[batch, pos]``.

    ``"answer"``: position ``p`` counts when ``labels[:, p + 1] != -100`` (it predicts an
    answer token); ``"all"``: the ``attention_mask``.

    Example:
        >>> b = {"attention_mask": torch.tensor([[1, 1, 1, 0]]),
        ...      "labels": torch.tensor([[-100, -100, 7, -100]])}
        >>> token_mask(b, "answer").tolist(), token_mask(b, "all").tolist()
        ([[False, True, False, False]], [[True, True, True, False]])
    """
    if tokens == "all":
        return batch["attention_mask"].bool()
    if tokens != "answer":
        raise ValueError(f"tokens must be 'answer' or 'all', got {tokens!r}")
    labels = batch["labels"]  # [batch, pos]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


class _FiringCounter:
    """Hooks summing, per neuron, ``per_token(activation)`` over the counted tokens (by default
    whether the activation exceeds ``threshold``; the activation itself for a mean)."""

    def __init__(self, space: NeuronSpace, threshold: float, per_token=None):
        self.space = space
        self.threshold = threshold
        self.per_token = per_token or (lambda act: act > self.threshold)
        self.counts = space.zeros(torch.float64)  # [layers, units] per module
        self.mask: torch.Tensor | None = None  # [batch, pos, 1]
        self._handles: list = []

    def __enter__(self) -> _FiringCounter:
        self._handles = hook_sites(self.space, lambda layer, module: self._make(layer, module))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make(self, layer: int, module: str):
        def count(act: torch.Tensor) -> torch.Tensor:
            mask = self.mask  # [batch, pos, 1]
            value = self.per_token(act.detach().float())  # [batch, pos, units] (OPT: [b*pos, u])
            # a device_map runs layers on several devices: the mask goes to the layer's
            value = value.reshape(mask.shape[0], mask.shape[1], -1) * mask.to(value.device)
            self.counts[module][layer] += value.sum(dim=(0, 1)).to("cpu", torch.float64)
            return act

        return count


def _examples(task: Task, config: AttributionConfig, examples, tuned) -> list[Example]:
    """The examples to run: ``examples``, else those the relevance scores draw
    (:func:`~taskneurons.neurons.attribution.scoring_examples`)."""
    exs = list(examples) if examples is not None else scoring_examples(task, config, tuned)
    if not exs:
        raise ValueError(f"task {task.id!r}: no examples to run")
    return exs


def _count(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    space: NeuronSpace,
    threshold: float,
    tokens: Tokens,
    per_token=None,
) -> tuple[dict[str, torch.Tensor], int]:
    """``(sums [layers, units] per module, n_tokens)``: one no-grad forward per batch; the
    sum of ``per_token(activation)`` (default: ``activation > threshold``)."""
    device = input_device(model)
    was_training = model.training
    model.eval()
    n_tokens = 0
    try:
        with torch.no_grad(), _FiringCounter(space, threshold, per_token) as counter:
            for batch in batches:
                mask = token_mask(batch, tokens)  # [batch, pos]
                width = loss_width(batch["labels"]) if tokens == "answer" else mask.shape[1]
                mask = mask[:, :width]
                counter.mask = mask[..., None].to(device)  # [batch, width, 1]
                model(
                    input_ids=batch["input_ids"][:, :width].to(device),
                    attention_mask=batch["attention_mask"][:, :width].to(device),
                    use_cache=False,
                    logits_to_keep=1,
                )
                n_tokens += int(mask.sum())
    finally:
        model.train(was_training)
    return counter.counts, n_tokens


def activation_probability(
    model: nn.Module,
    data: Task | Iterable[dict[str, torch.Tensor]],
    space: NeuronSpace | None = None,
    *,
    tokenizer=None,
    threshold: float = 0.0,
    tokens: Tokens = "answer",
    config: AttributionConfig | None = None,
    examples: Sequence[Example] | None = None,
) -> NeuronScores:
    """Share of a task's tokens on which each neuron's activation exceeds ``threshold``.

    Args:
        model: a Hugging Face causal LM of the adapter table.
        data: a :class:`Task` (its ``config.split`` examples, ``config.n_examples`` of them,
            drawn as :func:`~taskneurons.neurons.attribution.relevance_scores` draws them;
            needs ``tokenizer``) or batches from :func:`taskneurons.data.prompts.collate`.
        space: the neurons (default ``NeuronSpace(model, config.definition)``).
        tokenizer: needed when ``data`` is a task.
        threshold: an activation above it counts as firing (0: positive activation, as LAPE).
        tokens: ``"answer"`` or ``"all"`` (see the module docstring).
        config: data knobs (split, n_examples, seed, batch_size, prompt); the default
            :class:`AttributionConfig` draws the same examples as the relevance scores.
        examples: run these examples of the task instead.

    Returns:
        :class:`NeuronScores`, float32 ``[layers, units]`` per module in ``[0, 1]``; meta
        ``kind="activation_probability"``, ``threshold``, ``tokens``, ``n_tokens``, task, ...

    Example:
        >>> p = activation_probability(model, batches, space, threshold=0.0)  # doctest: +SKIP
    """
    config = config or AttributionConfig()
    space = space if space is not None else NeuronSpace(model, config.definition)  # type: ignore[arg-type]
    meta: dict = {"kind": "activation_probability", "threshold": float(threshold)}
    meta.update(tokens=tokens, config=config.to_dict(), space=space.describe())
    meta["model_fingerprint"] = model_fingerprint(model)
    batches = _batches(data, tokenizer, config, examples, meta, tuned_on(model))
    counts, n_tokens = _count(model, batches, space, float(threshold), tokens)
    if n_tokens == 0:
        raise ValueError(f"no {tokens!r} tokens to count (empty data or no answer tokens)")
    meta["n_tokens"] = n_tokens
    probs = {m: (c / n_tokens).to(torch.float32) for m, c in counts.items()}
    return NeuronScores(space.definition, probs, meta)


def _batches(data, tokenizer, config: AttributionConfig, examples, meta: dict, tuned) -> Iterable:
    """The batches to run: ``data`` itself, or a task's examples (recorded in ``meta``; those
    the model was fine-tuned on, ``tuned``, left out as the relevance scores leave them)."""
    if not isinstance(data, Task):
        return data
    if tokenizer is None:
        raise ValueError("counting activations on a Task needs the tokenizer")
    exs = _examples(data, config, examples, tuned)
    meta.update(task=data.id, task_source=data.source, n_examples=len(exs))
    meta.update(tuned_overlap(exs, tuned))
    meta["data_hash"] = examples_hash(exs)
    pcfg = PromptConfig(**{**asdict(config.prompt), "loss_on": "answer"})
    return iter_batches(tokenizer, data, exs, pcfg, config.batch_size)


def mean_activation(
    model: nn.Module,
    data: Task | Iterable[dict[str, torch.Tensor]],
    space: NeuronSpace | None = None,
    *,
    tokenizer=None,
    tokens: Tokens = "all",
    config: AttributionConfig | None = None,
) -> NeuronScores:
    """Each neuron's mean activation over a task's tokens (the value a mean ablation holds it at).

    Arguments as :func:`activation_probability`; ``tokens`` ``"all"`` (every token of the
    examples, the default) or ``"answer"``.

    Returns:
        :class:`NeuronScores`, float32 ``[layers, units]`` per module; meta
        ``kind="mean_activation"``, ``tokens``, ``n_tokens``, the task and data hash.

    Example:
        >>> means = mean_activation(model, task, tokenizer=tok)  # doctest: +SKIP
        >>> with deactivate(model, neurons, mode="mean", values=means): ...  # doctest: +SKIP
    """
    config = config or AttributionConfig()
    space = space if space is not None else NeuronSpace(model, config.definition)  # type: ignore[arg-type]
    meta: dict = {"kind": "mean_activation", "tokens": tokens, "config": config.to_dict()}
    meta.update(space=space.describe(), model_fingerprint=model_fingerprint(model))
    batches = _batches(data, tokenizer, config, None, meta, tuned_on(model))
    sums, n_tokens = _count(model, batches, space, 0.0, tokens, per_token=lambda act: act)
    if n_tokens == 0:
        raise ValueError(f"no {tokens!r} tokens to average over")
    meta["n_tokens"] = n_tokens
    means = {m: (v / n_tokens).to(torch.float32) for m, v in sums.items()}
    return NeuronScores(space.definition, means, meta)


def probability_quantile(p: torch.Tensor, q: float | None, per_layer: bool) -> torch.Tensor:
    """The lower ``q`` quantile (``sorted[floor(q * (n - 1))]``) of ``p`` ``[T, layers, units]``:
    one value ``[1, 1, 1]``, or one per layer ``[1, layers, 1]`` (``per_layer``); ``None``: 0.

    Example:
        >>> probability_quantile(torch.tensor([[[0.0, 0.25], [0.5, 0.75]]]), 0.5, False).item()
        0.25
    """
    if q is None:
        return torch.zeros(1, 1, 1, dtype=p.dtype)
    if per_layer:
        rows = p.permute(1, 0, 2).reshape(p.shape[1], -1)  # [layers, T * units]
    else:
        rows = p.reshape(1, -1)  # [1, T * layers * units]
    idx = int(q * (rows.shape[1] - 1))
    return rows.sort(dim=1).values[:, idx].reshape(1, -1, 1)


def lape_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) over tasks of activation probabilities ``[T, ...]`` normalised per neuron.

    ``p[t] = P[t] / sum_t P[t]``, ``H = -sum_t p[t] log p[t]`` with ``0 log 0 = 0``; a neuron
    never active (all ``P`` zero) gets ``log T``. Returns ``[...]``.

    Example:
        >>> lape_entropy(torch.tensor([[1.0, 0.5], [0.0, 0.5]])).tolist()
        [0.0, 0.6931471805599453]
    """
    p = probs.double()
    total = p.sum(dim=0, keepdim=True)  # [1, ...]
    dist = torch.where(total > 0, p / total.clamp_min(1e-300), torch.full_like(p, 1 / len(p)))
    logs = torch.where(dist > 0, dist.log(), torch.zeros_like(dist))
    return 0.0 - (dist * logs).sum(dim=0)  # 0.0 - x: no -0.0
