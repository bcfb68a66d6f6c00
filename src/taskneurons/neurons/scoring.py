"""Relevance scores of tasks, computed once: the one place every caller gets them from.

Detection, the selection sweep, the budget grid, the generalization stages, NCFT
(:func:`score_tasks`) and ``taskneurons analyze overlap`` (:func:`load_scored`) take each
task's relevance scores ``[layers, units]`` per module, and the activation probabilities of a
selection that ranks them (``lape``), from here, under one set of reuse rules:

* scores: from an earlier stage of the run (``ScoreReuse.cached``), from a detect or run folder
  (``ScoreReuse.source``, see :func:`find_scores`; they must be of the same weights and neuron
  definition), else computed and saved as ``<folder>/<task>/scores.safetensors``;
* activation probabilities: with a :class:`ScoreReuse`, the saved ones measured alike (same
  weights, definition and measurement settings, e.g. ``threshold`` and ``tokens``) from
  ``<folder>/<task>/`` or beside the task's scores (:func:`saved_probabilities`), when every
  task has some; else measured and saved as ``<folder>/<task>/activation_probability.safetensors``.

Without a :class:`ScoreReuse` (a detection, NCFT) everything is computed.

Example:
    >>> scored = score_tasks(model, tok, tasks, AttributionConfig(), SelectionConfig.make(),
    ...                      "runs/x/scores", reuse=ScoreReuse(source="runs/detect"))  # doctest: +SKIP
    >>> scored.origin  # doctest: +SKIP
    {'sst2': 'loaded', 'qqp': 'computed'}
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons.data.tasks import Task
from taskneurons.neurons.activation_probability import activation_probability
from taskneurons.neurons.attribution import relevance_scores
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection.selection_config import SelectionConfig
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import check_same_model, fingerprint_of, model_fingerprint

#: The file of a task's relevance scores, in ``<folder>/<task>/``.
SCORES_FILE = "scores.safetensors"
#: A task's activation probabilities (``lape``), beside its scores.
PROBS_FILE = "activation_probability.safetensors"

Selections = SelectionConfig | Sequence[SelectionConfig] | None


class MissingProbabilitiesError(ValueError):
    """A selection ranks activation probabilities and some task has none saved (measured alike)."""


@dataclass
class ScoredTasks:
    """Relevance scores of tasks on one model, and where each came from.

    Attributes:
        scores: task id -> :class:`NeuronScores` (``[layers, units]`` per module, loss units).
        paths: task id -> the scores file.
        origin: task id -> ``computed``, ``loaded`` (a detect folder) or ``cached`` (an earlier
            stage of the run).
        seconds: time spent computing scores in this call (loading not counted).
        probabilities: task id -> activation probabilities ``[layers, units]`` per module, when
            a selection ranks them (else empty).
    """

    scores: dict[str, NeuronScores] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    probabilities: dict[str, NeuronScores] = field(default_factory=dict)

    def merged(self, earlier: ScoredTasks | None) -> ScoredTasks:
        """``earlier``'s tasks and these together (these win), for the next stage of a run."""
        if earlier is None:
            return self
        out = ScoredTasks(dict(earlier.scores), dict(earlier.paths), dict(earlier.origin))
        out.scores.update(self.scores)
        out.paths.update(self.paths)
        out.origin.update(self.origin)
        return out

    def record(self, relative_to: Path) -> dict:
        """JSON-ready ``{task: {"path": relative path, "origin": ...}}``."""
        return {
            t: {"path": os.path.relpath(self.paths[t], relative_to), "origin": self.origin[t]}
            for t in self.scores
        }

    def inputs(self, selection: SelectionConfig) -> Mapping[str, NeuronScores]:
        """What ``selection`` ranks: the scores, or the activation probabilities."""
        return selection.inputs(self.scores, self.probabilities)


@dataclass
class ScoreReuse:
    """What may stand in for computing: an earlier stage's scores, a folder's saved files.

    Attributes:
        cached: scores of an earlier stage of the run (taken first).
        source: a detect folder or a run folder whose scores are taken (see
            :func:`find_scores`).
    """

    cached: ScoredTasks | None = None
    source: str | os.PathLike | None = None


