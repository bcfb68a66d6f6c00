"""Generalization analyses of task-neuron sets (PAPER.md §3): pure functions, no model, no I/O.

A *mask* is a bool tensor, ``[layers, d_ff]`` for one FFN neuron space (any shape works where
only set algebra is involved); ``True`` marks a neuron of the set.

* :func:`overlap_rate`, :func:`union`, :func:`overlap_matrix`, :func:`group_overlap` — the
  overlap rate ``|Nx ∩ Ny| / |Nx ∪ Ny|`` of the paper (Table 8: ``Nx`` the union of the training
  tasks' sets, ``Ny`` the union of the test tasks' sets). Two empty sets have rate **0.0**
  (by definition here: nothing is shared), so an empty set never counts as overlapping.
  :func:`chance_overlap_rate` gives the rate random sets of the same sizes would have.
* :func:`proportion_of_set` — the top ``p`` of a task's own set by relevance (the paper trains
  the top 10/30/50/70/100 % of each task's neurons).
* :func:`controlled_overlap` — Tables 9–11: a set of fixed size whose *overlap* (the fraction of
  the trained neurons that come from the test task's set) is chosen exactly.
* Figure 3's parameter similarity and Table 4's correlation: :mod:`taskneurons.analysis.parameter_similarity`.

Example:
    >>> a = torch.tensor([[True, True, False], [False, True, False]])
    >>> b = torch.tensor([[False, True, False], [False, True, True]])
    >>> overlap_rate(a, b)  # 2 shared of 4 in either
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

Masks = Iterable[torch.Tensor] | Mapping[str, torch.Tensor]


def as_mask(m: Any, what: str = "mask") -> torch.Tensor:
    """``m`` as a CPU bool tensor; ``ValueError`` (naming ``what``) unless its dtype is bool."""
    t = torch.as_tensor(m).detach().cpu()
    if t.dtype != torch.bool:
        raise ValueError(f"{what} must be a bool tensor, got dtype {t.dtype}")
    return t


def overlap_rate(a: torch.Tensor, b: torch.Tensor) -> float:
    """Overlap rate ``|a ∩ b| / |a ∪ b|`` of two bool masks of one shape, in ``[0, 1]``.

    Two empty masks give ``0.0`` (defined so: they share no neuron). ``ValueError`` when the
    shapes differ.

    Example:
        >>> overlap_rate(torch.tensor([True, True, False]), torch.tensor([False, True, True]))
        0.3333333333333333
    """
    a, b = as_mask(a, "a"), as_mask(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"masks must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n_union = int((a | b).sum())
    return 0.0 if n_union == 0 else int((a & b).sum()) / n_union


def chance_overlap_rate(a: int, b: int, n: int) -> float:
    """The overlap rate two random sets of sizes ``a`` and ``b`` out of ``n`` neurons would have.

    For sets drawn uniformly and independently the expected intersection is ``a b / n``; the
    rate given is that over the expected union, ``(a b / n) / (a + b - a b / n)`` (the chance
    level against which an observed rate of such sets is read). ``0.0`` when both are empty.

    Example:
        >>> chance_overlap_rate(50, 50, 100)  # 25 shared of 75
        0.3333333333333333
        >>> chance_overlap_rate(100, 7, 100)  # a set of everything holds the other
        0.07
    """
    if n < 1 or not (0 <= a <= n and 0 <= b <= n):
        raise ValueError(f"need 0 <= a, b <= n and n >= 1, got a={a}, b={b}, n={n}")
    shared = a * b / n
    whole = a + b - shared
    return 0.0 if whole == 0 else shared / whole


def union(masks: Masks) -> torch.Tensor:
    """The union (elementwise or) of one or more bool masks of one shape (a mask of that shape).

    A mapping (task -> mask) is taken by its values. ``ValueError`` on no masks or on shapes
    that differ.

    Example:
        >>> union([torch.tensor([True, False, False]), torch.tensor([False, False, True])])
        tensor([ True, False,  True])
    """
    items = list(masks.values()) if isinstance(masks, Mapping) else list(masks)
    if not items:
        raise ValueError("union of no masks: give at least one")
    out = as_mask(items[0]).clone()
    for i, m in enumerate(items[1:], start=1):
        m = as_mask(m)
        if m.shape != out.shape:
            raise ValueError(f"mask {i} has shape {tuple(m.shape)}, mask 0 {tuple(out.shape)}")
        out |= m
    return out


def overlap_matrix(masks: Mapping[str, torch.Tensor]) -> tuple[list[str], np.ndarray]:
    """Pairwise overlap rates of named masks: ``(names, R)`` with ``R`` float64 ``[T, T]``.

    ``R[i, j] = overlap_rate(masks[names[i]], masks[names[j]])``: symmetric, 1.0 on the diagonal
    for non-empty masks (0.0 for an empty one). Names keep the mapping's order.

    Example:
        >>> names, R = overlap_matrix({"x": torch.tensor([True, True]), "y": torch.tensor([True, False])})
        >>> names, R.tolist()
        (['x', 'y'], [[1.0, 0.5], [0.5, 1.0]])
    """
    names = [str(k) for k in masks]
    items = [as_mask(masks[k], f"mask {k!r}") for k in masks]
    R = np.zeros((len(items), len(items)), dtype=np.float64)
    for i in range(len(items)):
        for j in range(i, len(items)):
            R[i, j] = R[j, i] = overlap_rate(items[i], items[j])
    return names, R


def group_overlap(train_masks: Masks, test_masks: Masks) -> float:
    """Overlap rate of the union of the training tasks' masks with that of the test tasks'.

    PAPER.md Table 8: ``|Nx ∩ Ny| / |Nx ∪ Ny|``, ``Nx = ∪ train``, ``Ny = ∪ test``, in ``[0, 1]``.

    Example:
        >>> train = [torch.tensor([True, False, False, False]), torch.tensor([False, True, False, False])]
        >>> group_overlap(train, [torch.tensor([False, True, True, False])])
        0.3333333333333333
    """
    return overlap_rate(union(train_masks), union(test_masks))


def proportion_of_set(scores: torch.Tensor, mask: torch.Tensor, proportion: float) -> torch.Tensor:
    """The ``round(proportion * |mask|)`` highest-scoring neurons inside ``mask`` (a sub-mask).

    Ranked over the whole mask (all layers together), not per layer. Rounds half up (as
    ``count_for`` in ``taskneurons.neurons.selection``), so a small set may keep 0 neurons.
    Ties go to the lower flat (row-major) index; scores outside ``mask`` are ignored.

    Args:
        scores: relevance ``[layers, d_ff]`` (any float units; larger = more relevant).
        mask: the task's selected neurons, bool, same shape as ``scores``.
        proportion: fraction of the set to keep, in ``(0, 1]``; 1 returns a copy of ``mask``.

    Returns:
        bool ``[layers, d_ff]``, a subset of ``mask``.

    Example:
        >>> s = torch.tensor([[0.9, 0.1, 0.5], [0.5, 0.7, 0.0]])
        >>> m = torch.tensor([[True, True, True], [True, False, False]])
        >>> proportion_of_set(s, m, 0.5).int().tolist()  # 2 of 4: 0.9, then 0.5 at the lower index
        [[1, 0, 1], [0, 0, 0]]
    """
    mask = as_mask(mask)
    scores = torch.as_tensor(scores).detach().cpu()
    if scores.shape != mask.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and mask {tuple(mask.shape)} differ")
    p = float(proportion)
    if not 0.0 < p <= 1.0:  # also rejects nan
        raise ValueError(f"proportion must lie in (0, 1], got {proportion!r}")
    if p == 1.0:
        return mask.clone()
    idx = mask.reshape(-1).nonzero().reshape(-1)  # flat ids of the set, ascending
    vals = scores.reshape(-1)[idx].to(torch.float64)
    if torch.isnan(vals).any():
        raise ValueError("scores inside the mask contain nan")
    order = torch.sort(vals, descending=True, stable=True).indices  # ties: lower id first
    keep = idx[order[: math.floor(p * idx.numel() + 0.5)]]
    out = torch.zeros(mask.numel(), dtype=torch.bool)
    out[keep] = True
    return out.reshape(mask.shape)


def controlled_overlap(
    target: torch.Tensor,
    n_total: int,
    overlap: float,
    generator: torch.Generator | int,
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """A random set of exactly ``n_total`` neurons, ``round(overlap * n_total)`` from ``target``.

    PAPER.md Tables 9–11. *Overlap* here is the fraction of the trained neurons that come from
    the test task's set ``target``: ``|out ∩ target| / |out|`` (not the overlap rate).
    ``k = round(overlap * n_total)`` (half up) neurons are drawn uniformly without replacement
    from ``target ∩ candidates``, the other ``n_total - k`` from ``candidates \\ target``;
    ``candidates`` defaults to every neuron, and the whole result lies inside it (pass
    ``candidates | target`` to restrict only the non-target draws).

    Deterministic given the seed: an ``int`` seeds a fresh CPU ``torch.Generator``; a passed
    generator is used (and advanced): one ``torch.randperm`` of the target pool, then one of
    the other pool.

    Args:
        target: bool ``[layers, d_ff]``, the test task's neurons.
        n_total: size of the returned set (>= 0).
        overlap: requested fraction in ``[0, 1]``.
        generator: a seed or a ``torch.Generator``.
        candidates: bool mask of the same shape, the neurons allowed at all; ``None``: all.

    Returns:
        bool ``[layers, d_ff]`` with ``n_total`` ``True`` entries.

    Example:
        >>> t = torch.tensor([[True, True, True, False, False, False]])
        >>> out = controlled_overlap(t, 4, 0.5, generator=0)
        >>> int(out.sum()), int((out & t).sum())
        (4, 2)
    """
    target = as_mask(target, "target")
    cand = torch.ones_like(target) if candidates is None else as_mask(candidates, "candidates")
    if cand.shape != target.shape:
        raise ValueError(f"candidates {tuple(cand.shape)} and target {tuple(target.shape)} differ")
    n = int(n_total)
    if n < 0 or n != n_total:
        raise ValueError(f"n_total must be a non-negative integer, got {n_total!r}")
    ov = float(overlap)
    if not 0.0 <= ov <= 1.0:  # also rejects nan
        raise ValueError(f"overlap must lie in [0, 1], got {overlap!r}")
    k = math.floor(ov * n + 0.5)  # half up, not banker's rounding
    inside = (target & cand).reshape(-1).nonzero().reshape(-1)
    outside = (~target & cand).reshape(-1).nonzero().reshape(-1)
    for need, pool, what in ((k, inside, "target"), (n - k, outside, "non-target")):
        if need > pool.numel():
            raise ValueError(f"overlap {ov:g} of {n}: {need} {what} neurons, {pool.numel()} exist")
    gen = generator
    if not isinstance(gen, torch.Generator):
        gen = torch.Generator().manual_seed(int(generator))
    out = torch.zeros(target.numel(), dtype=torch.bool)
    out[inside[torch.randperm(inside.numel(), generator=gen)[:k]]] = True
    out[outside[torch.randperm(outside.numel(), generator=gen)[: n - k]]] = True
    return out.reshape(target.shape)
