"""NeuronSpace: the neurons of a model under one of the two definitions of PAPER.md.

* ``ffn`` — the ``d_ff`` intermediate units of each layer (the input of W2). Neuron ``j`` owns
  row ``j`` of every W1 part (gate/up, with its bias entry) and column ``j`` of W2. One module,
  named ``"ffn"``, of shape ``[layers, d_ff]``.
* ``linear`` — the paper's literal reading: every output unit of every FFN linear layer is a
  neuron; it owns that weight row and bias entry. One module per linear (``gate``, ``up``,
  ``down``, ...), of shape ``[layers, out_features]``.

Neurons have stable integer ids, layer-major: all neurons of layer 0 (modules in table order,
units ascending), then layer 1, ... ``space.coord(i)`` and ``space.neuron_id(...)`` convert.

Example:
    >>> space = NeuronSpace(model, "ffn")  # doctest: +SKIP
    >>> space.shape("ffn"), space.size  # doctest: +SKIP
    ((30, 1536), 46080)
    >>> space.coord(1537)  # doctest: +SKIP
    Neuron(layer=1, module='ffn', unit=1)
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

from taskneurons.models.adapters import FFNAdapter, ParamSlice, get_adapter

Definition = Literal["ffn", "linear"]
DEFINITIONS: tuple[str, ...] = ("ffn", "linear")


def _as_index(what: str, value: int) -> int:
    """``value`` as a Python int (ints, NumPy and 0-d integer tensors); ``TypeError`` otherwise."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {value!r}") from None


class Neuron(NamedTuple):
    """Coordinates of one neuron."""

    layer: int
    module: str
    unit: int


@dataclass(frozen=True)
class Site:
    """Where a module's activation is read: the ``input`` or the ``output`` of a linear."""

    linear: str
    kind: Literal["input", "output"]


class NeuronSpace:
    """The neurons of ``model`` under ``definition`` (``"ffn"`` or ``"linear"``).

    Attributes:
        definition: ``"ffn"`` or ``"linear"``.
        adapter: the model's :class:`FFNAdapter`.
        n_layers: decoder layers.
        modules: module names in id order (``["ffn"]`` or the FFN's linear names).
        units: units per layer of each module.
    """

    def __init__(
        self, model: nn.Module, definition: Definition = "ffn", adapter: FFNAdapter | None = None
    ):
        if definition not in DEFINITIONS:
            raise ValueError(f"unknown neuron definition {definition!r}; use one of {DEFINITIONS}")
        self.definition: Definition = definition
        self.adapter = adapter if adapter is not None else get_adapter(model)
        self.n_layers = self.adapter.n_layers
        if definition == "ffn":
            self.modules: list[str] = ["ffn"]
            self.units: dict[str, int] = {"ffn": self.adapter.d_ff}
        else:
            self.modules = [lin.name for lin in self.adapter.spec.linears]
            self.units = {m: self.adapter.out_features(0, m) for m in self.modules}
        self._module_offset: dict[str, int] = {}
        off = 0
        for m in self.modules:
            self._module_offset[m] = off
            off += self.units[m]
        self.per_layer = off

    # -- counting and ids --------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Total number of neurons."""
        return self.per_layer * self.n_layers

    def shape(self, module: str) -> tuple[int, int]:
        """``(layers, units)`` of one module."""
        self._check_module(module)
        return (self.n_layers, self.units[module])

    def _check_layer(self, layer: int) -> int:
        layer = _as_index("layer", layer)
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} outside [0, {self.n_layers})")
        return layer

    def _check_module(self, module: str) -> None:
        if module not in self.units:
            raise KeyError(f"module {module!r} not in {self.modules} ({self.definition} neurons)")

    def neuron_id(self, layer: int, module: str, unit: int) -> int:
        """Stable id of the neuron at ``(layer, module, unit)``.

        Raises ``IndexError`` for a layer or unit out of range (negative ones included),
        ``KeyError`` for an unknown module and ``TypeError`` for a non-integer layer or unit.
        """
        layer = self._check_layer(layer)
        self._check_module(module)
        unit = _as_index("unit", unit)
        if not 0 <= unit < self.units[module]:
            raise IndexError(f"unit {unit} outside [0, {self.units[module]}) of {module}")
        return layer * self.per_layer + self._module_offset[module] + unit

    def coord(self, neuron_id: int) -> Neuron:
        """Coordinates of a neuron id (``IndexError`` outside ``[0, size)``)."""
        neuron_id = _as_index("neuron id", neuron_id)
        if not 0 <= neuron_id < self.size:
            raise IndexError(f"neuron id {neuron_id} outside [0, {self.size})")
        layer, rest = divmod(neuron_id, self.per_layer)
        for m in reversed(self.modules):
            if rest >= self._module_offset[m]:
                return Neuron(layer, m, rest - self._module_offset[m])
        raise AssertionError("unreachable")

    def zeros(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """One zero tensor ``[layers, units]`` per module (the layout of scores and masks)."""
        return {m: torch.zeros(self.shape(m), dtype=dtype) for m in self.modules}

    # -- where activations and parameters live -------------------------------------------------
    def site(self, module: str) -> Site:
        """Where the activation of ``module``'s neurons is read."""
        self._check_module(module)
        if self.definition == "ffn":
            return Site(self.adapter.spec.w2, "input")
        return Site(module, "output")

    def site_module(self, layer: int, module: str) -> nn.Module:
        """The ``nn.Module`` whose input or output carries ``module``'s activation at ``layer``."""
        layer = self._check_layer(layer)
        self._check_module(module)
        return self.adapter.linear(layer, self.site(module).linear)

    def parameter_slices(self, layer: int, module: str) -> list[ParamSlice]:
        """The parameter slices owned by unit ``u`` of ``module`` at ``layer``.

        Unit ``u`` owns ``s.param.narrow(s.dim, s.offset + u, 1)`` for every returned ``s``.
        A layer outside ``[0, n_layers)`` raises ``IndexError``, an unknown module ``KeyError``.
        """
        layer = self._check_layer(layer)
        self._check_module(module)
        if self.definition == "ffn":
            return self.adapter.neuron_slices(layer)
        return self.adapter.output_slices(layer, module)

    def counts(self) -> dict[str, int]:
        """Neuron counts per module (all layers) and the total."""
        out = {m: self.n_layers * self.units[m] for m in self.modules}
        out["total"] = self.size
        return out

    def describe(self) -> dict:
        """JSON-ready description (definition, layers, modules, units, size)."""
        return {
            "definition": self.definition,
            "family": self.adapter.family,
            "n_layers": self.n_layers,
            "modules": list(self.modules),
            "units": dict(self.units),
            "size": self.size,
        }
