"""What the generalization experiments share (PAPER.md §3): task groups, scores, neuron sets.

* :class:`TaskGroup` — training tasks (in-domain tests) and out-of-domain test tasks;
  :func:`default_groups` is PAPER.md Table 3.
* :func:`prepare_sets` — each task's relevance scores, computed **once per model** by
  :func:`~taskneurons.neurons.scoring.score_tasks`: taken from an earlier stage of the run,
  from a detect folder (``neurons:``), or computed and saved as
  ``scores/<task>/scores.safetensors``. Every proportion, overlap and random draw is derived
  from these scores; nothing is scored twice.
* :class:`GroupSets` — each task's set at the detect ``k`` under the chosen selection
  (``detect.selection``: ``topk`` by default), the *general* set (neurons in the top-k of at
  least ``m`` tasks: ``m`` of a ``specific`` selection, else all tasks), and the top ``p`` % of
  each task's set by its own relevance (:meth:`GroupSets.at`), with or without the general
  neurons.

A set's neurons are handled as one bool mask ``[layers, units]`` (the modules of a ``linear``
space side by side, :func:`joined`), which is what :mod:`taskneurons.analysis.set_overlap`
works on.

Example:
    >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig(k=10))  # doctest: +SKIP
    >>> _, scored, sets = prepare_sets(ctx, groups, "runs/x", "groups")  # doctest: +SKIP
    >>> len(sets.union(["amazonfood", "qqp"], 50))  # top 50 % of each set, joined  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from taskneurons.analysis.set_overlap import proportion_of_set
from taskneurons.config import Config
from taskneurons.data.tasks import Task
from taskneurons.experiments.generalization.groups import TaskGroup, check_groups
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.scoring import ScoredTasks, ScoreReuse, score_tasks
from taskneurons.neurons.selection.algorithms.specific import select_specific
from taskneurons.provenance import fingerprint_of, model_fingerprint, provenance


def group_tasks(groups: Sequence[TaskGroup], tasks: Sequence[Task], key: str) -> list[Task]:
    """The run's tasks named by ``groups``, in run order.

    Raises:
        ValueError: a group names a task the run does not have (the message names ``key``,
            the group and the run's task ids).
    """
    check_groups(groups, tasks, key)
    wanted = {t for g in groups for t in [*g.train, *g.test]}
    return [t for t in tasks if t.id in wanted]


# -- joined masks ---------------------------------------------------------------------------------
def joined(ns: NeuronSet) -> torch.Tensor:
    """The set's module masks side by side: bool ``[layers, sum of units]``."""
    return torch.cat([ns.masks[m] for m in ns.modules], dim=1)


def joined_scores(s: NeuronScores, modules: Sequence[str]) -> torch.Tensor:
    """The scores of ``modules`` side by side: float ``[layers, sum of units]``."""
    return torch.cat([s.scores[m].float() for m in modules], dim=1)


def split_like(mask: torch.Tensor, like: NeuronSet, meta: Mapping | None = None) -> NeuronSet:
    """A joined mask ``[layers, sum of units]`` back as a set of ``like``'s layout."""
    widths = [like.masks[m].shape[1] for m in like.modules]
    parts = torch.split(mask, widths, dim=1)
    masks = {m: p.clone() for m, p in zip(like.modules, parts, strict=True)}
    return NeuronSet(like.definition, masks, dict(meta or {}))


def _set_meta(like: NeuronSet, **extra) -> dict:
    """Meta of a derived set: the model fingerprint and definition of ``like``, plus ``extra``."""
    meta = {"definition": like.definition, **extra}
    fp = fingerprint_of(like.meta)
    if fp is not None:
        meta["model_fingerprint"] = fp
    return meta


# -- the sets of a stage ----------------------------------------------------------------------------
@dataclass
class GroupSets:
    """Each task's neurons at the detect ``k``, the general set, and their top-``p`` % parts.

    Attributes:
        scores: task id -> relevance scores (ranks the neurons inside each set).
        sets: task id -> the task's set at ``k`` under the selection.
        general: neurons in the top-k of at least ``m`` of the tasks (empty for one task).
        selection: the selection's name and options (for the records).
        reading: how a proportion ``p`` is read (:data:`~.groups.ProportionOf`): ``set``, the
            top ``p`` % of the task's set by its own relevance; ``model``, the task's set of the
            selection at ``k = p`` (``chooser``), i.e. the top ``p`` % of all neurons.
        chooser: ``k`` -> each task's set of the selection at that ``k`` (``model`` reading).
    """

    scores: dict[str, NeuronScores]
    sets: dict[str, NeuronSet]
    general: NeuronSet
    selection: dict
    reading: str = "set"
    chooser: Callable[[float], Mapping[str, NeuronSet]] | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def select(
        cls,
        scores: Mapping[str, NeuronScores],
        detect: DetectConfig,
        probabilities: Mapping[str, NeuronScores] | None = None,
        reading: str = "set",
    ) -> GroupSets:
        """The sets of ``detect.selection`` at ``detect.k`` from scores computed once.

        A selection that ranks activation probabilities (``lape``) ranks ``probabilities``
        (one per task). Without a general set of its own, the general set is that of
        ``specific`` with every task (``m`` = the number of tasks).
        """
        sel = detect.selection
        chosen = sel.select(sel.inputs(dict(scores), probabilities), detect.k, detect.scope)
        general = chosen.general
        first = next(iter(chosen.sets.values()))
        if general is None and len(scores) >= 2:
            general = select_specific(
                dict(scores), detect.k, scope=detect.scope, normalize=sel.normalize
            ).general
        if general is None:
            general = split_like(torch.zeros_like(joined(first)), first, _set_meta(first))
        info = {**sel.record(detect.scope), "k": detect.k}
        info["m"] = general.meta.get("selection", {}).get("m", len(scores))
        if reading not in ("model", "set"):
            raise ValueError(f"reading must be 'model' or 'set', got {reading!r}")
        if reading == "model":
            info["proportion_of"] = "model"
        inputs = sel.inputs(dict(scores), probabilities)

        def chooser(k: float) -> Mapping[str, NeuronSet]:
            return sel.select(inputs, k, detect.scope).sets

        return cls(dict(scores), dict(chosen.sets), general, info, reading, chooser)

    def at(self, percent: float, task: str, drop_general: bool = False) -> NeuronSet:
        """Task ``task``'s top ``percent`` % (minus the general neurons), as :attr:`reading` says.

        ``percent`` in ``(0, 100]``. ``set`` reading: the top ``percent`` % of the task's set by
        its own relevance, ranked as :func:`~taskneurons.analysis.set_overlap.proportion_of_set`
        (whole model, ties to the lower neuron id); ``model`` reading: the task's set of the
        selection at ``k = percent``. The general neurons are removed after the ranking.
        """
        key = (float(percent), task, drop_general)
        if key not in self._cache:
            base = self.sets[task]
            mask = self._top(percent, task)
            if drop_general:
                mask = mask & ~joined(self.general)
            meta = _set_meta(base, kind="proportion", task=task, proportion=float(percent))
            meta.update(selection=self.selection, without_general=drop_general)
            self._cache[key] = split_like(mask, base, meta)
        return self._cache[key]

    def _top(self, percent: float, task: str) -> torch.Tensor:
        """The task's top ``percent`` % as a joined mask ``[layers, sum of units]``."""
        if self.reading == "model":
            key = ("model", float(percent))
            if key not in self._cache:
                self._cache[key] = self.chooser(float(percent))
            return joined(self._cache[key][task])
        base = self.sets[task]
        scores = joined_scores(self.scores[task], base.modules)
        return proportion_of_set(scores, joined(base), percent / 100.0)

    def union(
        self, tasks: Sequence[str], percent: float | None, drop_general: bool = False
    ) -> NeuronSet:
        """The union of the tasks' top ``percent`` % sets (see :meth:`at`; ``None``: their
        whole sets at the detect ``k``)."""
        if percent is None:
            masks = [joined(self.sets[t]) for t in tasks]
            if drop_general:
                masks = [m & ~joined(self.general) for m in masks]
        else:
            masks = [joined(self.at(percent, t, drop_general)) for t in tasks]
        mask = torch.stack(masks).any(dim=0)
        like = self.sets[tasks[0]]
        proportion = None if percent is None else float(percent)
        meta = _set_meta(like, kind="union", tasks=list(tasks), proportion=proportion)
        meta.update(selection=self.selection, without_general=drop_general)
        return split_like(mask, like, meta)


def prepare_sets(
    ctx: RunContext,
    groups: Sequence[TaskGroup],
    out_dir: str | os.PathLike,
    key: str,
    reading: str = "set",
) -> tuple[list[Task], ScoredTasks, GroupSets]:
    """The groups' tasks, their scores (once per task) and their sets: a stage's first step.

    Scores (and the activation probabilities a ``lape`` selection ranks) come from
    :func:`~taskneurons.neurons.scoring.score_tasks` with ``ctx.config.detect``'s attribution:
    from ``ctx.scored`` (an earlier stage), from :meth:`RunContext.scores_source`, from files
    saved in ``out_dir/scores/`` measured alike, else computed there. They join ``ctx.scored``
    for the later stages of the run. The sets are ``ctx.config.detect``'s; ``reading``: how a
    proportion is read (:meth:`GroupSets.at`).

    Raises:
        ValueError: a group names a task the run does not have (the message names ``key``).

    Example:
        >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig(k=10))  # doctest: +SKIP
        >>> chosen, scored, sets = prepare_sets(ctx, groups, "runs/x", "groups")  # doctest: +SKIP
    """
    detect = ctx.config.detect
    chosen = group_tasks(groups, ctx.tasks, key)
    folder = Path(out_dir) / "scores"
    reuse = ScoreReuse(cached=ctx.scored, source=ctx.scores_source())
    scored = score_tasks(
        ctx.model, ctx.tokenizer, chosen, detect.attribution, detect.selection, folder,
        ctx.progress, reuse,
    )  # fmt: skip
    ctx.scored = scored.merged(ctx.scored)
    sets = GroupSets.select(scored.scores, detect, scored.probabilities, reading)
    return chosen, scored, sets


#: The name of a stage's record in its folder: ``<stage>_config.json``.
RECORD_SUFFIX = "_config.json"


def stage_record(
    stage: str,
    config: Config,
    detect: DetectConfig,
    sets: GroupSets,
    scored: ScoredTasks,
    out_dir: Path,
    model: nn.Module,
    **extra,
) -> dict:
    """How a generalization stage's results were made (its ``<stage>_config.json``).

    Holds the stage and detect settings, the groups, the selection and general-set size, the
    scores files (relative to ``out_dir``, with their origin), the model fingerprint, the
    command, time and library versions, and ``extra``.
    """
    cfg = config.to_dict()
    return provenance(
        stage=stage,
        config=cfg,
        groups=cfg.get("groups"),
        detect=detect.to_dict(),
        selection=sets.selection,
        n_general=len(sets.general),
        scores=scored.record(out_dir),
        model=model_fingerprint(model),
        **extra,
    )
