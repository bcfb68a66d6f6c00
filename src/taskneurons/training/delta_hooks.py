"""Layout and forward hooks of a :class:`~taskneurons.training.neuron_delta.NeuronDelta`.

Which slices of which base parameters a NeuronSet selects (:func:`collect_slices`), which FFN
linear applies which delta (:func:`plan_linears`), and the forward hook that adds one linear's
delta contribution to its output (:func:`make_hook`). For a linear ``y = x W^T + b`` (``W`` as
``[out, in]``) with a row delta ``D_r`` (``[n, in]``, units ``R``), a bias delta ``d_b``
(``[n]``) and a column delta ``D_c`` (``[out, n]``, input units ``C``) the hook returns::

    y' = y  +  scatter_R(x D_r^T + d_b)  +  x[..., C] D_c^T   ==   x (W + Δ)^T + (b + Δb)

Example:
    >>> slices = collect_slices(space, task_neurons)  # doctest: +SKIP
    >>> name, param, dim, positions = slices[0]  # positions: torch.long [n]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.sites import owned_slices
from taskneurons.neurons.space import NeuronSpace


@dataclass
class DeltaEntry:
    """The selected slices of one base parameter.

    Attributes:
        name: the parameter's name in ``model.named_parameters()``.
        param: the base parameter.
        dim: the raw axis that units index (0 or 1 for weights, 0 for biases).
        positions: selected indices along ``dim``, ascending, ``torch.long [n]``.
        delta: the trainable tensor ``param.index_select(dim, positions).shape`` in the delta dtype.
    """

    name: str
    param: nn.Parameter
    dim: int
    positions: torch.Tensor
    delta: nn.Parameter


@dataclass
class LinearDeltas:
    """Which deltas a forward hook on one linear applies.

    ``rows``/``bias`` index the linear's output units; ``cols`` its input units.
    """

    module: nn.Module
    transposed: bool
    rows: DeltaEntry | None = None
    bias: DeltaEntry | None = None
    cols: DeltaEntry | None = None


def check_float_dtype(dtype) -> torch.dtype:
    """``dtype`` itself when it is a floating ``torch.dtype``, else ``ValueError``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def collect_slices(
    space: NeuronSpace, neurons: NeuronSet
) -> list[tuple[str, nn.Parameter, int, torch.Tensor]]:
    """``(name, param, dim, positions [n])`` of every parameter with selected slices.

    Positions of all slices of one parameter (the two chunks of a fused ``gate_up``) are merged,
    sorted and de-duplicated. In layer order, then in ``parameter_slices`` order.
    """
    found: dict[int, tuple[str, nn.Parameter, int, list[torch.Tensor]]] = {}
    order: list[int] = []
    for s, positions in owned_slices(space, neurons):
        key = id(s.param)
        if key not in found:
            found[key] = (s.name, s.param, s.dim, [])
            order.append(key)
        elif found[key][2] != s.dim:
            raise ValueError(
                f"parameter {s.name} has selected slices along two axes ({found[key][2]} "
                f"and {s.dim}); NeuronDelta supports one axis per parameter"
            )
        found[key][3].append(positions)
    out = []
    for key in order:
        name, param, dim, parts = found[key]
        positions = torch.unique(torch.cat(parts))  # sorted ascending
        out.append((name, param, dim, positions))
    return out


def plan_linears(space: NeuronSpace, entries: Mapping[str, DeltaEntry]) -> list[LinearDeltas]:
    """One :class:`LinearDeltas` per FFN linear that owns a delta, in layer order.

    Raises:
        ValueError: an entry's parameter belongs to no FFN linear.
    """
    adapter = space.adapter
    by_param = {id(e.param): e for e in entries.values()}
    plans: list[LinearDeltas] = []
    for layer in range(adapter.n_layers):
        for lin in adapter.spec.linears:
            module = adapter.linear(layer, lin.name)
            t = adapter.is_transposed(lin.name)
            plan = LinearDeltas(module, t)
            w = by_param.get(id(module.weight))
            if w is not None:
                out_dim = 1 if t else 0  # raw axis of the output units
                if w.dim == out_dim:
                    plan.rows = w
                else:
                    plan.cols = w
            b = getattr(module, "bias", None)
            if b is not None and id(b) in by_param:
                plan.bias = by_param[id(b)]
            if plan.rows is not None or plan.cols is not None or plan.bias is not None:
                plans.append(plan)
    covered = {id(e.param) for p in plans for e in (p.rows, p.bias, p.cols) if e is not None}
    missing = [e.name for e in entries.values() if id(e.param) not in covered]
    if missing:  # a slice on a parameter that no FFN linear owns (cannot happen today)
        raise ValueError(f"no FFN linear owns the selected parameters {missing}")
    return plans


def make_hook(plan: LinearDeltas, dtype: torch.dtype) -> Callable:
    """Forward hook adding one linear's delta contribution to its output ``[..., out]``.

    Register it with ``module.register_forward_hook(hook, with_kwargs=True)``. The extra matmuls
    run in ``dtype`` and are cast back to the output's dtype.
    """
    t = plan.transposed

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor):
        if args:
            x = args[0]
        elif kwargs:
            x = next(iter(kwargs.values()))
        else:
            raise RuntimeError(f"{type(module).__name__} was called without an input")
        xd = x.to(dtype)  # [..., in]
        y = output
        if plan.rows is not None:
            d = plan.rows.delta  # [n, in] ([in, n] for Conv1D)
            add = xd @ d if t else xd @ d.T  # [..., n]
            y = y.index_add(y.dim() - 1, plan.rows.positions, add.to(y.dtype))
        if plan.bias is not None:
            db = plan.bias.delta.to(y.dtype)  # [n]
            db = db.expand(*y.shape[:-1], db.numel())  # [..., n]
            y = y.index_add(y.dim() - 1, plan.bias.positions, db)
        if plan.cols is not None:
            d = plan.cols.delta  # [out, n] ([n, out] for Conv1D)
            xs = xd.index_select(xd.dim() - 1, plan.cols.positions)  # [..., n]
            y = y + (xs @ d if t else xs @ d.T).to(y.dtype)  # [..., out]
        return y

    return hook
