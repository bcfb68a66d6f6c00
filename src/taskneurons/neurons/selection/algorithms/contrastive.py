"""``contrastive``: top ``k`` % of how much more a neuron matters to a task than to the others
(a task's normalised score minus, or divided by, the mean of the other tasks').

Example:
    >>> import torch
    >>> s = {t: NeuronScores("ffn", {"ffn": torch.tensor([v])}) for t, v in
    ...      [("a", [5.0, 5.0, 2.0, 0.0]), ("b", [5.0, 0.0, 2.0, 5.0])]}
    >>> ContrastiveSelection().select(s, k=25)["b"].masks["ffn"].tolist()
    [[False, False, False, True]]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from taskneurons.config_fields import flag
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection import task_selection
from taskneurons.neurons.selection.ranking import RankModules, Scope, check_k, top_k
from taskneurons.neurons.selection.selection_config import SelectionConfig


@dataclass
class ContrastiveSelection(SelectionConfig, name="contrastive"):
    """A task's normalised scores against the other tasks' mean.

    Attributes:
        mode: ``difference`` or ``ratio`` (see :func:`contrastive_scores`).
        task_norm: each task's scores divided by their mean (``mean``) or z-scored (``z``).
        eps: ``ratio``'s denominator offset, in units of a task's mean score.
    """

    order: ClassVar[int] = 2
    method: str = "contrastive"
    mode: Literal["difference", "ratio"] = field(
        default="difference",
        metadata=flag("--contrast", help="contrastive: own score minus or over the others'"),
    )
    task_norm: Literal["mean", "z"] = field(
        default="mean",
        metadata=flag("--task-norm", help="contrastive: how each task's scores are scaled"),
    )
    eps: float = field(
        default=0.1, metadata=flag("--eps", help="contrastive ratio: added to the denominator")
    )

    def select(self, inputs: Mapping[str, NeuronScores], k: float, scope: str = "model"):
        """:func:`select_contrastive` with these options."""
        return select_contrastive(inputs, k, scope=scope, **self.keywords())  # type: ignore[arg-type]


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
    normalize: task_selection.Normalize = None,
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
    tasks = list(task_selection.normalized(scores, normalize, 2))  # the checks; normalised below
    if mode not in ("difference", "ratio"):
        raise ValueError(f"mode must be 'difference' or 'ratio', got {mode!r}")
    if task_norm not in ("mean", "z"):
        raise ValueError(f"task_norm must be 'mean' or 'z', got {task_norm!r}")
    if mode == "ratio" and (task_norm != "mean" or not eps > 0):
        raise ValueError("mode='ratio' needs task_norm='mean' and eps > 0")
    normed = {
        t: _task_normalised(task_selection.normalize_layers(scores[t], normalize), task_norm)
        for t in tasks
    }
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
    normalize: task_selection.Normalize = None,
) -> task_selection.TaskSelection:
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
        out[t] = task_selection.with_selection(s, "contrastive", dict(info))
    return task_selection.TaskSelection(out, None, "contrastive")
