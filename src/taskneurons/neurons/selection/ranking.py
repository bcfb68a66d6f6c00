"""One task's neurons by rank: the top ``k`` % by relevance, and the overlap of two sets.

* :func:`top_k` — the top ``k`` % of neurons by relevance (the task-specific neurons of
  PAPER.md), ranked over the whole model or within each layer; ties go to the lower neuron id.
* :func:`check_k`, :func:`count_for` — ``k`` checked as a percentage and turned into a count
  (from :mod:`~taskneurons.neurons.selection.percent`, which loads no torch).
* :func:`iou` — overlap of two sets of one space (``a | b``, ``a & b``, ``a - b`` are on the
  class).

The random control sets are in :mod:`~taskneurons.neurons.selection.random_sets`; selections
that look at several tasks at once in :mod:`~taskneurons.neurons.selection.algorithms`.

Example:
    >>> scores = NeuronScores("ffn", {"ffn": torch.rand(2, 8)})  # doctest: +SKIP
    >>> task = top_k(scores, k=25)  # 4 of 16 neurons  # doctest: +SKIP
    >>> iou(task, task)  # doctest: +SKIP
    1.0
    >>> task.save("out/task_neurons.safetensors")  # + task_neurons.json  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from taskneurons.neurons.neuron_set import NeuronSet, _package_version
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection.percent import check_k, count_for
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import fingerprint_of, model_fingerprint

Scope = Literal["model", "layer"]
RankModules = Literal["together", "separately"]

#: Keys copied from a NeuronScores' meta into the NeuronSet's meta (when present).
_INHERITED_KEYS = (
    "task",
    "task_source",
    "data",
    "subset",
    "n_examples",
    "split",
    "examples",
    "examples_hash",
    "data_hash",
    "tuned_overlap",
    "seed",
)


def _top_indices(values: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` largest entries of a 1-D tensor; ties go to the lower index."""
    # a stable descending sort keeps equal scores in index (= neuron id) order
    order = torch.sort(values, descending=True, stable=True).indices
    return order[:count]


def _check_top_k_args(k: float, scope: str, rank_modules: str) -> float:
    """``k`` as a float (see :func:`check_k`); rejects an unknown ``scope``/``rank_modules``."""
    kf = check_k(k)
    if scope not in ("model", "layer"):
        raise ValueError(f"scope must be 'model' or 'layer', got {scope!r}")
    if rank_modules not in ("together", "separately"):
        raise ValueError(f"rank_modules must be 'together' or 'separately', got {rank_modules!r}")
    return kf


def _scores_in_id_order(
    scores: NeuronScores, model: nn.Module | None
) -> tuple[dict[str, torch.Tensor], NeuronSpace | None]:
    """``scores``' module tensors (in the model's id order when given) and the model's space."""
    raw = dict(scores.scores)
    space = None
    if model is not None:
        space = NeuronSpace(model, scores.definition)  # type: ignore[arg-type]
        if sorted(raw) == sorted(space.modules):  # put modules in id order (files sort them)
            raw = {m: raw[m] for m in space.modules}
    return raw, space


