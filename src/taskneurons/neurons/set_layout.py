"""The layout of a neuron set: its modules and their ``[layers, units]`` shapes (pure helpers).

Example:
    >>> describe_layout("ffn", {"ffn": (30, 1536)})
    "30 layers x 1536 units (definition 'ffn')"
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from taskneurons.neurons.space import NeuronSpace


def shapes_of(space_or_shapes: NeuronSpace | Mapping[str, tuple[int, int]]) -> dict:
    if isinstance(space_or_shapes, NeuronSpace):
        return {m: space_or_shapes.shape(m) for m in space_or_shapes.modules}
    return {m: tuple(int(x) for x in s) for m, s in space_or_shapes.items()}


def same_layout(a: Mapping, b: Mapping) -> bool:
    """Same modules in the same order (the order fixes neuron ids) with the same shapes."""
    return list(a.items()) == list(b.items())


def unflatten(flat: torch.Tensor, shapes: Mapping[str, tuple[int, int]]) -> dict:
    """Split a neuron-id-ordered ``[size]`` tensor into module tensors ``[layers, units]``."""
    layers = next(iter(shapes.values()))[0]
    widths = [shapes[m][1] for m in shapes]
    parts = flat.reshape(layers, sum(widths)).split(widths, dim=1)
    return {m: p.contiguous() for m, p in zip(shapes, parts, strict=True)}


def describe_layout(definition: str, shapes: Mapping[str, tuple[int, int]]) -> str:
    """``"30 layers x 1536 units (definition 'ffn')"``; per module for ``linear``."""
    layers = sorted({s[0] for s in shapes.values()})
    n = layers[0] if len(layers) == 1 else layers
    if len(shapes) == 1:
        units = str(next(iter(shapes.values()))[1])
    else:
        units = "[" + ", ".join(f"{m} {s[1]}" for m, s in shapes.items()) + "]"
    return f"{n} layers x {units} units (definition {definition!r})"


def layout_difference(d1: str, s1: Mapping, d2: str, s2: Mapping) -> str:
    if d1 != d2:
        return f" (definitions differ: {d1!r} vs {d2!r})"
    if list(s1) != list(s2):
        return f" (modules differ: {list(s1)} vs {list(s2)})"
    return ""
