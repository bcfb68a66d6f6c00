"""Relevance scores: gradient x activation at every neuron, with activation-only backward.

For neuron ``j`` with activation ``ω`` (``[batch, pos]`` values), the relevance to a task is the
first-order estimate of ``|ΔL|`` when ``ω`` is set to zero: ``|∂L/∂ω · ω|`` (PAPER.md §1).

How it is computed, in one forward and one backward per batch:

* every parameter is frozen (``requires_grad=False``) for the duration, so the backward computes
  no parameter gradient at all; the autograd graph starts at the first hooked activation
  (layer 0's), which is made a leaf that requires grad;
* the activations are read by hooks at the :class:`NeuronSpace` sites (the input of W2 for
  ``ffn``, each FFN linear's output for ``linear``); a tensor hook multiplies each activation
  with its gradient during the backward and reduces it over positions at once, so nothing
  per-token outlives the batch;
* the LM head runs only at the positions that carry loss (``logits_to_keep`` with a boolean
  ``[batch, pos]`` mask), not at every position;
* the loss of an example is the mean negative log-likelihood (nats) of its loss tokens (the
  answer tokens by default), and a batch's loss is the sum over its examples, so an example's
  gradient does not depend on which batch or process it lands in;
* a task's examples are batched longest first (``group_by_length``), so batches carry
  little padding (about 5 % of the tokens instead of 21 % on 128 mixed examples of
  sst2/agnews/mnli);
* with ``AttributionConfig(checkpointing=True)`` the decoder layers run under activation
  checkpointing (same scores, about one more forward of compute, much less activation memory;
  :mod:`~taskneurons.neurons.score_hooks`);
* whatever the model's dtype (bf16, fp16), products are taken in float32 and summed in float64;
* with an Accelerate ``Accelerator``, each process scores its shard of the examples and the
  sums are added across processes.

Aggregation over tokens and examples (``AttributionConfig.aggregate``):

* ``"example"`` (default): ``mean_examples |Σ_tokens g·a|`` — the first-order ``|ΔL_e|``
  of each example, averaged;
* ``"task"``: ``|mean_examples Σ_tokens g·a|`` — first-order ``|ΔL|`` of the task's mean loss;
* ``"token_abs"``: ``mean_examples Σ_tokens |g·a|``.

Example:
    >>> space = NeuronSpace(model, "ffn")  # doctest: +SKIP
    >>> scores = relevance_scores(model, task, space, tokenizer=tok)  # doctest: +SKIP
    >>> scores.scores["ffn"].shape  # [layers, d_ff]  # doctest: +SKIP
    torch.Size([30, 1536])
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from taskneurons._ranks import shared_accelerator
from taskneurons.data.prompts import iter_batches
from taskneurons.data.tasks import Example, Task, example_key, examples_hash, subset
from taskneurons.losses import loss_width, per_example_loss
from taskneurons.models.placement import input_device
from taskneurons.models.saving import tuned_on
from taskneurons.neurons.attribution_config import Aggregate, AttributionConfig
from taskneurons.neurons.score_hooks import (
    CheckpointedAccumulator,
    ScoreAccumulator,
    checkpointed_layers,
)
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Set ``requires_grad=False`` on every parameter; restore the previous flags on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def scoring_examples(
    task: Task, config: AttributionConfig, tuned: frozenset[str] | None = None
) -> list[Example]:
    """The task's ``config.split`` examples, ``config.n_examples`` of them (label-stratified),
    drawn from those not in ``tuned`` (the keys of the examples the model was fine-tuned on,
    :func:`~taskneurons.models.saving.tuned_on`) when ``config.exclude_tuned`` and any remain.

    Example:
        >>> exs = scoring_examples(task, AttributionConfig(n_examples=8), tuned_on(model))  # doctest: +SKIP
    """
    examples = task.split(config.split)
    if not examples:
        raise ValueError(f"task {task.id!r} has no {config.split} examples to score")
    if config.exclude_tuned and tuned:
        fresh = [ex for ex in examples if example_key(ex) not in tuned]
        examples = fresh or examples  # all of them tuned on: the overlap record says so
    if config.n_examples is not None and config.n_examples < len(examples):
        labels = task.labels if task.kind == "classification" else None
        examples = subset(examples, config.n_examples, seed=config.seed, labels=labels)
    return list(examples)


def tuned_overlap(examples: Sequence[Example], tuned: frozenset[str] | None) -> dict:
    """``{"tuned_overlap": n}``: how many of the scored ``examples`` the model was fine-tuned
    on; empty when the model records no fine-tuning (``tuned`` is ``None``).

    Example:
        >>> tuned_overlap([Example("a", "b")], frozenset())
        {'tuned_overlap': 0}
    """
    if tuned is None:
        return {}
    return {"tuned_overlap": sum(example_key(ex) in tuned for ex in examples)}


def _task_batches(
    task: Task,
    tokenizer,
    config: AttributionConfig,
    examples: Sequence[Example] | None,
    accelerator,
    meta: dict,
    tuned: frozenset[str] | None = None,
) -> tuple[Iterable[dict[str, torch.Tensor]], int]:
    """This process's batches of a task's examples and how many there are.

    Records ``task``, ``task_source``, ``n_examples`` and ``data_hash`` (of all processes'
    examples) in ``meta``, and ``tuned_overlap`` when the model records its fine-tuning
    examples (``tuned``). With several processes, each gets its shard of the examples.
    """
    if tokenizer is None:
        raise ValueError("relevance_scores on a Task needs the tokenizer")
    exs = list(examples) if examples is not None else scoring_examples(task, config, tuned)
    if not exs:
        raise ValueError(f"task {task.id!r}: no examples to score")
    meta.update(
        task=task.id, task_source=task.source, n_examples=len(exs), data_hash=examples_hash(exs)
    )
    meta.update(tuned_overlap(exs, tuned))
    if accelerator is not None and accelerator.num_processes > 1:
        with accelerator.split_between_processes(exs) as shard:
            exs = list(shard)
    batches = iter_batches(
        tokenizer,
        task,
        exs,
        config.scoring_prompt(),
        batch_size=config.batch_size,
        group_by_length=config.group_by_length,
    )
    n_batches = (len(exs) + config.batch_size - 1) // config.batch_size
    return batches, n_batches


def _local_batches(
    batches: Iterable[dict[str, torch.Tensor]], accelerator
) -> Iterable[dict[str, torch.Tensor]]:
    """This process's share of ready-made batches (every ``world``-th one, from its rank)."""
    if accelerator is not None and accelerator.num_processes > 1:
        rank, world = accelerator.process_index, accelerator.num_processes
        return [b for i, b in enumerate(batches) if i % world == rank]
    return batches


