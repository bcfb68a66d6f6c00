"""What a stage does, counted: jobs of one kind of work each, from the data sizes.

A :class:`Job` is one kind of work (``forward``, ``attribution``, ``train_neurons``,
``train_full``, ``train_lora``, ``decode``) done ``n`` times (batches, or generation steps) on
``tokens`` tokens in all at ``context`` positions on average. The sizes of each task's
examples come from :class:`TaskSize` (measured by :mod:`.lengths`).

Example:
    >>> size = TaskSize("t", "classification", 100, 50, 40.0, 2.0, 2, 1, 3)
    >>> [j.kind for j in evaluation_jobs(size, 50, batch_size=8, max_new=None)]
    ['forward']
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Job:
    """One kind of work, ``n`` batches (or steps) of it.

    Attributes:
        kind: the work (a key of the device table's rates).
        n: batches (``decode``: generation steps).
        tokens: tokens processed in all (``decode``: new tokens over all rows).
        context: mean positions a token attends over.
        batch_tokens: tokens in one batch (memory; ``decode``: rows x context).
        trainable: trainable scalars (training jobs; memory of gradients and AdamW).
        checkpointing: under activation checkpointing (attribution, or training with
            ``train.checkpointing``).
    """

    kind: str
    n: int
    tokens: float
    context: float
    batch_tokens: float
    trainable: int = 0
    checkpointing: bool = False


@dataclass
class TaskSize:
    """The sizes of one task that the cost depends on (token counts are means, but for
    ``answer_longest`` and ``prompt_longest``: a batch is padded to its longest row, so peak
    memory is counted at the longest prompt; time at the mean)."""

    id: str
    kind: str
    n_train: int
    n_test: int
    prompt: float
    answer: float
    n_labels: int
    label_tokens: int
    max_new_default: int
    answer_longest: float = 0.0
    exact_match: bool = False
    prompt_longest: float = 0.0

    @property
    def padded(self) -> float:
        """Positions of the longest prompt + answer (a batch's padded length, for memory)."""
        return max(self.prompt, self.prompt_longest) + max(self.answer, self.answer_longest)


def _batches(n: int, batch_size: int) -> int:
    return math.ceil(n / max(batch_size, 1)) if n > 0 else 0


def scoring_job(size: TaskSize, n: int | None, batch_size: int, ckpt: bool = False) -> Job:
    """Relevance scores of ``n`` train examples (``None``: all)."""
    n = size.n_train if n is None else min(n, size.n_train)
    length = size.prompt + size.answer
    bt = min(n, batch_size) * size.padded
    return Job("attribution", _batches(n, batch_size), n * length, length, bt, 0, ckpt)


def decode_steps(size: TaskSize, max_new: int, decided: bool) -> int:
    """Greedy steps of one batch: ``max_new``, or fewer where answers stop once decided.

    An exact-match task whose evaluation stops a row once its answer is decided
    (``EvalConfig.stop_when_decided``) ends a batch when its last row is decided: assumed at
    the longest gold answer's tokens plus one (the token that shows the answer is over, or
    wrong), never more than ``max_new``. A model that keeps writing a prefix of a gold answer
    runs longer; a ROUGE-L task always runs ``max_new`` steps.

    Example:
        >>> size = TaskSize("t", "generation", 10, 10, 20.0, 2.5, 0, 0, 64, 4.0, True)
        >>> decode_steps(size, 12, True), decode_steps(size, 12, False), decode_steps(size, 3, True)
        (5, 12, 3)
    """
    if decided and size.exact_match and size.answer_longest > 0:
        return min(max_new, math.ceil(size.answer_longest) + 1)
    return max_new


def evaluation_jobs(
    size: TaskSize, n: int | None, batch_size: int, max_new: int | None, decided: bool = False
) -> list[Job]:
    """Evaluating ``n`` test examples: label scoring, or a prompt forward and greedy steps.

    ``decided``: rows of exact-match tasks stop once their answer is decided
    (:func:`decode_steps`).
    """
    n = size.n_test if n is None else min(n, size.n_test)
    b = _batches(n, batch_size)
    rows = min(n, batch_size)
    if size.kind == "classification":  # prompt, then every label through the KV cache
        tokens = n * (size.prompt + size.n_labels * size.label_tokens)
        return [Job("forward", b, tokens, size.prompt, rows * _longest_prompt(size))]
    new = decode_steps(size, max_new if max_new is not None else size.max_new_default, decided)
    steps = b * new
    ctx = size.prompt + new / 2
    return [
        Job("forward", b, n * size.prompt, size.prompt, rows * _longest_prompt(size)),
        Job("decode", steps, n * new, ctx, rows * (_longest_prompt(size) + new)),
    ]


def _longest_prompt(size: TaskSize) -> float:
    return max(size.prompt, size.prompt_longest)


def training_job(sizes: list[TaskSize], n_train: int | None, train, trainable: int) -> Job:
    """Training on the pooled train examples of ``sizes`` (``n_train`` per task)."""
    pool = [s.n_train if n_train is None else min(n_train, s.n_train) for s in sizes]
    n = sum(pool)
    length = sum(p * (s.prompt + s.answer) for p, s in zip(pool, sizes, strict=True)) / max(n, 1)
    step = train.batch_size * train.grad_accum
    steps = train.max_steps or math.ceil(n / step) * train.epochs
    micro = steps * train.grad_accum
    tokens = micro * train.batch_size * length
    bt = train.batch_size * max(s.padded for s in sizes)
    ckpt = bool(getattr(train, "checkpointing", False))
    return Job(f"train_{train.method}", micro, tokens, length, bt, trainable, ckpt)


def neuron_count(shape, k: float, definition: str = "ffn") -> int:
    """Trainable scalars of a NeuronDelta on ``k`` % of the ``ffn`` neurons of every layer."""
    per_neuron = (3 if shape.gated else 2) * shape.d_model
    return int(k / 100 * shape.n_layers * shape.d_ff) * per_neuron


def trainable_of(shape, train, k: float) -> int:
    """Trainable scalars of a training run of ``train.method`` (neurons at ``k`` %)."""
    if train.method == "neurons":
        return neuron_count(shape, k)
    if train.method == "full":
        return shape.n_params
    r = train.lora_r  # every linear of every layer: r x (in + out)
    per_layer = 2 * r * shape.d_model + 2 * r * (shape.d_model + shape.kv_dim) // 2 * 2
    per_layer += r * (shape.d_model + shape.d_ff) * (3 if shape.gated else 2)
    return shape.n_layers * per_layer
