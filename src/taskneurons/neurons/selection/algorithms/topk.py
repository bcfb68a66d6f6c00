"""``topk``: the paper's selection, each task's top ``k`` % by (layer-normalised) relevance.

Example:
    >>> import torch
    >>> one = NeuronScores("ffn", {"ffn": torch.tensor([[3.0, 2.0, 1.0, 0.0]])})
    >>> TopkSelection().select({"a": one}, k=50)["a"].masks["ffn"].tolist()
    [[True, True, False, False]]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection import task_selection
from taskneurons.neurons.selection.ranking import RankModules, Scope, check_k
from taskneurons.neurons.selection.selection_config import SelectionConfig


@dataclass
class TopkSelection(SelectionConfig, name="topk"):
    """Each task's top ``k`` % (no options beyond ``normalize``)."""

    order: ClassVar[int] = 0
    method: str = "topk"

    def select(self, inputs: Mapping[str, NeuronScores], k: float, scope: str = "model"):
        """:func:`select_topk`; without ``normalize`` the sets are the paper's top-k sets as
        :func:`~taskneurons.neurons.selection.ranking.top_k` makes them (no ``selection`` in
        their meta, like every top-k set saved before the multi-task selections)."""
        chosen = select_topk(inputs, k, scope=scope, normalize=self.normalize)  # type: ignore[arg-type]
        if self.normalize is None:
            for neurons in chosen.sets.values():
                del neurons.meta["selection"]
        return chosen


def select_topk(
    scores: Mapping[str, NeuronScores],
    k: float,
    *,
    scope: Scope = "model",
    rank_modules: RankModules = "together",
    normalize: task_selection.Normalize = None,
) -> task_selection.TaskSelection:
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
    normed = task_selection.normalized(scores, normalize, 1)
    tasks, kf = list(normed), check_k(k)
    info = {"method": "topk", "k": kf, "scope": scope, "rank_modules": rank_modules}
    info.update(normalize=normalize, tasks=tasks)
    sets = task_selection.top_k_sets(normed, kf, scope, rank_modules)
    out = {t: task_selection.with_selection(s, "top_k", dict(info)) for t, s in sets.items()}
    return task_selection.TaskSelection(out, None, "topk")
