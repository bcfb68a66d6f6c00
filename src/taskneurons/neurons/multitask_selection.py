"""Selections that look at several tasks' scores at once: task-specific, not just important.

Plain top-k (PAPER.md) keeps each task's most relevant neurons; on real models the tasks rank
neurons almost alike, so every task's set holds a large shared core that breaks every task.
The selections here take the scores of all tasks, computed once per task (no rescoring), as
``{task_id: NeuronScores}`` of one layout, and return a :class:`TaskSelection` (a mapping
``task_id -> NeuronSet``, plus the general set where the method has one):

* :func:`select_topk` — each task's top ``k`` % (:func:`~taskneurons.neurons.selection.top_k`).
* :func:`select_specific` — own top-k minus the *general* neurons, those in the top-k of at
  least ``m`` of the ``T`` tasks (the general/specific split of Xie et al. 2021).
* :func:`select_contrastive` — top-k of a task's normalised score minus (or divided by) the
  mean of the other tasks' normalised scores.
* :func:`select_lape` — LAPE (Tang et al. 2024): low entropy of the per-task activation
  probabilities (:func:`~taskneurons.neurons.activation_probability.activation_probability`).

Every method takes ``normalize``: ``None`` (raw scores), ``"layer"`` (each ``(module, layer)``
row divided by its mean) or ``"layer_z"`` (z-scored within the row), applied to each task's
scores before anything else, so that layers with large raw scores (layer 0 is ~10x layer 26 on
SmolLM2) do not take the whole set. Every set's meta holds what ``top_k`` records plus
``meta["selection"] = {"method": ..., options...}``.

Example:
    >>> sel = select_specific({"a": sa, "b": sb, "c": sc}, k=10, m=3)  # doctest: +SKIP
    >>> sel["a"].meta["selection"]["method"], len(sel.general)  # doctest: +SKIP
    ('specific', 812)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from taskneurons.neurons.activation_probability import lape_entropy, probability_quantile
from taskneurons.neurons.neuron_set import NeuronSet, _package_version
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection import RankModules, Scope, check_k, top_k
from taskneurons.provenance import fingerprint_of

Normalize = Literal["layer", "layer_z"] | None
METHODS: tuple[str, ...] = ("topk", "specific", "contrastive", "lape")
NORMALIZE: tuple[str | None, ...] = (None, "layer", "layer_z")


@dataclass
class TaskSelection(Mapping):
    """The result of a multi-task selection: ``task_id -> NeuronSet``, plus the general set.

    Attributes:
        sets: task id -> that task's neurons (masks ``[layers, units]`` per module).
        general: neurons shared by many tasks (``select_specific``; ``None`` otherwise).
        method: the selection method.
    """

    sets: dict[str, NeuronSet]
    general: NeuronSet | None = None
    method: str = ""

    def __getitem__(self, task_id: str) -> NeuronSet:
        return self.sets[task_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.sets)

    def __len__(self) -> int:
        return len(self.sets)


# -- shared steps --------------------------------------------------------------------------------
def _check_layout(scores: Mapping[str, NeuronScores], min_tasks: int) -> list[str]:
    """The task ids; ``ValueError`` unless there are ``min_tasks`` scores of one layout."""
    if len(scores) < min_tasks:
        raise ValueError(f"need the scores of at least {min_tasks} tasks, got {len(scores)}")
    tasks = list(scores)
    first = scores[tasks[0]]
    layout = (first.definition, [(m, first.shape(m)) for m in first.modules])
    for t in tasks[1:]:
        s = scores[t]
        if (s.definition, [(m, s.shape(m)) for m in s.modules]) != layout:
            raise ValueError(
                f"scores of task {t!r} have another layout than those of {tasks[0]!r}: "
                f"{s.definition} {[(m, s.shape(m)) for m in s.modules]} vs {layout}"
            )
    return tasks


def _check_normalize(normalize: Normalize) -> None:
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")


def normalize_layers(scores: NeuronScores, normalize: Normalize) -> NeuronScores:
    """Scores made comparable across layers: each ``(module, layer)`` row on its own scale.

    ``"layer"`` divides a row by its mean (a row of zeros stays zero); ``"layer_z"`` subtracts
    the row's mean and divides by its standard deviation (a constant row becomes zero);
    ``None`` returns ``scores`` unchanged. The meta is copied with ``normalize`` added.

    Example:
        >>> s = NeuronScores("ffn", {"ffn": torch.tensor([[2.0, 6.0], [0.1, 0.3]])})
        >>> normalize_layers(s, "layer").scores["ffn"].tolist()
        [[0.5, 1.5], [0.5, 1.5]]
    """
    _check_normalize(normalize)
    if normalize is None:
        return scores
    out = {}
    for m, t in scores.scores.items():
        x = t.detach().to("cpu", torch.float64)  # [layers, units]
        mean = x.mean(dim=1, keepdim=True)  # [layers, 1]
        if normalize == "layer":
            safe = torch.where(mean == 0, torch.ones_like(mean), mean)
            y = x / safe
        else:
            std = x.std(dim=1, unbiased=False, keepdim=True)  # [layers, 1]
            y = torch.where(std > 0, (x - mean) / std.clamp_min(1e-300), torch.zeros_like(x))
        out[m] = y.to(torch.float32)
    return NeuronScores(scores.definition, out, {**scores.meta, "normalize": normalize})


def _with_selection(neurons: NeuronSet, kind: str, selection: dict) -> NeuronSet:
    """``neurons`` with ``kind``, ``count``, ``size`` and ``selection`` set in its meta."""
    neurons.meta.update(kind=kind, count=len(neurons), size=neurons.size, selection=selection)
    return neurons


def _top_k_sets(
    scores: Mapping[str, NeuronScores], k: float, scope: Scope, rank_modules: RankModules
) -> dict[str, NeuronSet]:
    return {t: top_k(s, k, scope=scope, rank_modules=rank_modules) for t, s in scores.items()}


# -- topk ----------------------------------------------------------------------------------------
def select_topk(
    scores: Mapping[str, NeuronScores],
    k: float,
    *,
    scope: Scope = "model",
    rank_modules: RankModules = "together",
    normalize: Normalize = None,
) -> TaskSelection:
    """The paper's selection: each task's top ``k`` % by (optionally layer-normalised) score.

    Args:
        scores: task id -> relevance ``[layers, units]`` per module, one layout for all.
        k: percentage in ``(0, 100]``; ``scope``, ``rank_modules``: as in ``top_k``.
        normalize: ``None``, ``"layer"`` or ``"layer_z"`` (see :func:`normalize_layers`).

    Example:
        >>> sel = select_topk({"a": sa, "b": sb}, k=10)  # doctest: +SKIP
        >>> sel["a"].meta["selection"]  # doctest: +SKIP
        {'method': 'topk', 'k': 10.0, 'scope': 'model', ...}
    """
    tasks = _check_layout(scores, 1)
    _check_normalize(normalize)
    kf = check_k(k)
    normed = {t: normalize_layers(scores[t], normalize) for t in tasks}
    info = {"method": "topk", "k": kf, "scope": scope, "rank_modules": rank_modules}
    info.update(normalize=normalize, tasks=tasks)
    sets = _top_k_sets(normed, kf, scope, rank_modules)
    out = {t: _with_selection(s, "top_k", dict(info)) for t, s in sets.items()}
    return TaskSelection(out, None, "topk")


# -- specific -------------------------------------------------------------------------------------
def _general_set(sets: Mapping[str, NeuronSet], m: int, info: dict) -> NeuronSet:
    """Neurons in at least ``m`` of ``sets`` (meta kind ``"general"``)."""
    first = next(iter(sets.values()))
    masks = {}
    for mod in first.modules:
        hits = torch.stack([s.masks[mod] for s in sets.values()]).sum(dim=0)  # [layers, units]
        masks[mod] = hits >= m
    meta: dict = {"kind": "general", "definition": first.definition}
    fps = {str(fingerprint_of(s.meta)) for s in sets.values()}
    if len(fps) == 1 and fingerprint_of(first.meta) is not None:
        meta["model_fingerprint"] = fingerprint_of(first.meta)
    meta["version"] = _package_version()
    return _with_selection(NeuronSet(first.definition, masks, meta), "general", info)


def _fill(
    scores: NeuronScores, general: NeuronSet, count_k: float, scope: Scope, rm: RankModules
) -> NeuronSet:
    """The top ``count_k`` % of ``scores`` among the neurons outside ``general``."""
    masked = {
        m: torch.where(general.masks[m], torch.full_like(t, -torch.inf), t.float())
        for m, t in scores.scores.items()
    }
    ranked = top_k(NeuronScores(scores.definition, masked, scores.meta), count_k, scope, rm)
    return ranked - general  # a layer with too few non-general neurons keeps fewer


def select_specific(
    scores: Mapping[str, NeuronScores],
    k: float,
    *,
    m: int | None = None,
    fill: bool = False,
    scope: Scope = "model",
    rank_modules: RankModules = "together",
    normalize: Normalize = None,
) -> TaskSelection:
    """Each task's top ``k`` % minus the *general* neurons (in the top-k of >= ``m`` tasks).

    With ``T`` tasks, ``m`` (``2 <= m <= T``, default ``T``) sets how shared a neuron must be
    to count as general: ``m = T`` removes the core that every task's set holds; ``m = 2``
    removes every neuron shared by two sets, leaving pairwise disjoint task sets. The specific
    sets are smaller than ``k`` %; ``fill=True`` instead ranks each task's non-general neurons
    and keeps ``count_for(k, N)`` of them (per layer with ``scope="layer"``, fewer where a
    layer has too few), so the sets match top-k in size.

    Returns:
        A :class:`TaskSelection`; ``.general`` is the general set (meta kind ``"general"``).

    Example:
        >>> s = {t: NeuronScores("ffn", {"ffn": torch.tensor([v])}) for t, v in
        ...      [("a", [9.0, 8.0, 1.0, 0.0]), ("b", [9.0, 0.0, 8.0, 1.0])]}
        >>> sel = select_specific(s, k=50)
        >>> sel["a"].masks["ffn"].tolist(), sel.general.masks["ffn"].tolist()
        ([[False, True, False, False]], [[True, False, False, False]])
    """
    tasks = _check_layout(scores, 2)
    _check_normalize(normalize)
    kf = check_k(k)
    m = len(tasks) if m is None else int(m)
    if not 2 <= m <= len(tasks):
        raise ValueError(f"m must satisfy 2 <= m <= {len(tasks)} (the number of tasks), got {m}")
    normed = {t: normalize_layers(scores[t], normalize) for t in tasks}
    info = {"method": "specific", "k": kf, "m": m, "fill": bool(fill), "scope": scope}
    info.update(rank_modules=rank_modules, normalize=normalize, tasks=tasks)
    tops = _top_k_sets(normed, kf, scope, rank_modules)
    general = _general_set(tops, m, dict(info))
    info["n_general"] = len(general)
    out = {}
    for t in tasks:
        base = _fill(normed[t], general, kf, scope, rank_modules) if fill else tops[t] - general
        base.meta = {**tops[t].meta}
        out[t] = _with_selection(base, "specific", dict(info))
    return TaskSelection(out, general, "specific")


# -- contrastive ----------------------------------------------------------------------------------
def _task_normalised(scores: NeuronScores, task_norm: str) -> dict[str, torch.Tensor]:
    """Module -> float64 ``[layers, units]`` scores divided by their mean (``"mean"``) or
    z-scored (``"z"``) over all neurons of the model."""
    flat = torch.cat([t.reshape(-1) for t in scores.scores.values()]).double()  # [N]
    mean = float(flat.mean())
    if task_norm == "mean":
        return {m: t.double() / (mean if mean != 0 else 1.0) for m, t in scores.scores.items()}
    std = float(flat.std(unbiased=False)) or 1.0
    return {m: (t.double() - mean) / std for m, t in scores.scores.items()}


def contrastive_scores(
    scores: Mapping[str, NeuronScores],
    *,
    mode: Literal["difference", "ratio"] = "difference",
    task_norm: Literal["mean", "z"] = "mean",
    eps: float = 0.1,
    normalize: Normalize = None,
) -> dict[str, NeuronScores]:
    """How much more each neuron matters to a task than to the others, per task.

    Each task's scores are first layer-normalised (``normalize``), then put on one scale
    across tasks (``task_norm="mean"``: divided by the task's mean score over the model, so
    each task's mean is 1; ``"z"``: z-scored over the model). With ``s_t`` the normalised
    scores and ``o_t`` the mean of the other tasks' ``s_u``, the contrast is
    ``s_t - o_t`` (``mode="difference"``) or ``s_t / (o_t + eps)`` (``mode="ratio"``, only with
    ``task_norm="mean"``; ``eps`` is in units of a task's mean score and keeps neurons that
    matter to no task from winning on tiny denominators).

    Returns:
        task id -> float32 contrast ``[layers, units]`` per module (meta of the task's scores).

    Example:
        >>> s = {t: NeuronScores("ffn", {"ffn": torch.tensor([v])}) for t, v in
        ...      [("a", [3.0, 3.0, 0.0]), ("b", [1.0, 0.0, 2.0])]}
        >>> contrastive_scores(s)["a"].scores["ffn"].tolist()  # [1.5, 1.5, 0] - [1, 0, 2]
        [[0.5, 1.5, -2.0]]
    """
    tasks = _check_layout(scores, 2)
    _check_normalize(normalize)
    if mode not in ("difference", "ratio"):
        raise ValueError(f"mode must be 'difference' or 'ratio', got {mode!r}")
    if task_norm not in ("mean", "z"):
        raise ValueError(f"task_norm must be 'mean' or 'z', got {task_norm!r}")
    if mode == "ratio" and (task_norm != "mean" or not eps > 0):
        raise ValueError("mode='ratio' needs task_norm='mean' and eps > 0")
    normed = {t: _task_normalised(normalize_layers(scores[t], normalize), task_norm) for t in tasks}
    out = {}
    for t in tasks:
        contrast = {}
        for mod, own in normed[t].items():  # own: [layers, units]
            others = torch.stack([normed[u][mod] for u in tasks if u != t]).mean(dim=0)
            c = own - others if mode == "difference" else own / (others + eps)
            contrast[mod] = c.to(torch.float32)  # [layers, units]
        out[t] = NeuronScores(scores[t].definition, contrast, scores[t].meta)
    return out


def select_contrastive(
    scores: Mapping[str, NeuronScores],
    k: float,
    *,
    mode: Literal["difference", "ratio"] = "difference",
    task_norm: Literal["mean", "z"] = "mean",
    eps: float = 0.1,
    scope: Scope = "model",
    rank_modules: RankModules = "together",
    normalize: Normalize = None,
) -> TaskSelection:
    """Top ``k`` % of each task's :func:`contrastive_scores` (ranked by ``top_k``).

    Example:
        >>> s = {t: NeuronScores("ffn", {"ffn": torch.tensor([v])}) for t, v in
        ...      [("a", [5.0, 5.0, 2.0, 0.0]), ("b", [5.0, 0.0, 2.0, 5.0])]}
        >>> select_contrastive(s, k=25)["a"].masks["ffn"].tolist()
        [[False, True, False, False]]
    """
    kf = check_k(k)
    contrast = contrastive_scores(
        scores, mode=mode, task_norm=task_norm, eps=eps, normalize=normalize
    )
    tasks = list(contrast)
    info = {"method": "contrastive", "k": kf, "mode": mode, "task_norm": task_norm}
    info.update(eps=float(eps), scope=scope, rank_modules=rank_modules, normalize=normalize)
    info["tasks"] = tasks
    out = {}
    for t in tasks:
        s = top_k(contrast[t], kf, scope=scope, rank_modules=rank_modules)
        out[t] = _with_selection(s, "contrastive", dict(info))
    return TaskSelection(out, None, "contrastive")


# -- LAPE -----------------------------------------------------------------------------------------
def _lape_masks(
    p: torch.Tensor, k: float, scope: Scope, opts: dict, per_layer: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept [layers, units], assigned [T, layers, units])`` for one module block ``p``."""
    floor = torch.clamp(
        probability_quantile(p, opts["filter_quantile"], per_layer), min=opts["min_prob"]
    )
    eligible = ((p >= floor) & (p > 0)).any(dim=0)  # [layers, units]
    score = torch.where(eligible, -lape_entropy(p), torch.full_like(p[0], -torch.inf).double())
    ranked = top_k(NeuronScores("ffn", {"x": score.float()}), k, scope=scope).masks["x"]
    kept = ranked & eligible  # [layers, units]
    if opts["assign"] == "top":
        assigned = p >= p.max(dim=0, keepdim=True).values  # [T, layers, units]
    else:
        bar = probability_quantile(p, opts["bar_quantile"], per_layer)
        assigned = p >= torch.clamp(bar, min=opts["min_prob"])
    return kept, assigned & (p > 0) & kept


def select_lape(
    probs: Mapping[str, NeuronScores],
    k: float,
    *,
    filter_quantile: float | None = 0.95,
    min_prob: float = 0.0,
    assign: Literal["bar", "top"] = "bar",
    bar_quantile: float = 0.95,
    scope: Scope = "model",
    normalize: Literal["layer"] | None = None,
) -> TaskSelection:
    """LAPE (Tang et al. 2024): neurons whose activation probability is concentrated on tasks.

    ``probs[t]`` holds ``P[t, n]`` in ``[0, 1]`` (share of tokens where neuron ``n`` fires on
    task ``t``, from ``activation_probability``). Steps, following Tang et al.'s code:

    1. eligible: ``max_t P[t, n] >= max(filter_quantile-quantile of all P values, min_prob)``
       and ``> 0`` (so never-active neurons are never chosen; ``filter_quantile=None``: no
       quantile);
    2. kept: the ``k`` % of all neurons (``scope="layer"``: of each layer) with the lowest
       entropy :func:`lape_entropy` of ``P[:, n]`` among the eligible ones (fewer if too few
       are eligible; ties: lower neuron id);
    3. assigned to task ``t`` when ``P[t, n] >= max(bar_quantile-quantile of all P, min_prob)``
       (``assign="bar"``) or ``P[t, n]`` is the neuron's largest (``assign="top"``, ties to
       all tied tasks). A kept neuron may go to several tasks, or to none.

    ``normalize="layer"`` takes both quantiles within each ``(module, layer)`` instead of over
    the model. Modules (``linear`` definition) are handled each on their own.

    Example:
        >>> p = {"a": NeuronScores("ffn", {"ffn": torch.tensor([[0.9, 0.5, 0.0, 0.1]])}),
        ...      "b": NeuronScores("ffn", {"ffn": torch.tensor([[0.0, 0.5, 0.8, 0.1]])})}
        >>> sel = select_lape(p, k=50, filter_quantile=None, min_prob=0.2, assign="top")
        >>> sel["a"].masks["ffn"].tolist(), sel["b"].masks["ffn"].tolist()
        ([[True, False, False, False]], [[False, False, True, False]])
    """
    tasks = _check_layout(probs, 2)
    kf = check_k(k)
    if normalize not in (None, "layer"):
        raise ValueError(f"select_lape: normalize must be None or 'layer', got {normalize!r}")
    if assign not in ("bar", "top"):
        raise ValueError(f"assign must be 'bar' or 'top', got {assign!r}")
    for name, q in (("filter_quantile", filter_quantile), ("bar_quantile", bar_quantile)):
        if q is not None and not 0.0 <= q <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {q!r}")
    opts = {"filter_quantile": filter_quantile, "min_prob": float(min_prob), "assign": assign}
    opts["bar_quantile"] = bar_quantile
    first = probs[tasks[0]]
    masks: dict[str, dict[str, torch.Tensor]] = {t: {} for t in tasks}
    n_kept = 0
    for mod in first.modules:
        p = torch.stack([probs[t].scores[mod].double() for t in tasks])  # [T, layers, units]
        kept, assigned = _lape_masks(p, kf, scope, opts, normalize == "layer")
        n_kept += int(kept.sum())
        for i, t in enumerate(tasks):
            masks[t][mod] = assigned[i].clone()  # [layers, units]
    info = {"method": "lape", "k": kf, **opts, "scope": scope, "normalize": normalize}
    info.update(tasks=tasks, n_kept=n_kept)
    out = {}
    for t in tasks:
        base = top_k(probs[t], kf, scope=scope)  # for the meta top_k records
        chosen = NeuronSet(first.definition, masks[t], base.meta)
        out[t] = _with_selection(chosen, "lape", dict(info))
    return TaskSelection(out, None, "lape")


def select(method: str, scores: Mapping[str, NeuronScores], k: float, **options) -> TaskSelection:
    """Dispatch to ``select_<method>`` (``topk``, ``specific``, ``contrastive``, ``lape``).

    Example:
        >>> sel = select("specific", scores_by_task, k=10, m=2)  # doctest: +SKIP
    """
    fns = {
        "topk": select_topk,
        "specific": select_specific,
        "contrastive": select_contrastive,
        "lape": select_lape,
    }
    if method not in fns:
        raise ValueError(f"unknown selection method {method!r}; use one of {METHODS}")
    return fns[method](scores, k, **options)