def _check_no_nan(raw: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` naming the first nan (module, layer, unit) of the scores."""
    for m, t in raw.items():
        if torch.isnan(t).any():
            bad = torch.isnan(t).nonzero()[0].tolist()
            raise ValueError(
                f"scores of module {m!r} contain nan (first at layer {bad[0]}, unit {bad[1]}); "
                "cannot rank them"
            )


def _rank(
    raw: Mapping[str, torch.Tensor], kf: float, scope: Scope, rank_modules: RankModules
) -> dict[str, torch.Tensor]:
    """The top ``kf`` % of ``raw`` as boolean masks ``[layers, units]``, module -> mask.

    Each group of modules ranked together is one ``[layers, sum(units)]`` float64 block
    (modules side by side, id order), ranked as a whole or row by row (``scope="layer"``).
    """
    shapes = {m: tuple(t.shape) for m, t in raw.items()}
    vals = {m: t.detach().to("cpu", torch.float64) for m, t in raw.items()}
    masks = {m: torch.zeros(shapes[m], dtype=torch.bool) for m in shapes}
    n_layers = next(iter(shapes.values()))[0]
    # groups of modules ranked in one list
    groups = [list(shapes)] if rank_modules == "together" else [[m] for m in shapes]
    for group in groups:
        widths = [shapes[m][1] for m in group]
        block = torch.cat([vals[m] for m in group], dim=1)  # [layers, sum(widths)], id order
        chosen = torch.zeros(block.shape, dtype=torch.bool)
        if scope == "model":
            flat = block.reshape(-1)
            chosen.view(-1)[_top_indices(flat, count_for(kf, flat.numel()))] = True
        else:
            c = count_for(kf, block.shape[1])
            for layer in range(n_layers):
                chosen[layer, _top_indices(block[layer], c)] = True
        for m, part in zip(group, chosen.split(widths, dim=1), strict=True):
            masks[m] = part.contiguous()
    return masks


def _top_k_meta(
    scores: NeuronScores,
    kf: float,
    scope: Scope,
    rank_modules: RankModules,
    model: nn.Module | None,
    meta: dict | None,
) -> dict:
    """A top-k set's meta: the choices, the model fingerprint (from ``scores.meta``, else
    ``model``), the task and data of the scores; ``meta`` overrides all."""
    info: dict = {
        "kind": "top_k",
        "definition": scores.definition,
        "k": kf,
        "scope": scope,
        "rank_modules": rank_modules,
        "tie_break": "lower neuron id",
    }
    fp = fingerprint_of(scores.meta)
    if fp is None and model is not None:
        fp = model_fingerprint(model)
    if fp is not None:
        info["model_fingerprint"] = fp
    for key in _INHERITED_KEYS:
        if key in scores.meta:
            info[key] = scores.meta[key]
    config = scores.meta.get("config")
    if "seed" not in info and isinstance(config, Mapping) and "seed" in config:
        info["seed"] = config["seed"]  # seed of the scored example subset
    info["version"] = _package_version()
    info["scores_meta"] = scores.meta
    info.update(meta or {})
    return info


def top_k(
    scores: NeuronScores,
    k: float,
    scope: Scope = "model",
    rank_modules: RankModules = "together",
    meta: dict | None = None,
    model: nn.Module | None = None,
) -> NeuronSet:
    """The top ``k`` % of neurons by relevance score: a task's task-specific neurons.

    PAPER.md leaves two choices open; this function makes them explicit:

    * ``scope="model"`` (default) ranks every neuron of the model together and keeps the best
      ``count_for(k, N)`` of all ``N``: layers that matter more get more neurons.
      ``scope="layer"`` keeps ``count_for(k, n_layer)`` of each layer (the same count per layer).
    * ``rank_modules`` (only matters for the ``linear`` definition, where W1 and W2 output
      units are separate modules): ``"together"`` ranks all modules in one list (scores must be
      comparable across them, as relevance in loss units is); ``"separately"`` keeps ``k`` % of
      each module (within the model or within each layer, per ``scope``).

    Ties are broken deterministically by neuron id (the lower id wins).

    Args:
        scores: relevance per neuron, ``[layers, units]`` per module.
        k: percentage in ``(0, 100]`` (10 in the paper).
        scope: ``"model"`` or ``"layer"``.
        rank_modules: ``"together"`` or ``"separately"``.
        meta: extra meta entries (override the defaults taken from ``scores.meta``).
        model: the scored model, when ``scores.meta`` carries no model fingerprint: its
            :func:`~taskneurons.models.loading.model_fingerprint` is recorded and the layout
            checked against it.

    Returns:
        A :class:`NeuronSet` of ``scores``' layout.

    Raises:
        ValueError: ``k`` outside ``(0, 100]`` (or nan), unknown ``scope``/``rank_modules``,
            scores containing nan.

    Example:
        >>> s = NeuronScores("ffn", {"ffn": torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.5, 0.0]])})
        >>> top_k(s, k=50).to_neurons()
        [Neuron(layer=0, module='ffn', unit=1), Neuron(layer=1, module='ffn', unit=0), Neuron(layer=1, module='ffn', unit=1)]
        >>> top_k(s, k=34, scope="layer").counts_per_layer()["ffn"].tolist()
        [1, 1]
    """
    kf = _check_top_k_args(k, scope, rank_modules)
    raw, space = _scores_in_id_order(scores, model)
    _check_no_nan(raw)
    masks = _rank(raw, kf, scope, rank_modules)
    info = _top_k_meta(scores, kf, scope, rank_modules, model, meta)
    out = NeuronSet(scores.definition, masks, info)
    if space is not None:
        out.check_space(space)
    out.meta["count"] = len(out)
    out.meta["size"] = out.size
    return out


def iou(a: NeuronSet, b: NeuronSet) -> float:
    """Intersection over union ``|a & b| / |a | b|`` of two sets of one space, in ``[0, 1]``.

    Two empty sets are equal, so their IoU is 1.0.

    Example:
        >>> a = NeuronSet("ffn", {"ffn": torch.tensor([[True, True, False, False]])})
        >>> b = NeuronSet("ffn", {"ffn": torch.tensor([[False, True, True, False]])})
        >>> round(iou(a, b), 4)
        0.3333
    """
    a._check_same_layout(b, "compare")
    inter = sum(int((a.masks[m] & b.masks[m]).sum()) for m in a.masks)
    union = sum(int((a.masks[m] | b.masks[m]).sum()) for m in a.masks)
    return 1.0 if union == 0 else inter / union


__all__ = ["RankModules", "Scope", "check_k", "count_for", "iou", "top_k"]