def find_scores(folder: Path, task_id: str) -> Path | None:
    """A task's scores file in a detect folder or a run folder, or ``None``.

    Looked for as ``folder/<task>/``, ``folder/scores/<task>/``, ``folder/detect/<task>/``
    and then ``folder/<stage>/scores/<task>/`` (the first stage in sorted order).
    """
    for base in (folder, folder / "scores", folder / "detect"):
        path = base / task_id / SCORES_FILE
        if path.is_file():
            return path
    found = sorted(folder.glob(f"*/scores/{task_id}/{SCORES_FILE}"))
    return found[0] if found else None


def score_tasks(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[Task],
    attribution: AttributionConfig,
    selections: Selections = None,
    folder: str | os.PathLike | None = None,
    progress: bool = True,
    reuse: ScoreReuse | None = None,
) -> ScoredTasks:
    """Each task's relevance scores (and the activation probabilities ``selections`` rank).

    Args:
        model, tokenizer, tasks: what to score.
        attribution: how relevance is computed (and which examples the probabilities count).
        selections: the selection(s) the scores are for; those that rank activation
            probabilities say how to measure them (one way for all).
        folder: computed files are saved as ``folder/<task>/scores.safetensors`` and
            ``folder/<task>/activation_probability.safetensors`` (``None``: not saved).
        reuse: what may be taken instead of computing (``None``: compute everything).

    Raises:
        ModelMismatchError: loaded scores or probabilities were made on other weights.
        ValueError: loaded scores use another neuron definition; ``selections`` measure
            probabilities in two ways.
    """
    scorer = _Scorer(model, tokenizer, attribution, folder, progress, reuse)
    out = ScoredTasks()
    for task in tasks:
        s, origin, path = scorer.task_scores(task, out)
        out.scores[task.id], out.origin[task.id] = s, origin
        if path is not None:
            out.paths[task.id] = Path(path)
    settings = probability_settings(selections)
    if settings is not None:
        out.probabilities = scorer.probabilities(tasks, settings, out.paths)
    return out


def probability_settings(selections: Selections) -> dict[str, Any] | None:
    """How the selections that rank activation probabilities measure them (``None``: none do).

    Example:
        >>> probability_settings(SelectionConfig.make("lape", threshold=0.5))
        {'threshold': 0.5, 'tokens': 'answer'}
    """
    if isinstance(selections, SelectionConfig):
        selections = [selections]
    ways = [s.measurement() for s in selections or () if s.ranks == "probabilities"]
    if not ways:
        return None
    if any(w != ways[0] for w in ways):
        raise ValueError(f"the selections measure activation probabilities in two ways: {ways}")
    return ways[0]


@dataclass
class _Scorer:
    """What :func:`score_tasks` needs for each task (one model, space and folder)."""

    model: nn.Module
    tokenizer: Any
    attribution: AttributionConfig
    folder: str | os.PathLike | None
    progress: bool
    reuse: ScoreReuse | None

    def __post_init__(self) -> None:
        self.space = NeuronSpace(self.model, self.attribution.definition)
        self.fingerprint = model_fingerprint(self.model) if self.reuse is not None else None
        self.folder = Path(self.folder) if self.folder is not None else None

    def task_scores(self, task: Task, out: ScoredTasks) -> tuple[NeuronScores, str, Path | None]:
        """``(scores, origin, path)`` of one task; the time spent computing goes to ``out``."""
        reuse = self.reuse or ScoreReuse()
        if reuse.cached is not None and task.id in reuse.cached.scores:
            return reuse.cached.scores[task.id], "cached", reuse.cached.paths[task.id]
        path = find_scores(Path(reuse.source), task.id) if reuse.source is not None else None
        if path is not None:
            s = NeuronScores.load(path)
            check_same_model(fingerprint_of(s.meta), self.fingerprint, str(path))
            if s.definition != self.space.definition:
                raise ValueError(
                    f"{path}: scores of {s.definition!r} neurons, but detect.attribution."
                    f"definition is {self.space.definition!r}"
                )
            return s, "loaded", path
        t0 = time.perf_counter()
        s = relevance_scores(
            self.model, task, self.space, tokenizer=self.tokenizer, config=self.attribution,
            progress=self.progress,
        )  # fmt: skip
        out.seconds += time.perf_counter() - t0
        if self.folder is None:
            return s, "computed", None
        return s, "computed", s.save(self.folder / task.id / SCORES_FILE)

    def probabilities(
        self, tasks: Sequence[Task], settings: Mapping[str, Any], paths: Mapping[str, Path]
    ) -> dict[str, NeuronScores]:
        """The saved probabilities measured alike (with :attr:`reuse`), else measured now."""
        if self.reuse is not None:
            mine = {t.id: paths[t.id] for t in tasks}
            definition = self.space.definition
            saved = saved_probabilities(mine, self.folder, settings, definition, self.fingerprint)
            if saved is not None:
                return saved
        probs = {}
        for task in tasks:
            probs[task.id] = activation_probability(
                self.model, task, self.space, tokenizer=self.tokenizer,
                config=self.attribution, **settings,
            )  # fmt: skip
            if self.folder is not None:
                probs[task.id].save(self.folder / task.id / PROBS_FILE)
        return probs


