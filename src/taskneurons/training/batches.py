"""The train examples of a run: pooled, encoded once, and cut into optimizer steps.

The train examples of all tasks are pooled and shuffled together every epoch with a
``torch.Generator`` seeded by ``config.seed`` (:func:`epoch_orders`); an optimizer step takes
the next ``batch_size * grad_accum`` examples, in ``grad_accum`` micro-batches of
``batch_size``, each split across processes (``[rank::world]``).

Example:
    >>> data = TrainData.encode(tok, [sst2], TrainConfig(batch_size=4, epochs=2))  # doctest: +SKIP
    >>> step, epoch, chunk = next(data.steps(start=0))  # chunk: example indices  # doctest: +SKIP
    >>> [b["input_ids"].shape for b in data.micro_batches(chunk, rank=0, world=1)]  # doctest: +SKIP
    [torch.Size([4, 37])]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from taskneurons.data.prompts import EncodedExample, collate, encode_example, pad_id_of
from taskneurons.data.tasks import Task
from taskneurons.training.train_config import TrainConfig


def check_tasks(tasks: Task | Sequence[Task]) -> list[Task]:
    """``tasks`` as a list, checked: Task objects, distinct ids, each with train examples.

    Raises:
        ValueError: no task, a task without train examples, or a repeated task id.
        TypeError: an element is not a :class:`Task`.
    """
    if isinstance(tasks, Task):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ValueError("train() needs at least one task")
    for t in tasks:
        if not isinstance(t, Task):
            raise TypeError(f"tasks must be Task objects, got {type(t).__name__}")
        if not t.train:
            raise ValueError(
                f"task {t.id!r} has no train split (0 train examples; source "
                f"{t.source or '?'}); training needs train examples"
            )
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"task ids repeat in {ids}; give each task once")
    return tasks


def epoch_orders(n: int, seed: int) -> Iterator[torch.Tensor]:
    """Example order of epoch 0, 1, ...: ``randperm(n)`` from one generator seeded by ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    while True:
        yield torch.randperm(n, generator=gen)


@dataclass
class TrainData:
    """The encoded examples of a run and its step arithmetic.

    Attributes:
        encoded: one ``EncodedExample`` per pooled train example (task order, then split order).
        pad: the tokenizer's pad id.
        config: the run's config (batch size, grad accumulation, seed, ``loss_on``).
        step_size: examples per optimizer step (``batch_size * grad_accum``).
        steps_per_epoch: ``ceil(len(encoded) / step_size)``.
        total_steps: ``config.max_steps`` or ``config.epochs * steps_per_epoch``.
    """

    encoded: list[EncodedExample]
    pad: int
    config: TrainConfig
    step_size: int
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def encode(cls, tokenizer, tasks: Sequence[Task], config: TrainConfig) -> TrainData:
        """Encode every train example of every task once (``config.prompt``)."""
        encoded = []  # EncodedExample per pooled example
        for task in tasks:
            for ex in task.train:
                encoded.append(encode_example(tokenizer, task, ex.input, ex.output, config.prompt))
        step_size = config.batch_size * config.grad_accum
        steps_per_epoch = math.ceil(len(encoded) / step_size)
        total_steps = config.max_steps or config.epochs * steps_per_epoch
        return cls(encoded, pad_id_of(tokenizer), config, step_size, steps_per_epoch, total_steps)

    def steps(self, start: int) -> Iterator[tuple[int, int, list[int]]]:
        """``(step, epoch, example indices)`` of every step from ``start`` (0-based) on.

        The orders of skipped epochs are drawn too, so a resumed run sees the same order.
        """
        orders = epoch_orders(len(self.encoded), self.config.seed)
        epoch, order = -1, torch.empty(0, dtype=torch.long)
        for step in range(start, self.total_steps):
            e = step // self.steps_per_epoch
            while epoch < e:  # draw the orders of skipped epochs too: same order after resume
                order, epoch = next(orders), epoch + 1
            j = step % self.steps_per_epoch
            yield step, e, order[j * self.step_size : (j + 1) * self.step_size].tolist()

    def micro_batches(self, chunk: list[int], rank: int, world: int) -> Iterator[dict]:
        """Collated CPU batches of this process's share of each micro-batch of ``chunk``."""
        bs = self.config.batch_size
        for m in range(0, len(chunk), bs):
            micro = chunk[m : m + bs][rank::world]
            if not micro:
                continue
            yield collate(
                [self.encoded[i] for i in micro], self.pad, loss_on=self.config.prompt.loss_on
            )
