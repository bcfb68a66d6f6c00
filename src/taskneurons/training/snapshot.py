"""A copy of a model's weights, put back bit for bit: the one snapshot/restore of the package.

:class:`ModelSnapshot` keeps a CPU copy of the model's ``state_dict()`` (parameters and
persistent buffers), the ``requires_grad`` flag of every parameter and a hash of sampled
weights (:func:`~taskneurons.provenance.model_fingerprint`). :meth:`ModelSnapshot.restore`
first removes the LoRA layers PEFT injected into the model in place since (each one replaced
by the layer it wraps, and PEFT's adapter records on the model dropped, so a later PEFT call
finds no adapter name taken), then loads the copied tensors and flags, and checks the hash.

Used wherever a model is trained or changed and must come back as it was:
:func:`~taskneurons.training.trained.trained` (full and LoRA fine-tuning), the reference
scores and per-task FT of :mod:`taskneurons.continual`, and the continual suite (each method
from the same model).

Example:
    >>> snap = ModelSnapshot.take(model)  # doctest: +SKIP
    >>> train(model, tok, task, TrainConfig(method="lora"))  # doctest: +SKIP
    >>> snap.restore(model)  # the base weights, flags and modules again  # doctest: +SKIP
    >>> with restored(model):  # the same, as a context manager  # doctest: +SKIP
    ...     train(model, tok, task, TrainConfig(method="full"))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from taskneurons.provenance import model_fingerprint

#: attributes PEFT leaves on a model it injected adapters into (the adapter names live there)
PEFT_RECORDS = ("peft_config", "_hf_peft_config_loaded")


@dataclass
class ModelSnapshot:
    """A model's tensors (CPU copies), ``requires_grad`` flags and weights hash.

    Attributes:
        state: ``state_dict()`` name -> a CPU copy of the tensor (same dtype and shape).
        flags: parameter name -> its ``requires_grad`` (empty: the flags are left as they are).
        weights: :func:`~taskneurons.provenance.model_fingerprint`'s ``weights`` hash at
            :meth:`take` (``None``: not checked on :meth:`restore`).
    """

    state: dict[str, torch.Tensor]
    flags: dict[str, bool] = field(default_factory=dict)
    weights: str | None = None

    @classmethod
    def take(cls, model: nn.Module) -> ModelSnapshot:
        """Copy ``model``'s state, flags and weights hash.

        Example:
            >>> snap = ModelSnapshot.take(model)  # doctest: +SKIP
        """
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        return cls(state, flags, model_fingerprint(model)["weights"])

    def restore(self, model: nn.Module) -> None:
        """Put ``model`` back as it was at :meth:`take`: modules, tensors, flags (bit-exact).

        Raises:
            RuntimeError: the weights hash differs after the restore (should not happen).
        """
        strip_adapters(model)
        with torch.no_grad():
            model.load_state_dict(self.state)
        for name, p in model.named_parameters():
            if name in self.flags:
                p.requires_grad_(self.flags[name])
        if self.weights is not None and model_fingerprint(model)["weights"] != self.weights:
            raise RuntimeError("the base weights were not restored")


def strip_adapters(model: nn.Module) -> None:
    """Remove the layers PEFT injected into ``model`` in place (not merged) and its records.

    Each injected layer is replaced by the layer it wraps (the original module, with its
    original parameters); a model without PEFT layers is left as it is.

    Example:
        >>> strip_adapters(model)  # after get_peft_model(model, ...)  # doctest: +SKIP
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    injected = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in injected:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.get_base_layer())
    for attr in PEFT_RECORDS:  # PEFT copies its adapter names here
        if attr in vars(model):
            delattr(model, attr)


@contextlib.contextmanager
def restored(model: nn.Module) -> Iterator[ModelSnapshot]:
    """Snapshot ``model`` on entry; restore it on exit (also on error).

    Example:
        >>> with restored(model):  # doctest: +SKIP
        ...     train(model, tok, task, TrainConfig(method="full"))
    """
    snapshot = ModelSnapshot.take(model)
    try:
        yield snapshot
    finally:
        snapshot.restore(model)
