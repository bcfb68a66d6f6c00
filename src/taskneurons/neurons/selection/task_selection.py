"""What the selections of several tasks share: the result type and the steps every method takes.

Plain top-k (PAPER.md) keeps each task's most relevant neurons; on real models the tasks rank
neurons almost alike, so every task's set holds a large shared core that breaks every task.
The selections of :mod:`~taskneurons.neurons.selection.algorithms` take the scores of all
tasks, computed once per task (no rescoring), as ``{task_id: NeuronScores}`` of one layout, and
return a :class:`TaskSelection` (a mapping ``task_id -> NeuronSet``, plus the general set where
the method has one). :func:`select` runs a method by name or config.

Every method takes ``normalize``: ``None`` (raw scores), ``"layer"`` (each ``(module, layer)``
row divided by its mean) or ``"layer_z"`` (z-scored within the row), applied to each task's
scores before anything else (:func:`normalize_layers`), so that layers with large raw scores
(layer 0 is ~10x layer 26 on SmolLM2) do not take the whole set. Every set's meta holds what
``top_k`` records plus ``meta["selection"] = {"method": ..., options...}``.

Example:
    >>> sel = select("specific", {"a": sa, "b": sb, "c": sc}, k=10, m=3)  # doctest: +SKIP
    >>> sel["a"].meta["selection"]["method"], len(sel.general)  # doctest: +SKIP
    ('specific', 812)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection.ranking import RankModules, Scope, top_k
from taskneurons.neurons.selection.selection_config import NORMALIZE, SelectionConfig

Normalize = Literal["layer", "layer_z"] | None


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
def check_layout(scores: Mapping[str, NeuronScores], min_tasks: int) -> list[str]:
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


def check_normalize(normalize: Normalize) -> None:
    """``ValueError`` unless ``normalize`` is one of :data:`NORMALIZE`."""
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
    check_normalize(normalize)
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


def normalized(
    scores: Mapping[str, NeuronScores], normalize: Normalize, min_tasks: int
) -> dict[str, NeuronScores]:
    """Each task's scores normalised per layer as ``normalize`` asks (:func:`normalize_layers`),
    once the scores are checked: at least ``min_tasks`` tasks of one layout.

    Example:
        >>> s = NeuronScores("ffn", {"ffn": torch.tensor([[1.0, 3.0]])})
        >>> normalized({"a": s}, "layer", 1)["a"].scores["ffn"].tolist()
        [[0.5, 1.5]]
    """
    tasks = check_layout(scores, min_tasks)
    check_normalize(normalize)
    return {t: normalize_layers(scores[t], normalize) for t in tasks}


def with_selection(neurons: NeuronSet, kind: str, selection: dict) -> NeuronSet:
    """``neurons`` with ``kind``, ``count``, ``size`` and ``selection`` set in its meta."""
    neurons.meta.update(kind=kind, count=len(neurons), size=neurons.size, selection=selection)
    return neurons


def top_k_sets(
    scores: Mapping[str, NeuronScores], k: float, scope: Scope, rank_modules: RankModules
) -> dict[str, NeuronSet]:
    """Each task's :func:`top_k` set of ``scores`` (task id -> set)."""
    return {t: top_k(s, k, scope=scope, rank_modules=rank_modules) for t, s in scores.items()}


def select(
    method: str | SelectionConfig,
    inputs: Mapping[str, NeuronScores],
    k: float,
    scope: Scope = "model",
    **options: Any,
) -> TaskSelection:
    """Each task's neurons under a selection, named (with ``options``) or given as its config.

    ``inputs``: task id -> what the method ranks (its config's ``ranks``: relevance scores, or
    activation probabilities for ``lape``), ``[layers, units]`` per module.

    Raises:
        ValueError: an unknown method (the message lists the known ones).

    Example:
        >>> s = {t: NeuronScores("ffn", {"ffn": torch.tensor([v])}) for t, v in
        ...      [("a", [9.0, 8.0, 1.0, 0.0]), ("b", [9.0, 0.0, 8.0, 1.0])]}
        >>> select("specific", s, k=50)["a"].masks["ffn"].tolist()
        [[False, True, False, False]]
    """
    config = (
        method if isinstance(method, SelectionConfig) else SelectionConfig.make(method, **options)
    )
    return config.select(inputs, k, scope)


__all__ = [
    "Normalize",
    "TaskSelection",
    "check_layout",
    "check_normalize",
    "normalize_layers",
    "select",
    "top_k_sets",
    "with_selection",
]
