"""Deactivation of a NeuronSet: reversible, scoped interventions on a model's neurons.

Two modes that zero the neurons, equivalent for the model's outputs (tests check the logits
agree to 1e-5), and one that holds them at their mean:

* ``"activation"`` — forward hooks multiply the neurons' activations by 0: a forward
  pre-hook on W2 zeroes units of its input (``ffn`` definition, ``[batch, pos, d_ff]``), a
  forward hook on a linear zeroes units of its output (``linear`` definition,
  ``[batch, pos, out_features]``). The weights are never touched; gradients still flow.
* ``"parameters"`` — the parameter slices each neuron owns (``NeuronSpace.parameter_slices``:
  W1 rows and bias entries and the W2 column for ``ffn``; the weight row and bias entry for
  ``linear``) are set to 0 in place; the original values of exactly those slices are saved and
  copied back bit-exactly on exit. No hooks, so it also works where hooks do not run (exported
  or compiled graphs), at the price of a copy of the selected slices. With PEFT adapters (LoRA)
  on the FFN linears only the base weights are zeroed, so the adapter's share of a unit stays;
  use activation mode there.
* ``"mean"`` — mean ablation: the hooks of activation mode set each neuron to a given value
  (``values``: its mean activation over a task, :func:`~taskneurons.neurons.activation_probability.mean_activation`)
  instead of 0, so what is removed is the neuron's variation, not its average contribution.

All undo themselves on leaving the ``with`` block, also when it raises.

Example:
    >>> with deactivate(model, task_neurons) as h:  # doctest: +SKIP
    ...     logits = model(input_ids=ids).logits  # the task's neurons are off
    >>> h.active  # doctest: +SKIP
    False
    >>> handle = zero_neurons(model, task_neurons, mode="parameters")  # doctest: +SKIP
    >>> acc = evaluate(model, task)  # the neurons are off  # doctest: +SKIP
    >>> handle.undo()  # weights are bit-exactly the originals again  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from taskneurons.models.placement import module_device, offloaded
from taskneurons.neurons.neuron_set import NeuronSet, space_for
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.sites import hook_sites, owned_slices
from taskneurons.neurons.space import NeuronSpace

Mode = Literal["activation", "parameters", "mean"]
MODES: tuple[str, ...] = ("activation", "parameters", "mean")


def _keep_mask(mask_row: torch.Tensor, like: nn.Module) -> torch.Tensor:
    """``1`` for kept units and ``0`` for deactivated ones, ``[units]``, on ``like``'s device.

    ``mask_row`` is a ``torch.bool [units]`` row of a NeuronSet mask (``True`` = deactivate).
    """
    p = next(like.parameters(), None)
    device = module_device(like)  # where it runs (a device_map's offloaded weights: meta)
    dtype = p.dtype if p is not None and p.dtype.is_floating_point else torch.float32
    return (~mask_row).to(device=device, dtype=dtype)  # [units]


def _scaled(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x * keep`` over the last dim, ``[..., units]``, in ``x``'s dtype and device."""
    if keep.dtype != x.dtype or keep.device != x.device:
        keep = keep.to(device=x.device, dtype=x.dtype)
    return x * keep  # [batch, pos, units] * [units]


