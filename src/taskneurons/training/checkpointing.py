"""Activation checkpointing for one training run (``TrainConfig(checkpointing=True)``).

:func:`checkpointed_training` turns on Hugging Face's activation (gradient) checkpointing,
non-reentrant, for the duration of a run, and on exit puts back exactly what it changed: the
``gradient_checkpointing`` flag and ``_gradient_checkpointing_func`` of every module that
has one, and the forward hooks Transformers registers on the input embeddings
(``enable_input_require_grads``; its own ``..._disable`` leaves them). Only the modules'
Python attributes change: no parameter or buffer is touched, so the run's
:class:`~taskneurons.training.snapshot.ModelSnapshot` and the NeuronDelta's detach are
unaffected.

Non-reentrant (``use_reentrant=False``) because the NeuronDelta's tensors are not inputs of
the checkpointed layers: the reentrant variant would not give them gradients. Each
checkpointed layer runs its forward again in the backward, and so do the forward hooks on its
modules (the NeuronDelta's hooks are pure functions of their input and delta, registered once
at ``attach``: the recomputation gives the same output; a test counts the calls). Transformers
checkpoints only in training mode, which the loop sets.

Example:
    >>> check_checkpointing(model, True)  # ValueError when the model cannot  # doctest: +SKIP
    >>> with checkpointed_training(model, True):  # doctest: +SKIP
    ...     loss = per_example_loss(model, batch).mean()  # layers keep only their inputs
    ...     loss.backward()  # each layer runs forward again here
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

#: how :func:`torch.utils.checkpoint.checkpoint` is called
CHECKPOINT_KWARGS = {"use_reentrant": False}
#: module attributes Transformers' checkpointing sets
_ATTRS = ("gradient_checkpointing", "_gradient_checkpointing_func")
#: model attributes ``enable_input_require_grads`` sets (the hooks' handles)
_HOOK_ATTRS = ("_require_grads_hooks", "_require_grads_hook")
_MISSING = object()


def check_checkpointing(model: nn.Module, on: bool) -> None:
    """Refuse ``checkpointing`` for a model Transformers cannot checkpoint (one-line error).

    Raises:
        ValueError: ``on`` and the model does not set ``supports_gradient_checkpointing``.

    Example:
        >>> check_checkpointing(nn.Linear(2, 2), False)  # nothing asked, nothing checked
    """
    if on and not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"checkpointing: {type(model).__name__} does not support activation checkpointing "
            "(supports_gradient_checkpointing is not set); train it with checkpointing: false"
        )


@contextlib.contextmanager
def checkpointed_training(model: nn.Module, on: bool) -> Iterator[None]:
    """Run the block with the model's layers under activation checkpointing (when ``on``).

    On exit, also on error, every attribute it set is as it was (a model the caller had
    already put under checkpointing stays under it, with the caller's settings).

    Example:
        >>> with checkpointed_training(model, config.checkpointing):  # doctest: +SKIP
        ...     run_steps()
    """
    if not on:
        yield
        return
    check_checkpointing(model, on)
    saved = _attributes(model)
    before = _embedding_hooks(model)
    added: list = []
    try:
        _enable(model)
        added += _embedding_hooks(model, before)
        yield
    finally:
        # the embedding hooks of this run: Transformers' and those PEFT adds for LoRA
        for handle in added + _embedding_hooks(model, before + added):
            handle.remove()
        _put_back(model, saved)


def _embedding_hooks(model: nn.Module, known: list | None = None) -> list:
    """The handles ``enable_input_require_grads`` recorded on ``model``, but those ``known``."""
    handles = list(getattr(model, "_require_grads_hooks", None) or [])
    return [h for h in handles if all(h is not k for k in known or [])]


def _enable(model: nn.Module) -> None:
    """Transformers' checkpointing on, non-reentrant (the v5 name where it exists)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=CHECKPOINT_KWARGS)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINT_KWARGS)


def _attributes(model: nn.Module) -> list[tuple[object, str, object]]:
    """``(object, attribute, value or _MISSING)`` of everything :func:`_enable` may set."""
    saved = [(m, a, vars(m).get(a, _MISSING)) for m in model.modules() for a in _ATTRS]
    saved += [(model, a, vars(model).get(a, _MISSING)) for a in _HOOK_ATTRS]
    return saved


def _put_back(model: nn.Module, saved: list[tuple[object, str, object]]) -> None:
    """Every attribute of ``saved`` as it was (removed where it was absent)."""
    for obj, attr, value in saved:
        if value is _MISSING:
            if attr in vars(obj):
                delattr(obj, attr)
        else:
            setattr(obj, attr, value)
