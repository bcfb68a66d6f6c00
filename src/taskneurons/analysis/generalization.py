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
* :func:`neuron_vectors`, :func:`set_vectors`, :func:`layer_similarity`,
  :func:`mean_similarity` — Figure 3's parameter similarity, defined as follows. In one layer,
  neuron ``j``'s *parameter vector* is the concatenation of everything that belongs to it in that
  layer's FFN matrices: row ``j`` of each matrix with one row per neuron (``nn.Linear`` weights of
  ``up_proj``/``gate_proj``/``fc1``, ``[d_ff, d]``) and column ``j`` of each matrix with one
  column per neuron (``down_proj``/``fc2``, ``[d, d_ff]``), so ``p = 3 d`` for a gated FFN and
  ``2 d`` otherwise. The caller passes, per layer, a ``[d_ff, p]`` tensor of these vectors (see
  :func:`neuron_vectors`), taken from the model fine-tuned on training task ``i`` (``M_i``). The
  vector of a neuron *set* in a layer is the mean of its neurons' vectors; the similarity of two
  sets in a layer is the cosine of their mean vectors (``nan`` where either set is empty in
  that layer or a mean vector is zero). :func:`mean_similarity` averages the per-layer curves
  of several models, ignoring ``nan``.
* :func:`correlation` — Table 4: Pearson and Spearman correlation with SciPy p-values and
  seeded percentile-bootstrap confidence intervals.

Example:
    >>> a = torch.tensor([[True, True, False], [False, True, False]])
    >>> b = torch.tensor([[False, True, False], [False, True, True]])
    >>> overlap_rate(a, b)  # 2 shared of 4 in either
    0.5
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, rankdata, spearmanr

Masks = Iterable[torch.Tensor] | Mapping[str, torch.Tensor]


def _mask(m: Any, what: str = "mask") -> torch.Tensor:
    """``m`` as a CPU bool tensor; ``ValueError`` unless its dtype is bool."""
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
    a, b = _mask(a, "a"), _mask(b, "b")
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
    out = _mask(items[0]).clone()
    for i, m in enumerate(items[1:], start=1):
        m = _mask(m)
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
    items = [_mask(masks[k], f"mask {k!r}") for k in masks]
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
    mask = _mask(mask)
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
    target = _mask(target, "target")
    cand = torch.ones_like(target) if candidates is None else _mask(candidates, "candidates")
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


def neuron_vectors(
    rows: Sequence[torch.Tensor] = (), columns: Sequence[torch.Tensor] = ()
) -> torch.Tensor:
    """One layer's per-neuron parameter vectors ``[d_ff, p]`` from its FFN matrices.

    Args:
        rows: matrices ``[d_ff, d_i]`` whose row ``j`` belongs to neuron ``j`` (``nn.Linear``
            weights of ``gate_proj``/``up_proj``/``fc1``; a bias ``[d_ff]`` as ``b[:, None]``).
        columns: matrices ``[d_i, d_ff]`` whose column ``j`` belongs to neuron ``j``
            (``nn.Linear`` weight of ``down_proj``/``fc2``).

    Returns:
        ``torch.cat([*rows, *(c.T for c in columns)], dim=1)``: ``[d_ff, sum d_i]``, the input
        dtype (no copy to float64 here).

    Example:
        >>> up, down = torch.ones(3, 2), torch.zeros(2, 3)  # d = 2, d_ff = 3
        >>> neuron_vectors([up], [down]).shape
        torch.Size([3, 4])
    """
    parts = [torch.as_tensor(r) for r in rows] + [torch.as_tensor(c).T for c in columns]
    if not parts:
        raise ValueError("give at least one matrix")
    widths = {p.shape[0] for p in parts if p.ndim == 2}
    if len(widths) != 1 or any(p.ndim != 2 for p in parts):
        raise ValueError(f"matrices disagree on d_ff: {[tuple(p.shape) for p in parts]}")
    return torch.cat(parts, dim=1)


def set_vectors(neuron_params: Sequence[torch.Tensor], mask: torch.Tensor) -> np.ndarray:
    """Per layer the mean parameter vector of the set's neurons: float64 ``[layers, p]``.

    Args:
        neuron_params: one ``[d_ff, p]`` tensor per layer (see :func:`neuron_vectors`).
        mask: bool ``[layers, d_ff]``.

    Returns:
        ``[layers, p]``; the row of a layer where the set is empty is all ``nan``.

    Example:
        >>> params = [torch.tensor([[1.0, 0.0], [3.0, 2.0]])] * 2
        >>> set_vectors(params, torch.tensor([[True, True], [False, False]])).tolist()
        [[2.0, 1.0], [nan, nan]]
    """
    mask = _mask(mask)
    if mask.ndim != 2 or mask.shape[0] != len(neuron_params):
        raise ValueError(f"mask {tuple(mask.shape)} must be [layers={len(neuron_params)}, d_ff]")
    rows = []
    for layer, params in enumerate(neuron_params):
        params = torch.as_tensor(params).detach()
        if params.ndim != 2 or params.shape[0] != mask.shape[1]:
            raise ValueError(f"layer {layer}: params {tuple(params.shape)}, need [d_ff, p]")
        if rows and params.shape[1] != rows[0].shape[0]:
            raise ValueError(f"layer {layer}: p = {params.shape[1]}, layer 0 has {len(rows[0])}")
        sel = mask[layer].nonzero().reshape(-1).to(params.device)
        if sel.numel() == 0:
            rows.append(np.full(params.shape[1], np.nan))
        else:
            rows.append(params[sel].to(torch.float64).mean(dim=0).cpu().numpy())
    return np.stack(rows) if rows else np.zeros((0, 0))


