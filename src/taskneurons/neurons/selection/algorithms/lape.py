"""``lape`` (Tang et al. 2024): neurons whose activation probability is concentrated on tasks.

It ranks each task's activation probabilities (share of the task's tokens where a neuron fires,
:func:`~taskneurons.neurons.activation_probability.activation_probability`), measured with
its config's ``threshold`` and ``tokens``, not the relevance scores.

Example:
    >>> import torch
    >>> p = {"a": NeuronScores("ffn", {"ffn": torch.tensor([[0.9, 0.5, 0.0, 0.1]])}),
    ...      "b": NeuronScores("ffn", {"ffn": torch.tensor([[0.0, 0.5, 0.8, 0.1]])})}
    >>> cfg = LapeSelection(filter_quantile=None, min_prob=0.2, assign="top")
    >>> cfg.ranks, cfg.measurement(), cfg.select(p, k=50)["b"].masks["ffn"].tolist()
    ('probabilities', {'threshold': 0.0, 'tokens': 'answer'}, [[False, False, True, False]])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from taskneurons.config_fields import flag
from taskneurons.neurons.activation_probability import lape_entropy, probability_quantile
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection import task_selection
from taskneurons.neurons.selection.ranking import Scope, check_k, top_k
from taskneurons.neurons.selection.selection_config import SelectionConfig


@dataclass
class LapeSelection(SelectionConfig, name="lape"):
    """Low entropy of the tasks' activation probabilities.

    Attributes:
        normalize: ``None`` or ``layer`` (both quantiles taken within each layer).
        threshold, tokens: an activation counts when above ``threshold``, on ``answer`` or
            ``all`` tokens (how the probabilities are measured).
        filter_quantile, min_prob, assign, bar_quantile: the filter and the assignment of
            :func:`select_lape`.
    """

    ranks: ClassVar[Literal["scores", "probabilities"]] = "probabilities"
    measured_by: ClassVar[tuple[str, ...]] = ("threshold", "tokens")
    order: ClassVar[int] = 3
    method: str = "lape"
    normalize: Literal["layer"] | None = None  # type: ignore[assignment]
    threshold: float = field(
        default=0.0, metadata=flag("--threshold", help="lape: an activation above this counts")
    )
    tokens: Literal["answer", "all"] = field(
        default="answer", metadata=flag("--tokens", help="lape: the tokens whose activations count")
    )
    filter_quantile: float | None = field(
        default=0.95,
        metadata=flag(
            "--filter-quantile", help="lape: keep neurons above this activation quantile"
        ),
    )
    min_prob: float = field(
        default=0.0, metadata=flag("--min-prob", help="lape: lowest activation probability kept")
    )
    assign: Literal["bar", "top"] = field(
        default="bar", metadata=flag("--assign", help="lape: task by probability bar or top task")
    )
    bar_quantile: float = field(
        default=0.95, metadata=flag("--bar-quantile", help="lape: quantile of the task bar")
    )

    def select(self, inputs: Mapping[str, NeuronScores], k: float, scope: str = "model"):
        """:func:`select_lape` of the activation probabilities ``inputs``."""
        return select_lape(inputs, k, scope=scope, **self.keywords())  # type: ignore[arg-type]


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


def _check_options(
    normalize: str | None, assign: str, filter_quantile: float | None, bar_quantile: float
) -> None:
    """``ValueError`` naming the first option of :func:`select_lape` out of its range."""
    if normalize not in (None, "layer"):
        raise ValueError(f"select_lape: normalize must be None or 'layer', got {normalize!r}")
    if assign not in ("bar", "top"):
        raise ValueError(f"assign must be 'bar' or 'top', got {assign!r}")
    for name, q in (("filter_quantile", filter_quantile), ("bar_quantile", bar_quantile)):
        if q is not None and not 0.0 <= q <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {q!r}")


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
) -> task_selection.TaskSelection:
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
    tasks = task_selection.check_layout(probs, 2)
    kf = check_k(k)
    _check_options(normalize, assign, filter_quantile, bar_quantile)
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
        out[t] = task_selection.with_selection(chosen, "lape", dict(info))
    return task_selection.TaskSelection(out, None, "lape")
