"""``specific``: each task's top ``k`` % minus the *general* neurons, those in the top-k of at
least ``m`` of the tasks (the general/specific split of Xie et al. 2021).

Example:
    >>> import torch
    >>> s = {t: NeuronScores("ffn", {"ffn": torch.tensor([v])}) for t, v in
    ...      [("a", [9.0, 8.0, 1.0, 0.0]), ("b", [9.0, 0.0, 8.0, 1.0])]}
    >>> SpecificSelection(fill=True).select(s, k=50)["a"].masks["ffn"].tolist()
    [[False, True, True, False]]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from taskneurons.config_fields import flag
from taskneurons.neurons.neuron_set import NeuronSet, _package_version
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection import task_selection
from taskneurons.neurons.selection.ranking import RankModules, Scope, check_k, top_k
from taskneurons.neurons.selection.selection_config import SelectionConfig
from taskneurons.provenance import fingerprint_of


@dataclass
class SpecificSelection(SelectionConfig, name="specific"):
    """Own top-k minus the general neurons.

    Attributes:
        m: a neuron is general when in the top-k of at least ``m`` tasks (``None``: all).
        fill: refill each set to the top-k count from its non-general neurons.
    """

    order: ClassVar[int] = 1
    method: str = "specific"
    m: int | None = field(
        default=None,
        metadata=flag("--general-m", help="specific: general = in the top-k of m tasks"),
    )
    fill: bool = field(
        default=False, metadata=flag("--fill", help="specific: refill each set to the top-k count")
    )

    def select(self, inputs: Mapping[str, NeuronScores], k: float, scope: str = "model"):
        """:func:`select_specific` with these options."""
        return select_specific(inputs, k, scope=scope, **self.keywords())  # type: ignore[arg-type]


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
    return task_selection.with_selection(NeuronSet(first.definition, masks, meta), "general", info)


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
    normalize: task_selection.Normalize = None,
) -> task_selection.TaskSelection:
    """Each task's top ``k`` % minus the *general* neurons (in the top-k of >= ``m`` tasks).

    With ``T`` tasks, ``m`` (``2 <= m <= T``, default ``T``) sets how shared a neuron must be
    to count as general: ``m = T`` removes the core that every task's set holds; ``m = 2``
    removes every neuron shared by two sets, leaving pairwise disjoint task sets. The specific
    sets are smaller than ``k`` %; ``fill=True`` instead ranks each task's non-general neurons
    and keeps ``count_for(k, N)`` of them (per layer with ``scope="layer"``, fewer where a
    layer has too few), so the sets match top-k in size.

    Returns:
        A :class:`task_selection.TaskSelection`; ``.general`` is the general set (meta kind ``"general"``).

    Example:
        >>> s = {t: NeuronScores("ffn", {"ffn": torch.tensor([v])}) for t, v in
        ...      [("a", [9.0, 8.0, 1.0, 0.0]), ("b", [9.0, 0.0, 8.0, 1.0])]}
        >>> sel = select_specific(s, k=50)
        >>> sel["a"].masks["ffn"].tolist(), sel.general.masks["ffn"].tolist()
        ([[False, True, False, False]], [[True, False, False, False]])
    """
    normed = task_selection.normalized(scores, normalize, 2)
    tasks, kf = list(normed), check_k(k)
    m = len(tasks) if m is None else int(m)
    if not 2 <= m <= len(tasks):
        raise ValueError(f"m must satisfy 2 <= m <= {len(tasks)} (the number of tasks), got {m}")
    info = {"method": "specific", "k": kf, "m": m, "fill": bool(fill), "scope": scope}
    info.update(rank_modules=rank_modules, normalize=normalize, tasks=tasks)
    tops = task_selection.top_k_sets(normed, kf, scope, rank_modules)
    general = _general_set(tops, m, dict(info))
    info["n_general"] = len(general)
    out = {}
    for t in tasks:
        base = _fill(normed[t], general, kf, scope, rank_modules) if fill else tops[t] - general
        base.meta = {**tops[t].meta}
        out[t] = task_selection.with_selection(base, "specific", dict(info))
    return task_selection.TaskSelection(out, general, "specific")