def layer_similarity(
    neuron_params: Sequence[torch.Tensor], mask_i: torch.Tensor, mask_j: torch.Tensor
) -> np.ndarray:
    """Per layer the cosine similarity of two sets' mean parameter vectors: float64 ``[layers]``.

    ``nan`` in a layer where either set is empty or a mean vector is zero. Unitless, in
    ``[-1, 1]``; unchanged when all parameters are scaled by a positive factor.

    Args:
        neuron_params: one ``[d_ff, p]`` tensor per layer, from the model trained on task ``i``.
        mask_i, mask_j: bool ``[layers, d_ff]``: training task ``i``'s and test task ``j``'s sets.

    Example:
        >>> params = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])]
        >>> layer_similarity(params, torch.tensor([[True, False, False]]), torch.tensor([[False, False, True]])).round(4).tolist()
        [0.7071]
    """
    u, v = set_vectors(neuron_params, mask_i), set_vectors(neuron_params, mask_j)
    if u.shape != v.shape:
        raise ValueError(f"mask_i and mask_j give {u.shape} and {v.shape}")
    dot = (u * v).sum(axis=1)  # [layers]
    norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)  # [layers]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), np.nan)
    return np.clip(cos, -1.0, 1.0)


def mean_similarity(per_model: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over models of per-layer similarities, ignoring ``nan``: float64 ``[layers]``.

    A layer that is ``nan`` in every model stays ``nan`` (no warning).

    Example:
        >>> mean_similarity([np.array([0.2, np.nan]), np.array([0.4, np.nan])]).round(6).tolist()
        [0.3, nan]
    """
    if len(per_model) == 0:
        raise ValueError("give the per-layer similarities of at least one model")
    arr = np.stack([np.asarray(s, dtype=np.float64) for s in per_model])  # [models, layers]
    if arr.ndim != 2:
        raise ValueError(f"each model's similarities must be [layers], got {arr.shape[1:]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan layers
        return np.nanmean(arr, axis=0)


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation of paired values, with bootstrap intervals.

    Attributes:
        pearson_r, pearson_p: Pearson's r and its two-sided p-value (``scipy.stats.pearsonr``).
        spearman_rho, spearman_p: Spearman's rho and two-sided p-value (``scipy.stats.spearmanr``).
        n: number of pairs.
        pearson_ci, spearman_ci: ``(low, high)`` percentile bootstrap intervals.
        confidence: coverage of the intervals (0.95: the 2.5 and 97.5 percentiles).
        n_boot: resamples drawn; n_boot_used: those kept (neither x nor y constant).
        seed: seed of the ``numpy.random.default_rng`` that drew the resamples.
    """

    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    n: int
    pearson_ci: tuple[float, float]
    spearman_ci: tuple[float, float]
    confidence: float
    n_boot: int
    n_boot_used: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (intervals as two-element lists)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["pearson_ci"] = list(self.pearson_ci)
        out["spearman_ci"] = list(self.spearman_ci)
        return out


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of ``a``, ``b`` ``[B, n]`` -> ``[B]`` (caller drops constants)."""
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    r = (ac * bc).sum(axis=1) / np.sqrt((ac * ac).sum(axis=1) * (bc * bc).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval ``(low, high)`` of ``values`` ``[B]``; ``(nan, nan)`` when empty."""
    if values.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return (float(lo), float(hi))


def correlation(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Correlation:
    """Pearson and Spearman correlation of ``x`` and ``y`` ``[n]`` with percentile bootstrap CIs.

    Point estimates and p-values come from SciPy. The bootstrap draws ``n_boot`` resamples of
    the ``n`` pairs with replacement (``numpy.random.default_rng(seed).integers``); in each,
    Pearson's r of the values and of their average ranks (Spearman). A resample in which ``x``
    or ``y`` is constant has no correlation (``nan``) and is skipped; the interval is
    ``(nan, nan)`` if every resample is. ``ValueError`` for fewer than 3 pairs, lengths that
    differ, non-finite values, constant ``x`` or ``y``, ``n_boot < 1`` or ``confidence``
    outside ``(0, 1)``.

    Example:
        >>> c = correlation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], n_boot=200)
        >>> round(c.pearson_r, 6), round(c.spearman_rho, 6), c.n
        (0.8, 0.8, 5)
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or ya.ndim != 1 or xa.shape != ya.shape:
        raise ValueError(f"x and y must be 1-D of one length, got {xa.shape} and {ya.shape}")
    if len(xa) < 3:
        raise ValueError(f"need at least 3 pairs, got {len(xa)}")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError("x and y must be finite")
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        raise ValueError("x or y is constant: the correlation is undefined")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    pr, pp = pearsonr(xa, ya)
    sr, sp = spearmanr(xa, ya)
    idx = np.random.default_rng(seed).integers(0, len(xa), size=(int(n_boot), len(xa)))
    xb, yb = xa[idx], ya[idx]  # [B, n]
    ok = (np.ptp(xb, axis=1) > 0) & (np.ptp(yb, axis=1) > 0)  # [B]
    xb, yb = xb[ok], yb[ok]
    boot_p = _row_pearson(xb, yb)
    boot_s = _row_pearson(rankdata(xb, axis=1), rankdata(yb, axis=1)) if len(xb) else boot_p
    return Correlation(
        pearson_r=float(pr),
        pearson_p=float(pp),
        spearman_rho=float(sr),
        spearman_p=float(sp),
        n=len(xa),
        pearson_ci=_interval(boot_p, confidence),
        spearman_ci=_interval(boot_s, confidence),
        confidence=float(confidence),
        n_boot=int(n_boot),
        n_boot_used=int(ok.sum()),
        seed=int(seed),
    )
