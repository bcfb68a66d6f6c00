"""Where neurons live in a model: the activation sites to hook and the parameter slices owned.

Two walks over a :class:`~taskneurons.neurons.space.NeuronSpace` that every stage shares:

* :func:`hook_sites` registers one hook per ``(layer, module)`` activation site (the input of W2
  for ``ffn`` neurons, each FFN linear's output for ``linear`` neurons). The caller gives a
  function of the activation ``[batch, pos, units]``; whether it runs as a forward pre-hook or a
  forward hook is decided here, from the space's declarative site description.
* :func:`owned_slices` lists the parameter slices that the selected neurons of a
  :class:`~taskneurons.neurons.neuron_set.NeuronSet` own, with the raw positions of each.

Example:
    >>> handles = hook_sites(space, lambda layer, module: (lambda act: act * 0))  # doctest: +SKIP
    >>> for h in handles: h.remove()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from taskneurons.models.adapters import ParamSlice
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.space import NeuronSpace

#: ``fn(activation [batch, pos, units]) -> activation`` (the returned tensor replaces it)
ActivationFn = Callable[[torch.Tensor], torch.Tensor]


def hook_sites(
    space: NeuronSpace,
    make_fn: Callable[[int, str], ActivationFn | None],
    modules: list[str] | None = None,
) -> list[RemovableHandle]:
    """Hook every ``(layer, module)`` activation site of ``space``.

    Args:
        space: the neurons' space.
        make_fn: ``make_fn(layer, module)`` returns the function to run on that site's
            activation ``[batch, pos, units]`` (its result replaces the activation), or ``None``
            to leave the site alone.
        modules: the modules to hook (default: all of ``space.modules``), layers in order.

    Returns:
        The hook handles, in registration order (call ``.remove()`` on each to undo).

    Example:
        >>> seen = []
        >>> hs = hook_sites(space, lambda l, m: (lambda a: seen.append(a.shape) or a))  # doctest: +SKIP
    """
    handles: list[RemovableHandle] = []
    try:
        for layer in range(space.n_layers):
            for module in modules or space.modules:
                fn = make_fn(layer, module)
                if fn is None:
                    continue
                target = space.site_module(layer, module)
                if space.site(module).kind == "input":
                    handles.append(target.register_forward_pre_hook(_input_hook(fn, target)))
                else:
                    handles.append(target.register_forward_hook(_output_hook(fn)))
    except BaseException:
        for h in handles:
            h.remove()
        raise
    return handles


def _input_hook(fn: ActivationFn, target: nn.Module):
    """Forward pre-hook running ``fn`` on the module's first positional input."""

    def hook(module: nn.Module, args: tuple):
        if not args:
            raise RuntimeError(
                f"{type(target).__name__} was called without a positional input; a hook on "
                "its input cannot see the activation"
            )
        return (fn(args[0]), *args[1:])

    return hook


def _output_hook(fn: ActivationFn):
    """Forward hook running ``fn`` on the module's output."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor):
        return fn(output)

    return hook


def owned_slices(
    space: NeuronSpace, neurons: NeuronSet
) -> Iterator[tuple[ParamSlice, torch.Tensor]]:
    """``(slice, positions)`` for every parameter slice owned by a selected neuron.

    Layers in order, then the set's modules, then ``space.parameter_slices`` order. The
    selected units ``u`` of a ``(layer, module)`` own ``slice.param.index_select(slice.dim,
    positions)`` with ``positions = u + slice.offset`` (``torch.long [n]``, ascending, on the
    CPU). ``(layer, module)`` pairs with no selected unit are skipped.

    Example:
        >>> for s, pos in owned_slices(space, task_neurons):  # doctest: +SKIP
        ...     print(s.name, s.dim, pos.numel())
    """
    for layer in range(space.n_layers):
        for module in neurons.modules:
            units = neurons.indices(module, layer)  # [n]
            if units.numel() == 0:
                continue
            for s in space.parameter_slices(layer, module):
                yield s, units + s.offset
