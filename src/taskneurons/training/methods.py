"""The three training methods behind one small interface, dispatched through :data:`TRAIN_METHODS`.

A :class:`TrainMethod` makes a model trainable and hands the trainable tensors to the loop
(:meth:`~TrainMethod.setup`), undoes its temporary changes to the base parameters once the
steps are over, also on error (:meth:`~TrainMethod.restore`; after a failed run
:meth:`~TrainMethod.abort` first), and writes and optionally merges what was trained
(:meth:`~TrainMethod.finish`):

* ``"neurons"`` (:class:`NeuronsMethod`): a :class:`NeuronDelta` on the NeuronSet's slices,
  attached by forward hooks, every base parameter frozen; saved as ``delta/``.
* ``"full"`` (:class:`FullMethod`): every parameter, in place; nothing extra is saved.
* ``"lora"`` (:class:`LoraMethod`): PEFT LoRA adapters; saved as ``lora/``.

Beside the table, :class:`ParamsMethod` trains given tensors of the model as it is
(``TrainOptions.params``: one LoRA adapter of a stack, for the continual methods).

Example:
    >>> method = make_method(TrainConfig(method="full"), None)  # doctest: +SKIP
    >>> named = method.setup(model, None)  # [(name, parameter)], here all of them  # doctest: +SKIP
    >>> # ... optimizer steps on the tensors of ``named``; the model is ``method.model``
    >>> method.restore()  # doctest: +SKIP
    >>> model = method.finish(out_dir, merge=False, meta=meta)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from taskneurons._io import give_umask_mode
from taskneurons.neurons.attribution import frozen_parameters
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.training.masked_step import fsdp_local_masks
from taskneurons.training.neuron_delta import NeuronDelta, selection_masks
from taskneurons.training.train_config import METHODS, TrainConfig, _delta_dtype

NamedParams = list[tuple[str, nn.Parameter]]


class TrainMethod:
    """How a model is made trainable, saved and merged (base class of the table's rows).

    Args:
        config: the run's :class:`TrainConfig`.

    Attributes:
        model: the model to train and return (set by :meth:`setup`; LoRA wraps it).
        delta: the :class:`NeuronDelta` (``neurons`` only, else ``None``).
    """

    #: the ``TrainConfig.method`` name
    name: ClassVar[str] = ""
    #: whether the method trains a NeuronSet (``neurons=`` is required, else refused)
    needs_neurons: ClassVar[bool] = False

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.model: nn.Module | None = None
        self.delta: NeuronDelta | None = None

    def setup(self, model: nn.Module, neurons: NeuronSet | None) -> NamedParams:
        """Make ``model`` trainable; return the trainable ``(name, tensor)`` pairs."""
        raise NotImplementedError

    def restore(self) -> None:
        """Undo :meth:`setup`'s changes to the base parameters' ``requires_grad`` flags."""

    def abort(self) -> None:
        """After a failed run: undo what :meth:`setup` added to the model (nothing by default)."""

    #: called on the summed gradients before clipping and the step (``None``: nothing)
    grad_filter: ClassVar[None] = None

    def on_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """See the run's optimizer once it is built (nothing by default)."""

    def save(self, out_dir: Path, meta: dict) -> None:
        """Write what was trained into ``out_dir`` (nothing by default)."""

    def merge(self) -> nn.Module:
        """Merge what was trained into the weights; return the model to hand back."""
        assert self.model is not None
        return self.model

    def finish(self, out_dir: Path | None, merge: bool, meta: dict) -> nn.Module:
        """Save into ``out_dir`` (``None``: nowhere), merge when asked; return the model."""
        if out_dir is not None:
            self.save(out_dir, meta)
        if merge:
            self.model = self.merge()
        assert self.model is not None
        return self.model


class NeuronsMethod(TrainMethod):
    """Train a NeuronSet's slices through an attached :class:`NeuronDelta` (base frozen)."""

    name = "neurons"
    needs_neurons = True

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self._stack = contextlib.ExitStack()

    def setup(self, model: nn.Module, neurons: NeuronSet | None) -> NamedParams:
        assert neurons is not None
        self.delta = NeuronDelta(
            model,
            neurons,
            dtype=getattr(torch, _delta_dtype(self.config.delta_dtype)),
            strict=self.config.strict_fingerprint,
        )
        self._stack.enter_context(frozen_parameters(model))
        self.delta.attach()
        self.model = model
        return self.delta.named_parameters()

    def restore(self) -> None:
        self._stack.close()

    def abort(self) -> None:
        if self.delta is not None:
            self.delta.detach()  # the caller never gets the delta: the base model again

    def save(self, out_dir: Path, meta: dict) -> None:
        assert self.delta is not None
        cfg = self.config
        self.delta.save(
            out_dir / "delta",
            meta={"tasks": meta["tasks"], "train": cfg.to_dict()},
            dtype=getattr(torch, _delta_dtype(cfg.save_dtype)) if cfg.save_dtype else None,
        )

    def merge(self) -> nn.Module:
        assert self.delta is not None and self.model is not None
        self.delta.merge()
        return self.model


class MaskedNeuronsMethod(NeuronsMethod):
    """Train a NeuronSet's slices in the base weights by a masked optimizer step."""

    name = "neurons"

    def setup(self, model: nn.Module, neurons: NeuronSet | None) -> NamedParams:
        assert neurons is not None
        masks = selection_masks(model, neurons)
        named = dict(model.named_parameters())
        self.neurons, self.masks = neurons, masks
        self.local = {id(named[n]): (named[n], m) for n, m in masks.items()}
        self._flags = [(p, p.requires_grad) for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        for n in masks:
            named[n].requires_grad_(True)
        self._original = {n: named[n].detach()[m].clone() for n, m in masks.items()}
        self._original_by_id = {id(named[n]): v for n, v in self._original.items()}
        self.model = model
        return [(n, named[n]) for n in masks]

    def shard(self, fsdp_model: nn.Module) -> None:
        """Cut the masks to this process's shards of ``fsdp_model`` (the model of
        :meth:`setup` wrapped in FSDP with ``use_orig_params=True``), before training it.
        (:meth:`finish` needs whole parameters: gather the state dict under FSDP instead.)"""
        self.local = fsdp_local_masks(fsdp_model, self.masks)

    def grad_filter(self) -> None:
        """Zero the gradient entries no selected neuron owns (before clipping and the step)."""
        for param, mask in self.local.values():
            if param.grad is not None:
                param.grad.mul_(mask.to(param.grad.dtype))

    def on_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Weight decay towards the base weights, on the selected entries only (as on a delta).

        The optimizer's own decay is turned off (it would shrink every entry towards 0); before
        each step, AdamW's decoupled decay ``W <- W0 + (1 - lr wd)(W - W0)`` or SGD's L2 term
        ``grad += wd (W - W0)`` is applied to the selected entries (``W0``: their values
        before training), which is what the delta method's decay of ``Δ = W - W0`` does.
        """
        wd = self.config.weight_decay
        if wd == 0:
            return
        for group in optimizer.param_groups:
            group["weight_decay"] = 0.0
        decoupled = self.config.optimizer == "adamw"

        def before(opt, args, kwargs):
            with torch.no_grad():
                for group in opt.param_groups:
                    for p in group["params"]:
                        if id(p) not in self.local:
                            continue
                        param, mask = self.local[id(p)]
                        drift = param[mask] - self._original_by_id[id(p)]
                        if decoupled:
                            param[mask] = param[mask] - group["lr"] * wd * drift
                        elif param.grad is not None:
                            param.grad[mask] += wd * drift

        optimizer.register_step_pre_hook(before)

    def restore(self) -> None:
        for p, flag in self._flags:
            p.requires_grad_(flag)

    def abort(self) -> None:
        self._put_back()

    def _put_back(self) -> None:
        """The base weights' original selected slices again (bit-exact)."""
        assert self.model is not None
        named = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, original in self._original.items():
                param, mask = self.local[id(named[n])]
                param[mask] = original

    def finish(self, out_dir, merge: bool, meta: dict) -> nn.Module:
        """The change of the selected slices as a NeuronDelta; the base restored unless
        ``merge``."""
        assert self.model is not None
        delta = NeuronDelta(self.model, self.neurons, strict=False)
        named = dict(self.model.named_parameters())
        slices = {n: delta.positions(n) for n in delta.names}  # name -> (dim, positions)
        trained = {n: named[n].detach().index_select(d, p).clone() for n, (d, p) in slices.items()}
        self._put_back()
        state = {}
        with torch.no_grad():
            for n, (d, p) in slices.items():
                state[n] = trained[n].float() - named[n].detach().index_select(d, p).float()
                if merge:  # the trained values themselves, bit for bit
                    named[n].index_copy_(d, p, trained[n])
        delta.load_state_dict(state)
        self.delta = delta
        if out_dir is not None:
            self.save(out_dir, meta)
        if not merge:
            delta.attach()
        return self.model


class ParamsMethod(TrainMethod):
    """Train given tensors of the model as it is (``TrainOptions.params``); save and merge nothing.

    Args:
        config: the run's :class:`TrainConfig`.
        params: name -> tensor to train (their ``requires_grad`` is set for the run).
    """

    name = "params"

    def __init__(self, config: TrainConfig, params: Mapping[str, nn.Parameter] | None = None):
        super().__init__(config)
        self.params = params
        self._flags: list[tuple[nn.Parameter, bool]] = []

    def trainable(self, model: nn.Module) -> NamedParams:
        """The ``(name, tensor)`` pairs to train."""
        assert self.params is not None
        return list(self.params.items())

    def setup(self, model: nn.Module, neurons: NeuronSet | None) -> NamedParams:
        named = self.trainable(model)
        self._flags = [(p, p.requires_grad) for _, p in named]
        for _, p in named:
            p.requires_grad_(True)
        self.model = model
        return named

    def restore(self) -> None:
        for p, flag in self._flags:
            p.requires_grad_(flag)


class FullMethod(ParamsMethod):
    """Train every parameter of the model in place."""

    name = "full"

    def trainable(self, model: nn.Module) -> NamedParams:
        return list(model.named_parameters())


def lora_config(config: TrainConfig):
    """The ``peft.LoraConfig`` of ``config``'s LoRA knobs: the one place it is built.

    ``lora_r``, ``lora_alpha``, ``lora_dropout``; ``lora_targets`` (``None``: PEFT's
    ``"all-linear"``, every linear layer but the LM head); no bias; a causal LM. Used by the
    ``lora`` method and by the continual methods' adapters
    (:class:`~taskneurons.continual.lora.AdapterStack`).

    Example:
        >>> lora_config(TrainConfig(lora_r=4)).target_modules
        'all-linear'
    """
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets or "all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )


class LoraMethod(TrainMethod):
    """Train LoRA adapters through PEFT (``"all-linear"`` targets unless ``lora_targets``)."""

    name = "lora"

    def setup(self, model: nn.Module, neurons: NeuronSet | None) -> NamedParams:
        from peft import get_peft_model

        self.model = get_peft_model(model, lora_config(self.config))
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def save(self, out_dir: Path, meta: dict) -> None:
        assert self.model is not None
        self.model.save_pretrained(str(out_dir / "lora"))
        give_umask_mode(out_dir / "lora")  # safetensors writes its files 0600

    def merge(self) -> nn.Module:
        assert self.model is not None
        return self.model.merge_and_unload()


#: ``TrainConfig.method`` -> its :class:`TrainMethod` class
TRAIN_METHODS: dict[str, type[TrainMethod]] = {
    cls.name: cls for cls in (NeuronsMethod, FullMethod, LoraMethod)
}
assert tuple(TRAIN_METHODS) == METHODS


def make_method(
    config: TrainConfig,
    neurons: NeuronSet | None,
    params: Mapping[str, nn.Parameter] | None = None,
) -> TrainMethod:
    """The :class:`TrainMethod` of ``config.method``, after checking ``neurons`` fits it.

    With ``params`` (``TrainOptions.params``): a :class:`ParamsMethod` on them, whatever
    ``config.method``.

    Raises:
        ValueError: ``neurons`` missing for ``"neurons"``, or given to another method or
            together with ``params``.

    Example:
        >>> type(make_method(TrainConfig(method="lora"), None)).__name__
        'LoraMethod'
    """
    if params is not None:
        if neurons is not None:
            raise ValueError("neurons and params exclude each other: train one or the other")
        return ParamsMethod(config, params)
    cls = TRAIN_METHODS[config.method]
    if config.method == "neurons" and config.neuron_update == "masked":
        cls = MaskedNeuronsMethod
    if cls.needs_neurons and neurons is None:
        raise ValueError(f"method {config.method!r} needs a NeuronSet (neurons=...)")
    if not cls.needs_neurons and neurons is not None:
        raise ValueError(f"neurons are only used by method 'neurons', not {config.method!r}")
    return cls(config)
