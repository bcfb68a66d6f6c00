"""Versions of parameter slices: read, write, combine (NCFT checkpoints, W-NCFT inference).

A :data:`Version` holds the values of some slices of some parameters: parameter name ->
``(dim, positions, values)`` with ``values = param.index_select(dim, positions)`` (the raw
layout of :class:`~taskneurons.training.neuron_delta.NeuronDelta`: rows of W1 parts, columns
of W2, bias entries). After NCFT's stage ``t`` the slices of task ``t``'s neurons hold task
``t``'s *version* of them.

:func:`combine` is W-NCFT's weighting; ``s_t`` is one logit per version (cosine / T) and
``delta_t = V_t - base``. Two rules (``WncftConfig.weighting``):

* ``"plain"`` (PAPER.md §4 as written: each neuron becomes the similarity-weighted combination
  of the trained tasks' versions, a task's version of a neuron it did not train being the base
  value)::

      value = base + sum_{t covers it} w_t * delta_t   with   w = softmax over all tasks of s

  With near-uniform weights (T = 1, cosines near 1) a neuron of one task keeps only ``1/N`` of
  its trained change.
* ``"renormalised"`` (this library's earlier rule): the softmax renormalised over the tasks
  whose version covers the position::

      value = sum_{t covers it} w_t * V_t   with   w_t = softmax over {t covering it} of s

  A position covered by one task takes that task's version exactly (``w = 1``) whatever the
  weights. Computed per position with the covering tasks' largest logit subtracted, so no
  weight underflows to a 0/0.

Under both rules positions no version covers are not in the result (they keep the base
weights), and with one trained task the result is that task's version (the NCFT model).
Sums run in float32 (or the wider dtype), weights in float64.

Example:
    >>> v = read_slices(model, {"model.layers.0.mlp.down_proj.weight": (1, torch.tensor([3, 7]))})  # doctest: +SKIP
    >>> both = combine([v1, v2], torch.tensor([0.9, 0.2]))  # doctest: +SKIP
    >>> write_slices(model, both)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

#: parameter name -> ``(dim, positions [n] long ascending)``
Layout = dict[str, tuple[int, torch.Tensor]]

#: parameter name -> ``(dim, positions [n], values = param.index_select(dim, positions))``
Version = dict[str, tuple[int, torch.Tensor, torch.Tensor]]


def _params(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters())


def read_slices(model: nn.Module, layout: Mapping[str, tuple[int, torch.Tensor]]) -> Version:
    """The current values of ``layout``'s slices (detached copies).

    Example:
        >>> v = read_slices(model, {"model.layers.0.mlp.down_proj.weight": (1, torch.tensor([3]))})  # doctest: +SKIP
        >>> v["model.layers.0.mlp.down_proj.weight"][2].shape  # [d_model, 1]  # doctest: +SKIP
        torch.Size([576, 1])
    """
    params = _params(model)
    out: Version = {}
    for name, (dim, pos) in layout.items():
        p = params[name]
        pos = pos.to(p.device)
        out[name] = (dim, pos, p.detach().index_select(dim, pos).clone())
    return out


def write_slices(model: nn.Module, version: Version) -> None:
    """Write ``version``'s values into the model's parameters (cast to their dtype).

    Example:
        >>> saved = read_slices(model, layout_of(v)); write_slices(model, v)  # doctest: +SKIP
        >>> write_slices(model, saved)  # the earlier values again, bit-exact  # doctest: +SKIP
    """
    params = _params(model)
    with torch.no_grad():
        for name, (dim, pos, values) in version.items():
            p = params[name]
            p.index_copy_(dim, pos.to(p.device), values.to(p.device, p.dtype))


def layout_of(version: Version) -> Layout:
    """The slices a version covers."""
    return {name: (dim, pos) for name, (dim, pos, _v) in version.items()}


def union_layout(layouts: Sequence[Mapping[str, tuple[int, torch.Tensor]]]) -> Layout:
    """Every slice any of ``layouts`` covers (positions sorted, once each).

    Example:
        >>> union_layout([{"w": (0, torch.tensor([2, 0]))}, {"w": (0, torch.tensor([1, 2]))}])
        {'w': (0, tensor([0, 1, 2]))}
    """
    found: dict[str, tuple[int, list[torch.Tensor]]] = {}
    for layout in layouts:
        for name, (dim, pos) in layout.items():
            if name in found and found[name][0] != dim:
                raise ValueError(
                    f"parameter {name}: slices along two axes ({dim}, {found[name][0]})"
                )
            found.setdefault(name, (dim, []))[1].append(pos.cpu())
    return {name: (dim, torch.unique(torch.cat(parts))) for name, (dim, parts) in found.items()}


def _shape_for(dim: int, ndim: int) -> list[int]:
    shape = [1] * ndim
    shape[dim] = -1
    return shape


def combine(
    versions: Sequence[Version],
    logits: torch.Tensor,
    rule: str = "renormalised",
    base: Version | None = None,
) -> Version:
    """W-NCFT's weighted combination of ``versions`` (see the module docstring).

    Args:
        versions: one :data:`Version` per trained task.
        logits: ``[len(versions)]`` similarity logits (cosine / temperature).
        rule: ``"plain"`` or ``"renormalised"``.
        base: the base values of the union of the versions' slices (``"plain"`` only;
            :func:`read_slices` of the model at rest over :func:`union_layout`).

    Returns:
        The combined :data:`Version` over the union of the versions' slices.

    Example:
        >>> v1 = {"w": (0, torch.tensor([0, 1]), torch.tensor([[1.0], [2.0]]))}
        >>> v2 = {"w": (0, torch.tensor([1]), torch.tensor([[4.0]]))}
        >>> combine([v1, v2], torch.tensor([0.0, 0.0]))["w"][2].tolist()  # row 1: mean of 2, 4
        [[1.0], [3.0]]
        >>> base = {"w": (0, torch.tensor([0, 1]), torch.tensor([[0.0], [0.0]]))}
        >>> combine([v1, v2], torch.tensor([0.0, 0.0]), "plain", base)["w"][2].tolist()
        [[0.5], [3.0]]
    """
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if logits.shape != (len(versions),):
        raise ValueError(f"need one logit per version ({len(versions)}), got {tuple(logits.shape)}")
    if rule == "plain":
        if base is None:
            raise ValueError("the plain rule needs the base values (base=read_slices(...))")
        return combine_deltas(plain_deltas(versions, base), torch.softmax(logits, 0), base)
    if rule != "renormalised":
        raise ValueError(f"rule must be 'plain' or 'renormalised', got {rule!r}")
    out: Version = {}
    for name, (dim, union) in union_layout([layout_of(v) for v in versions]).items():
        covering = [(t, v[name]) for t, v in enumerate(versions) if name in v]
        best = torch.full((union.numel(),), float("-inf"), dtype=torch.float64)  # [n]
        idx = {t: torch.searchsorted(union, pos.cpu()) for t, (_d, pos, _v) in covering}
        for t, _slice in covering:
            best[idx[t]] = torch.maximum(best[idx[t]], logits[t].expand(idx[t].numel()))
        values = covering[0][1][2]
        wide = torch.promote_types(values.dtype, torch.float32)
        shape = list(values.shape)
        shape[dim] = union.numel()
        acc = torch.zeros(shape, dtype=wide, device=values.device)  # [.., n, ..]
        wsum = torch.zeros(union.numel(), dtype=torch.float64)  # [n]
        for t, (_d, _pos, val) in covering:
            w = torch.exp(logits[t] - best[idx[t]])  # [n_t] float64, in (0, 1]
            wsum.index_add_(0, idx[t], w)
            scaled = val.to(wide) * w.to(wide, copy=False).to(val.device).view(
                _shape_for(dim, val.dim())
            )
            acc.index_add_(dim, idx[t].to(val.device), scaled)
        norm = wsum.to(wide).to(acc.device).view(_shape_for(dim, acc.dim()))
        out[name] = (dim, union, acc / norm)
    return out


#: per version: parameter name -> ``(idx [n_t] into the union's positions, delta = V_t - base)``
Deltas = list[dict[str, tuple[torch.Tensor, torch.Tensor]]]


def plain_deltas(versions: Sequence[Version], base: Version) -> Deltas:
    """Each version's change from ``base`` (``V_t - base``, in the wider of its dtype and
    float32) at its positions in the union of the slices: what the plain rule weighs.

    Computed once per set of versions, they make :func:`combine_deltas` cheap for many weights
    (W-NCFT inferred answers each input under its own weights).

    Example:
        >>> v1 = {"w": (0, torch.tensor([1]), torch.tensor([[4.0]]))}
        >>> v2 = {"w": (0, torch.tensor([0]), torch.tensor([[2.0]]))}
        >>> base = {"w": (0, torch.tensor([0, 1]), torch.tensor([[0.0], [1.0]]))}
        >>> plain_deltas([v1, v2], base)  # index into the union [0, 1], V_t - base
        [{'w': (tensor([1]), tensor([[3.]]))}, {'w': (tensor([0]), tensor([[2.]]))}]
    """
    union = union_layout([layout_of(v) for v in versions])
    deltas: Deltas = [{} for _ in versions]
    for name, (dim, positions) in union.items():
        _bdim, bpos, bval = base[name]
        if not torch.equal(bpos.cpu(), positions):
            raise ValueError(f"base of {name} does not cover the versions' union of slices")
        wide = torch.promote_types(bval.dtype, torch.float32)
        for t, version in enumerate(versions):
            if name not in version:
                continue
            _d, pos, val = version[name]
            idx = torch.searchsorted(positions, pos.cpu()).to(bval.device)  # [n_t]
            delta = val.to(bval.device, wide) - bval.to(wide).index_select(dim, idx)
            deltas[t][name] = (idx, delta)
    return deltas


def combine_deltas(deltas: Deltas, weights: torch.Tensor, base: Version) -> Version:
    """The plain rule from :func:`plain_deltas`: ``base + sum_t weights[t] * delta_t``.

    Example:
        >>> base = {"w": (0, torch.tensor([0, 1]), torch.tensor([[0.0], [1.0]]))}
        >>> deltas = [{"w": (torch.tensor([1]), torch.tensor([[3.0]]))}]
        >>> combine_deltas(deltas, torch.tensor([0.5]), base)["w"][2].tolist()
        [[0.0], [2.5]]
    """
    if tuple(weights.shape) != (len(deltas),):
        raise ValueError(f"need one weight per version ({len(deltas)}), got {tuple(weights.shape)}")
    out: Version = {}
    for name, (dim, positions, bval) in base.items():
        if not any(name in parts for parts in deltas):
            continue  # a slice no version covers keeps its base value
        wide = torch.promote_types(bval.dtype, torch.float32)
        acc = bval.to(wide).clone()  # [.., n, ..]
        for t, parts in enumerate(deltas):
            if name in parts:
                idx, delta = parts[name]
                acc.index_add_(dim, idx, delta * float(weights[t]))
        out[name] = (dim, positions, acc)
    return out


def version_state(version: Version, prefix: str) -> dict[str, torch.Tensor]:
    """Tensors of a version for a checkpoint: ``prefix+name+"/positions"``, ``"/values"``."""
    out = {}
    for name, (dim, pos, values) in version.items():
        out[f"{prefix}{name}/positions"] = pos.cpu().clone()
        out[f"{prefix}{name}/values"] = values.cpu().clone()
        out[f"{prefix}{name}/dim"] = torch.tensor(dim)
    return out


def version_from_state(state: Mapping[str, torch.Tensor], prefix: str) -> Version:
    """Inverse of :func:`version_state` (names in the order their keys appear)."""
    names = [
        k[len(prefix) : -len("/dim")] for k in state if k.startswith(prefix) and k.endswith("/dim")
    ]
    return {
        n: (
            int(state[f"{prefix}{n}/dim"]),
            state[f"{prefix}{n}/positions"].long(),
            state[f"{prefix}{n}/values"],
        )
        for n in names
    }


def version_bytes(version: Version) -> int:
    """Bytes of a version's values and positions."""
    return int(
        sum(
            p.numel() * p.element_size() + v.numel() * v.element_size()
            for _d, p, v in version.values()
        )
    )
