"""What the stages of one run share, and what a finished run returns.

Example:
    >>> ctx = RunContext(config, model, tok, tasks)  # doctest: +SKIP
    >>> ctx.neuron_sets()["sst2"]  # this run's detect stage, or the file's ``neurons:``  # doctest: +SKIP
    >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig(k=5))  # no file  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons.data.tasks import Task
from taskneurons.experiments.common import GENERAL_FILE, detect_folder, load_neuron_sets
from taskneurons.experiments.experiment_file import ExperimentFile
from taskneurons.experiments.stage import stage as stage_named
from taskneurons.neurons.neuron_set import NeuronSet


@dataclass
class RunContext:
    """What the stages of one run share: model, tokenizer, tasks, config, neuron sets, scores.

    ``scored`` holds the relevance scores (a ``ScoredTasks``) that stages computed or loaded, so
    a later stage of the run scores no task again; ``detect_dir`` is where this run's ``detect``
    stage wrote its scores.
    """

    config: ExperimentFile
    model: nn.Module
    tokenizer: Any
    tasks: list[Task]
    progress: bool = True
    sets: dict[str, NeuronSet] | None = None
    general: NeuronSet | None = None
    scored: Any = None
    detect_dir: Path | None = None

    @classmethod
    def of(
        cls,
        model: nn.Module,
        tokenizer: Any,
        tasks: list[Task],
        progress: bool = True,
        *,
        neurons: str | os.PathLike | None = None,
        sets: dict[str, NeuronSet] | None = None,
        resume: bool = False,
        **sections: Any,
    ) -> RunContext:
        """A context without an experiment file, for calling an experiment from Python.

        ``sections``: stage sections by stage name (``detect=DetectConfig(k=5)``); the others
        keep their defaults. ``neurons``: a detect folder (or a run folder with ``scores/``)
        whose sets and relevance scores are taken, as the file's ``neurons:``; ``sets``: each
        task's set, given as they are (as a detect stage of the run would); ``resume`` as the
        file's ``resume:``. The config's ``tasks`` are the tasks' ids.

        Raises:
            ValueError: a section that names no stage.
            TypeError: a section that is not its stage's config class.

        Example:
            >>> ctx = RunContext.of(model, tok, tasks, progress=False,
            ...                     detect=DetectConfig(k=5))  # doctest: +SKIP
            >>> overlap_experiment(ctx, OverlapConfig(), "runs/overlap")  # doctest: +SKIP
        """
        for name, section in sections.items():
            want = stage_named(name).config
            if not isinstance(section, want):
                raise TypeError(f"{name}: expected a {want.__name__}, got {type(section).__name__}")
        config = ExperimentFile(
            tasks=[t.id for t in tasks],
            neurons=None if neurons is None else os.fspath(neurons),
            resume=resume,
            sections=sections,
        )
        return cls(config, model, tokenizer, list(tasks), progress, sets=sets)

    def neuron_sets(self) -> dict[str, NeuronSet]:
        """The sets of this run's ``detect`` stage, or those in the ``neurons`` folder.

        A ``specific`` detection's general set comes along (:attr:`general`).
        """
        if self.sets is None:
            assert self.config.neurons is not None  # stages() adds detect otherwise
            self.sets = load_neuron_sets(
                self.config.neurons, self.tasks, self.model, strict=self.config.strict
            )
            from_file = Path(self.config.neurons).is_file()  # an exported file: no general set
            general = None if from_file else detect_folder(self.config.neurons) / GENERAL_FILE
            if general is not None and general.is_file():
                self.general = NeuronSet.load(general, model=self.model, strict=self.config.strict)
        return self.sets

    def scores_source(self) -> Path | str | None:
        """Where saved relevance scores may be taken from: ``neurons:``, else this run's detect."""
        neurons = self.config.neurons
        if neurons is not None:
            return None if Path(neurons).is_file() else neurons  # an exported file: no scores
        return self.detect_dir


@dataclass
class RunResult:
    """A finished run: the config, the folder, and each stage's typed result."""

    config: ExperimentFile
    out_dir: Path
    results: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