class Deactivation:
    """Handle of one deactivation; :meth:`undo` (idempotent) puts the model back.

    Attributes:
        model: the model.
        neurons: the deactivated :class:`NeuronSet`.
        mode: ``"activation"``, ``"parameters"`` or ``"mean"``.
        space: the model's :class:`NeuronSpace` under the set's definition.
        values: ``"mean"`` mode: each neuron's value ``[layers, units]`` per module.
        active: ``True`` until :meth:`undo`.
        n_hooks: hooks registered (activation mode).
        n_values: parameter entries zeroed (parameter mode).

    Usable as a context manager: ``with zero_neurons(model, s): ...`` undoes on exit.
    """

    def __init__(
        self,
        model: nn.Module,
        neurons: NeuronSet,
        mode: Mode,
        space: NeuronSpace,
        values: NeuronScores | None = None,
    ):
        self.model = model
        self.neurons = neurons
        self.mode = mode
        self.space = space
        self.values = values
        self.active = False
        self._hooks: list[RemovableHandle] = []
        # (param, dim, positions [n], original values) per zeroed slice, in zeroing order
        self._saved: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []

    @property
    def n_hooks(self) -> int:
        return len(self._hooks)

    @property
    def n_values(self) -> int:
        return sum(v.numel() for _, _, _, v in self._saved)

    def __repr__(self) -> str:
        state = "active" if self.active else "undone"
        return (
            f"Deactivation({len(self.neurons)} neurons, mode={self.mode!r}, {state}, "
            f"hooks={self.n_hooks}, zeroed values={self.n_values})"
        )

    # -- applying ---------------------------------------------------------------------------------
    def _apply(self) -> None:
        self.active = True
        try:
            if self.mode in ("activation", "mean"):
                self._add_hooks()
            else:
                self._zero_parameters()
        except BaseException:
            self.undo()
            raise

    def _add_hooks(self) -> None:
        masks = self.neurons.masks

        def make_fn(layer: int, module: str):
            if not bool(masks[module][layer].any()):
                return None
            keep = _keep_mask(masks[module][layer], self.space.site_module(layer, module))
            if self.values is None:
                return lambda act: _scaled(act, keep)  # [batch, pos, units] * [units]
            fill = self.values.scores[module][layer].to(keep) * (1 - keep)  # [units]
            return lambda act: _scaled(act, keep) + fill.to(act)  # off units: their value

        self._hooks.extend(hook_sites(self.space, make_fn, modules=self.neurons.modules))

    def _zero_parameters(self) -> None:
        slices = list(owned_slices(self.space, self.neurons))
        held = [s.name for s, _ in slices if offloaded(s.param)]
        if held:
            raise ValueError(
                f"deactivation mode 'parameters' cannot change weights a device_map offloaded "
                f"({held[0]}{' and others' if len(held) > 1 else ''}); use mode 'activation'"
            )
        with torch.no_grad():
            for s, positions in slices:
                pos = positions.to(s.param.device)  # [n]
                original = s.param.index_select(s.dim, pos)  # a new tensor, not a view
                self._saved.append((s.param, s.dim, pos, original))
                s.param.index_fill_(s.dim, pos, 0)

    # -- undoing ------------------------------------------------------------------------------
    def undo(self) -> None:
        """Remove the hooks / copy the saved parameter values back (bit-exact). Idempotent."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        if self._saved:
            with torch.no_grad():
                for param, dim, pos, original in reversed(self._saved):
                    param.index_copy_(dim, pos, original)
            self._saved.clear()
        self.active = False

    def __enter__(self) -> Deactivation:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def zero_neurons(
    model: nn.Module,
    neurons: NeuronSet,
    mode: Mode = "activation",
    space: NeuronSpace | None = None,
    values: NeuronScores | None = None,
) -> Deactivation:
    """Deactivate ``neurons`` now and return the handle that undoes it (``handle.undo()``).

    Prefer :func:`deactivate`, which undoes automatically. Arguments as there.

    Example:
        >>> h = zero_neurons(model, task_neurons, mode="parameters")  # doctest: +SKIP
        >>> h.undo()  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if (mode == "mean") != (values is not None):
        raise ValueError("mode 'mean' needs the neurons' values, and only it takes them")
    space = space_for(model, neurons, space, "deactivate")
    if values is not None:
        _check_values(values, space)
    handle = Deactivation(model, neurons, mode, space, values)
    handle._apply()
    return handle


def _check_values(values: NeuronScores, space: NeuronSpace) -> None:
    """``ValueError`` unless ``values`` has the space's definition and shapes."""
    shapes = {m: tuple(values.scores[m].shape) for m in values.modules}
    want = {m: space.shape(m) for m in space.modules}
    if values.definition != space.definition or shapes != want:
        raise ValueError(
            f"mean values of {values.definition!r} neurons {shapes} do not fit the model's "
            f"{space.definition!r} neurons {want}"
        )


@contextlib.contextmanager
def deactivate(
    model: nn.Module,
    neurons: NeuronSet,
    mode: Mode = "activation",
    space: NeuronSpace | None = None,
    values: NeuronScores | None = None,
) -> Iterator[Deactivation]:
    """Context manager: ``neurons`` are off inside the block and restored on exit (also on error).

    Args:
        model: a Hugging Face causal LM of a family of the adapter table (PEFT-wrapped is fine).
        neurons: the :class:`NeuronSet` to deactivate; its definition and shapes must match the
            model's :class:`NeuronSpace`. An empty set is a no-op.
        mode: ``"activation"`` (hooks multiply the activations, ``[batch, pos, units]``, by a
            per-layer 0/1 keep mask ``[units]``) or ``"parameters"`` (zero the owned parameter
            slices; restored bit-exactly on exit) or ``"mean"`` (hooks set them to ``values``).
        space: the model's space, if already built (must belong to ``model``).
        values: ``"mean"`` mode: each neuron's value, ``[layers, units]`` per module (e.g. its
            mean activation over a task).

    Yields:
        The :class:`Deactivation` handle (``n_hooks``, ``n_values``, ``active``).

    Raises:
        NeuronSetMismatchError: the set does not fit the model (message gives both layouts).
        ValueError: unknown ``mode``.

    Example:
        >>> with deactivate(model, task_neurons, mode="parameters"):  # doctest: +SKIP
        ...     acc = evaluate(model, task)
    """
    handle = zero_neurons(model, neurons, mode=mode, space=space, values=values)
    try:
        yield handle
    finally:
        handle.undo()