def _score_batches(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    n_batches: int | None,
    space: NeuronSpace,
    config: AttributionConfig,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], int, int]:
    """One forward and one backward per batch, parameters frozen, model in eval mode.

    With ``config.checkpointing`` the decoder layers run under activation checkpointing and
    the products are taken by module backward hooks (:mod:`~taskneurons.neurons.score_hooks`).

    Returns:
        ``(sums, n_examples, n_tokens)`` of this process: ``sums`` is module -> float64
        ``[layers, units]`` (summed over examples, reduced over positions per ``aggregate``),
        ``n_tokens`` counts the unpadded tokens of the batches.
    """
    from tqdm.auto import tqdm

    device = input_device(model)  # the first device of a device_map
    was_training = model.training
    model.eval()
    n_local = 0
    n_tokens = 0
    bar = tqdm(batches, total=n_batches, desc="relevance", unit="batch", disable=not progress)
    accumulator = CheckpointedAccumulator if config.checkpointing else ScoreAccumulator
    layers = checkpointed_layers(model) if config.checkpointing else contextlib.nullcontext()
    with frozen_parameters(model), layers, accumulator(space, config.aggregate) as acc:
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            # the loss only runs the model on the first loss_width positions
            acc.set_token_mask(batch["attention_mask"][:, : loss_width(batch["labels"])])
            with torch.enable_grad():
                loss = per_example_loss(model, batch).sum()
                loss.backward()
            acc.end_batch()
            n_local += int(batch["input_ids"].shape[0])
            n_tokens += int(batch["attention_mask"].sum())
            bar.set_postfix(loss=f"{loss.item() / batch['input_ids'].shape[0]:.3f}")
    model.train(was_training)
    return acc.sums, n_local, n_tokens


