"""Random control sets: as many random neurons as a task's set, in every layer and module.

* :func:`random_like` — a random set with the same count per ``(layer, module)`` as another set
  (the control of the paper's deactivation experiments), optionally avoiding another set;
* :func:`matched_random_sets` — one per task, drawn outside the task's own set;
* :func:`random_pair_like` — two random sets matched to two sets in counts *and* overlap.

Example:
    >>> task = top_k(scores, k=10)  # doctest: +SKIP
    >>> ctrl = random_like(task, space, seed=0, exclude=task)  # doctest: +SKIP
    >>> iou(task, ctrl)  # doctest: +SKIP
    0.0
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

import torch

from taskneurons.neurons.neuron_set import (
    NeuronSet,
    NeuronSetMismatchError,
    _package_version,
    _summary,
)
from taskneurons.neurons.set_layout import describe_layout, same_layout, shapes_of
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import fingerprint_of

log = logging.getLogger(__name__)


def _random_like_shapes(
    other: NeuronSet,
    space_or_shapes: NeuronSpace | Mapping[str, tuple[int, int]],
    exclude: NeuronSet | None,
    on_shortfall: str,
) -> dict:
    """``{module: (layers, units)}`` of ``space_or_shapes``, checked against ``other``'s layout
    (and ``exclude``'s); rejects an unknown ``on_shortfall``."""
    shapes = shapes_of(space_or_shapes)
    if isinstance(space_or_shapes, NeuronSpace):
        other.check_space(space_or_shapes)
    elif not same_layout(shapes, other.shapes()):
        raise NeuronSetMismatchError(
            f"neuron set has {other.describe_shape()}, the given shapes are "
            f"{describe_layout(other.definition, shapes)}"
        )
    if exclude is not None:
        other._check_same_layout(exclude, "exclude")
    if on_shortfall not in ("error", "overlap"):
        raise ValueError(f"on_shortfall must be 'error' or 'overlap', got {on_shortfall!r}")
    return shapes


def _draw_units(
    row: torch.Tensor,
    c: int,
    taken: torch.Tensor | None,
    gen: torch.Generator,
    on_shortfall: str,
    where: str,
) -> int:
    """Set ``c`` random units of ``row`` (a ``[units]`` bool view) to True, avoiding ``taken``.

    Draws without replacement from the units outside ``taken`` (a ``[units]`` bool mask, or
    ``None``: all units), one ``torch.randperm`` from ``gen``. Where fewer than ``c`` are free,
    ``on_shortfall="error"`` raises (``where`` names the layer and module in the message);
    ``"overlap"`` takes every free unit and draws the rest from ``taken``.

    Returns:
        How many units were drawn from ``taken`` (0 without a shortfall).
    """
    units = row.numel()
    free = torch.arange(units) if taken is None else (~taken).nonzero().reshape(-1)
    if free.numel() >= c:
        row[free[torch.randperm(free.numel(), generator=gen)[:c]]] = True
        return 0
    if on_shortfall == "error":
        raise ValueError(
            f"{where}: need {c} random neurons but only {free.numel()} of {units} are left after "
            f"excluding {units - free.numel()} (on_shortfall='overlap' draws the rest from the "
            "excluded neurons)"
        )
    held = taken.nonzero().reshape(-1)  # type: ignore[union-attr]
    extra = c - free.numel()
    row[free] = True
    row[held[torch.randperm(held.numel(), generator=gen)[:extra]]] = True
    return extra


def _random_like_meta(
    other: NeuronSet,
    seed: int,
    counts: Mapping[str, torch.Tensor],
    exclude: NeuronSet | None,
    overlap: Mapping[str, Mapping[int, int]],
) -> dict:
    """A random set's meta: seed, what it matches and avoids, its overlap, the fingerprint."""
    info: dict = {
        "kind": "random_like",
        "definition": other.definition,
        "seed": int(seed),
        "matched_to": _summary(other.meta),
        "count": int(sum(int(c.sum()) for c in counts.values())),
        "exclude": None if exclude is None else (_summary(exclude.meta) or True),
        "version": _package_version(),
    }
    if overlap:
        info["overlap"] = {m: {str(k): v for k, v in d.items()} for m, d in overlap.items()}
        info["n_overlap"] = sum(sum(d.values()) for d in overlap.values())
    fp = fingerprint_of(other.meta)
    if fp is not None:
        info["model_fingerprint"] = fp
    return info


def random_like(
    other: NeuronSet,
    space_or_shapes: NeuronSpace | Mapping[str, tuple[int, int]],
    seed: int,
    exclude: NeuronSet | None = None,
    on_shortfall: Literal["error", "overlap"] = "error",
) -> NeuronSet:
    """A random set with ``other``'s count in every ``(layer, module)``, drawn uniformly.

    Within each ``(layer, module)`` the units are drawn without replacement with a
    ``torch.Generator`` seeded by ``seed`` (layers and modules in id order), so the same seed
    gives the same set on every machine.

    Args:
        other: the set whose per-layer counts to match (e.g. a task's top-k neurons).
        space_or_shapes: a :class:`NeuronSpace` or ``{module: (layers, units)}``; must be
            ``other``'s layout.
        seed: the random seed.
        exclude: neurons never to draw (e.g. ``other`` itself, for a disjoint control set).
        on_shortfall: what to do where a ``(layer, module)`` has fewer units outside
            ``exclude`` than it must draw (a set holding more than half of a layer):
            ``"error"`` raises; ``"overlap"`` takes every free unit there and draws the rest
            from the excluded ones, so the counts still match and the overlap is as small as
            it can be. The overlap per module and layer is recorded in ``meta["overlap"]``.

    Raises:
        NeuronSetMismatchError: layouts differ.
        ValueError: some ``(layer, module)`` has fewer free neurons than it must draw (with
            ``on_shortfall="error"``).

    Example:
        >>> ctrl = random_like(task_set, space, seed=0, exclude=task_set)  # doctest: +SKIP
        >>> torch.equal(ctrl.counts_per_layer()["ffn"], task_set.counts_per_layer()["ffn"])  # doctest: +SKIP
        True
    """
    shapes = _random_like_shapes(other, space_or_shapes, exclude, on_shortfall)
    gen = torch.Generator().manual_seed(int(seed))
    masks: dict[str, torch.Tensor] = {}
    overlap: dict[str, dict[int, int]] = {}
    counts = other.counts_per_layer()
    for m, (n_layers, units) in shapes.items():
        mask = torch.zeros((n_layers, units), dtype=torch.bool)
        for layer in range(n_layers):
            c = int(counts[m][layer])
            if c == 0:
                continue
            taken = None if exclude is None else exclude.masks[m][layer]
            extra = _draw_units(
                mask[layer], c, taken, gen, on_shortfall, f"layer {layer} of module {m!r}"
            )
            if extra:
                overlap.setdefault(m, {})[layer] = extra
        masks[m] = mask
    info = _random_like_meta(other, seed, counts, exclude, overlap)
    return NeuronSet(other.definition, masks, info)


def matched_random_sets(
    neuron_sets: dict[str, NeuronSet],
    space: NeuronSpace | Mapping[str, tuple[int, int]],
    seed: int,
    exclude_own: bool = True,
) -> dict[str, NeuronSet]:
    """Each task's control set: as many random neurons, matched per layer and module.

    Drawn outside the task's own set when ``exclude_own``; in a layer where the task's set
    holds more than half of the units that is impossible, so the control there takes every
    unit outside the set and the rest from inside it (a warning says how many; the set's
    ``meta["n_overlap"]`` records it). All sets are drawn before any evaluation or training,
    so a problem shows up at once.
    """
    out = {}
    for name, ns in neuron_sets.items():
        rnd = random_like(
            ns, space, seed=seed, exclude=ns if exclude_own else None, on_shortfall="overlap"
        )
        if rnd.meta.get("n_overlap"):
            layers = {m: sorted(int(k) for k in d) for m, d in rnd.meta["overlap"].items()}
            log.warning(
                "task %r: its neurons fill more than half of %s; the matched random set "
                "shares %d of its %d neurons with the task's set there",
                name,
                ", ".join(f"{m} layers {v}" for m, v in layers.items()),
                rnd.meta["n_overlap"],
                len(rnd),
            )
        out[name] = rnd
    return out


def random_pair_like(
    first: NeuronSet, second: NeuronSet, space: NeuronSpace, seed: int
) -> tuple[NeuronSet, NeuronSet]:
    """Two random sets with the two sets' counts *and their overlap* in every layer and module.

    The control for a comparison of two sets that share neurons (e.g. the parameter similarity
    of two tasks' sets): independent random sets (:func:`random_like`) share almost nothing,
    so "excess over random" would partly re-measure the overlap. Here, in every ``(layer,
    module)``, one ``torch.randperm`` from a generator seeded by ``seed`` gives the shared units
    (as many as ``first`` and ``second`` share there), then ``first``'s other units, then
    ``second``'s — always possible, as the two sets' union fits the layer.

    Example:
        >>> a, b = random_pair_like(task_a, task_b, space, seed=0)  # doctest: +SKIP
        >>> len(a & b) == len(task_a & task_b)  # doctest: +SKIP
        True
    """
    first.check_space(space)
    second.check_space(space)
    gen = torch.Generator().manual_seed(int(seed))
    pair: tuple[dict, dict] = ({}, {})
    for m, (n_layers, units) in shapes_of(space).items():
        both = first.masks[m] & second.masks[m]  # [layers, units]
        for masks in pair:
            masks[m] = torch.zeros((n_layers, units), dtype=torch.bool)
        for layer in range(n_layers):
            c = int(both[layer].sum())
            a, b = int(first.masks[m][layer].sum()) - c, int(second.masks[m][layer].sum()) - c
            perm = torch.randperm(units, generator=gen)
            pair[0][m][layer, perm[: c + a]] = True
            pair[1][m][layer, torch.cat([perm[:c], perm[c + a : c + a + b]])] = True
    shared = int(sum(int((first.masks[m] & second.masks[m]).sum()) for m in first.masks))
    return tuple(  # type: ignore[return-value]
        NeuronSet(
            first.definition,
            masks,
            {
                **_random_like_meta(like, seed, like.counts_per_layer(), None, {}),
                "kind": "random_pair_like",
                "n_shared": shared,
            },
        )  # fmt: skip
        for masks, like in zip(pair, (first, second), strict=True)
    )


__all__ = ["matched_random_sets", "random_like", "random_pair_like"]