def saved_probabilities(
    score_paths: Mapping[str, Path],
    folder: Path | None,
    settings: Mapping[str, Any],
    definition: str,
    fingerprint: Mapping | None,
) -> dict[str, NeuronScores] | None:
    """Saved activation probabilities ``[layers, units]`` per task, measured with ``settings``.

    For each task (the keys of ``score_paths``, its scores files) the first file measured with
    ``definition`` and ``settings`` (e.g. ``threshold`` and ``tokens``) is taken from
    ``folder/<task>/`` (where a stage saves what it measured) and then from beside the task's
    scores file (where a detect run saved them). ``None`` when a task has none.

    Raises:
        ModelMismatchError: a saved file was measured on other weights than ``fingerprint``
            (``None``: not checked).

    Example:
        >>> saved_probabilities({"sst2": Path("run/scores/sst2/scores.safetensors")},
        ...                     Path("run/scores"), {"threshold": 0.0, "tokens": "answer"},
        ...                     "ffn", None) is None
        True
    """
    probs = {}
    for task, scores_path in score_paths.items():
        places = [Path(scores_path).parent / PROBS_FILE]
        if folder is not None:
            places.insert(0, folder / task / PROBS_FILE)
        for place in dict.fromkeys(p for p in places if p.is_file()):
            saved = NeuronScores.load(place)
            if fingerprint is not None:
                check_same_model(fingerprint_of(saved.meta), fingerprint, str(place))
            if saved.definition == definition and all(
                saved.meta.get(k) == v for k, v in settings.items()
            ):
                probs[task] = saved
                break
        else:
            return None
    return probs


def load_scored(
    paths: Mapping[str, Path],
    selection: SelectionConfig,
    folder: Path | None,
    fingerprint: Mapping | None,
) -> ScoredTasks:
    """Saved scores (``paths``: task id -> scores file) and, when ``selection`` ranks them, the
    saved activation probabilities measured as it asks (see :func:`saved_probabilities`).

    Raises:
        MissingProbabilitiesError: ``selection`` ranks activation probabilities and some task
            has none measured alike (the message names the settings and where it looked).
    """
    out = ScoredTasks()
    for task, path in paths.items():
        out.scores[task], out.paths[task] = NeuronScores.load(path), Path(path)
        out.origin[task] = "loaded"
    settings = probability_settings(selection)
    if settings is None:
        return out
    definition = next(iter(out.scores.values())).definition
    probs = saved_probabilities(out.paths, folder, settings, definition, fingerprint)
    if probs is None:
        asked = [f"definition {definition!r}", *(f"{k} {v!r}" for k, v in settings.items())]
        raise MissingProbabilitiesError(
            f"selection {selection.method!r} needs activation probabilities ({PROBS_FILE}) "
            f"measured with {', '.join(asked[:-1])} and {asked[-1]} for every task, in "
            f"{folder}/<task>/ or beside its scores; some task has none"
        )
    out.probabilities = probs
    return out


__all__ = [
    "MissingProbabilitiesError",
    "PROBS_FILE",
    "SCORES_FILE",
    "ScoreReuse",
    "ScoredTasks",
    "find_scores",
    "load_scored",
    "probability_settings",
    "saved_probabilities",
    "score_tasks",
]
