"""Ways to make a :class:`~taskneurons.neurons.neuron_set.NeuronSet`, and compare two.

* :func:`top_k` — the top ``k`` % of neurons by relevance (the task-specific neurons of
  PAPER.md), ranked over the whole model or within each layer.
* :func:`random_like` — a random set with the same count per ``(layer, module)`` as another set
  (the control of the paper's deactivation experiments), optionally avoiding another set;
  :func:`matched_random_sets` makes one per task.
* :func:`iou` — overlap of two sets of one space (``a | b``, ``a & b``, ``a - b`` are on the
  class).

Example:
    >>> scores = NeuronScores("ffn", {"ffn": torch.rand(2, 8)})  # doctest: +SKIP
    >>> task = top_k(scores, k=25)  # 4 of 16 neurons  # doctest: +SKIP
    >>> ctrl = random_like(task, space, seed=0, exclude=task)  # doctest: +SKIP
    >>> iou(task, ctrl)  # doctest: +SKIP
    0.0
    >>> task.save("out/task_neurons.safetensors")  # + task_neurons.json  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from taskneurons.neurons.neuron_set import (
    NeuronSet,
    NeuronSetMismatchError,
    _describe,
    _package_version,
    _same,
    _shapes,
    _summary,
)
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import fingerprint_of, model_fingerprint

log = logging.getLogger(__name__)

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
    "seed",
)


def check_k(k: float) -> float:
    """``k`` as a float percentage; ``ValueError`` unless it is a number in ``(0, 100]``.

    Example:
        >>> check_k(10), check_k("2.5")
        (10.0, 2.5)
    """
    try:
        kf = float(k)
    except (TypeError, ValueError):
        raise ValueError(f"k must be a percentage in (0, 100], got {k!r}") from None
    if not (0.0 < kf <= 100.0):  # also rejects nan
        raise ValueError(f"k must be a percentage in (0, 100], got {k!r}")
    return kf


def count_for(k: float, n: int) -> int:
    """How many of ``n`` neurons the top ``k`` % keeps: ``round(k / 100 * n)``, at least 1.

    Rounds half up (``2.5 -> 3``), so the count does not depend on Python's banker's rounding.

    Example:
        >>> count_for(10, 46080), count_for(1, 30), count_for(50, 5)
        (4608, 1, 3)
    """
    kf = check_k(k)
    return max(1, min(n, math.floor(kf / 100.0 * n + 0.5)))


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


def _random_like_shapes(
    other: NeuronSet,
    space_or_shapes: NeuronSpace | Mapping[str, tuple[int, int]],
    exclude: NeuronSet | None,
    on_shortfall: str,
) -> dict:
    """``{module: (layers, units)}`` of ``space_or_shapes``, checked against ``other``'s layout
    (and ``exclude``'s); rejects an unknown ``on_shortfall``."""
    shapes = _shapes(space_or_shapes)
    if isinstance(space_or_shapes, NeuronSpace):
        other.check_space(space_or_shapes)
    elif not _same(shapes, other.shapes()):
        raise NeuronSetMismatchError(
            f"neuron set has {other.describe_shape()}, the given shapes are "
            f"{_describe(other.definition, shapes)}"
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