def _sum_across_processes(
    sums: dict[str, torch.Tensor], space: NeuronSpace, n_local: int, n_tokens: int, accelerator
) -> tuple[int, int]:
    """Add ``sums`` (in place) and the example and token counts over all processes.

    One ``accelerator.reduce`` of a flat float64 tensor: every module's sums in ``space``
    order, then ``n_local`` and ``n_tokens``. Returns the total ``(n_examples, n_tokens)``;
    without an accelerator (or with one process) the local counts.
    """
    if accelerator is None or accelerator.num_processes <= 1:
        return n_local, n_tokens
    flat = torch.cat([sums[m].reshape(-1) for m in space.modules])
    flat = torch.cat([flat, torch.tensor([float(n_local), float(n_tokens)], dtype=flat.dtype)])
    flat = accelerator.reduce(flat.to(accelerator.device), reduction="sum").cpu()
    n_total, n_tokens = int(flat[-2].item()), int(flat[-1].item())
    off = 0
    for m in space.modules:
        numel = sums[m].numel()
        sums[m] = flat[off : off + numel].reshape(sums[m].shape)
        off += numel
    return n_total, n_tokens


def _neuron_scores(
    space: NeuronSpace,
    sums: dict[str, torch.Tensor],
    n_total: int,
    n_tokens: int,
    aggregate: Aggregate,
    meta: dict,
    start: float,
) -> NeuronScores:
    """Mean over the ``n_total`` examples (``abs`` of it for ``"task"``), as float32 scores.

    Adds ``n_scored``, ``n_tokens``, ``seconds`` and ``tokens_per_s`` (since ``start``, a
    ``time.perf_counter()`` value) to ``meta``.
    """
    if n_total == 0:
        raise ValueError("no examples were scored (empty data)")
    scores = {}
    for m in space.modules:
        mean = sums[m] / n_total
        scores[m] = (mean.abs() if aggregate == "task" else mean).to(torch.float32)
    elapsed = time.perf_counter() - start
    meta.update(
        n_scored=n_total,
        n_tokens=n_tokens,
        seconds=round(elapsed, 3),
        tokens_per_s=round(n_tokens / elapsed, 1) if elapsed > 0 else None,
    )
    return NeuronScores(space.definition, scores, meta)


def relevance_scores(
    model: nn.Module,
    data: Task | Iterable[dict[str, torch.Tensor]],
    space: NeuronSpace | None = None,
    *,
    tokenizer=None,
    config: AttributionConfig | None = None,
    examples: Sequence[Example] | None = None,
    accelerator=None,
    progress: bool = True,
) -> NeuronScores:
    """Relevance ``|∂L/∂ω · ω|`` of every neuron of ``space`` for a task.

    Args:
        model: a Hugging Face causal LM (any family of the adapter table).
        data: a :class:`Task` (its ``config.split`` examples, ``config.n_examples`` of them,
            label-stratified with ``config.seed``; needs ``tokenizer``) or an iterable of batches
            as made by :func:`taskneurons.data.prompts.collate` (``input_ids``,
            ``attention_mask``, ``labels`` all ``[batch, pos]``).
        space: the neurons to score (default: ``NeuronSpace(model, config.definition)``).
        tokenizer: needed when ``data`` is a task.
        config: the knobs (default :class:`AttributionConfig`).
        examples: score these examples of the task instead of drawing a subset.
        accelerator: an ``accelerate.Accelerator``; each process scores its shard, sums are
            added across processes (every process returns the same scores). ``None``: the
            run's, in a ``taskneurons run`` under several processes
            (:func:`~taskneurons._ranks.shared_accelerator`), else none.
        progress: show a progress bar.

    Returns:
        :class:`NeuronScores` with float32 ``[layers, units]`` per module, in loss units
        (nats of the example's mean answer-token NLL), averaged over examples.
    """
    config = config or AttributionConfig()
    if space is None:
        space = NeuronSpace(model, config.definition)
    if accelerator is None:
        accelerator = shared_accelerator()  # a run under several processes divides the examples

    meta: dict = {
        "config": config.to_dict(),
        "space": space.describe(),
        "model_fingerprint": model_fingerprint(model),
    }
    batches: Iterable[dict[str, torch.Tensor]]
    n_batches: int | None
    if isinstance(data, Task):
        batches, n_batches = _task_batches(
            data, tokenizer, config, examples, accelerator, meta, tuned_on(model)
        )
    else:
        batches, n_batches = _local_batches(data, accelerator), None
    start = time.perf_counter()
    sums, n_local, n_tokens = _score_batches(model, batches, n_batches, space, config, progress)
    n_total, n_tokens = _sum_across_processes(sums, space, n_local, n_tokens, accelerator)
    return _neuron_scores(space, sums, n_total, n_tokens, config.aggregate, meta, start)
