"""Figure 3's parameter similarity and Table 4's correlation (PAPER.md §3): pure functions.

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
    >>> params = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])]
    >>> layer_similarity(params, torch.tensor([[True, False, False]]), torch.tensor([[False, False, True]])).round(4).tolist()
    [0.7071]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, rankdata, spearmanr

from taskneurons.analysis.set_overlap import as_mask


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
    mask = as_mask(mask)
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
