"""``with trained(...) as res:`` — train, use the trained model, get the base model back exactly.

The counterpart of :func:`~taskneurons.neurons.intervention.deactivate` for training: inside
the block the model is the trained one (``res.model``, the :class:`TrainResult` of
:func:`~taskneurons.training.loop.train`); on exit, also when the block or the training
raises, the model is bit for bit the model it was before:

* ``neurons``: the trained :class:`~taskneurons.training.neuron_delta.NeuronDelta` is
  unmerged (when merged) and detached (a failed run detaches it itself); the base weights
  were never written.
* ``full`` and ``lora``: a :class:`~taskneurons.training.snapshot.ModelSnapshot` taken on
  entry is restored (LoRA layers PEFT injected are removed, weights and ``requires_grad``
  flags loaded back).

Example:
    >>> with trained(model, tok, [sst2], TrainConfig(lr=1e-3), neurons=sst2_neurons) as res:  # doctest: +SKIP
    ...     score = evaluate(model, tok, sst2).score
    >>> res.summary()["final_loss"]  # the model is the base model again  # doctest: +SKIP
    0.41
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn

from taskneurons.data.tasks import Task
from taskneurons.training.loop import train
from taskneurons.training.snapshot import restored
from taskneurons.training.train_config import TrainConfig, TrainResult


@contextlib.contextmanager
def trained(
    model: nn.Module,
    tokenizer,
    tasks: Task | Sequence[Task],
    config: TrainConfig | None = None,
    **train_args: Any,
) -> Iterator[TrainResult]:
    """Train ``model`` with :func:`~taskneurons.training.loop.train`; undo it on exit.

    Args:
        model, tokenizer, tasks, config: as :func:`~taskneurons.training.loop.train`'s.
        train_args: :func:`~taskneurons.training.loop.train`'s other keyword arguments
            (``neurons``, ``out_dir``, ``progress``, ...).

    Yields:
        The :class:`TrainResult`; ``model`` (or ``res.model``) is the trained model inside
        the block, and the model of before after it.

    Example:
        >>> with trained(model, tok, task, TrainConfig(method="full")) as res:  # doctest: +SKIP
        ...     trained_score = evaluate(res.model, tok, task).score
    """
    config = config or TrainConfig()
    keep = restored(model) if config.method != "neurons" else contextlib.nullcontext()
    with keep:
        res = train(model, tokenizer, tasks, config, **train_args)
        delta = res.delta
        try:
            yield res
        finally:
            if delta is not None:
                if delta.merged:
                    delta.unmerge()
                delta.detach()
