"""What the stages of one run share, and what a finished run returns.

Example:
    >>> ctx = RunContext(config, model, tok, tasks)  # doctest: +SKIP
    >>> ctx.neuron_sets()["sst2"]  # this run's detect stage, or the file's ``neurons:``  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons.data.tasks import Task
from taskneurons.experiments.common import GENERAL_FILE, detect_folder, load_neuron_sets
from taskneurons.experiments.experiment_file import ExperimentFile
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

    def neuron_sets(self) -> dict[str, NeuronSet]:
        """The sets of this run's ``detect`` stage, or those in the ``neurons`` folder.

        A ``specific`` detection's general set comes along (:attr:`general`).
        """
        if self.sets is None:
            assert self.config.neurons is not None  # stages() adds detect otherwise
            self.sets = load_neuron_sets(
                self.config.neurons, self.tasks, self.model, strict=self.config.strict
            )
            general = detect_folder(self.config.neurons) / GENERAL_FILE
            if general.is_file():
                self.general = NeuronSet.load(general, model=self.model, strict=self.config.strict)
        return self.sets

    def scores_source(self) -> Path | str | None:
        """Where saved relevance scores may be taken from: ``neurons:``, else this run's detect."""
        return self.config.neurons if self.config.neurons is not None else self.detect_dir


@dataclass
class RunResult:
    """A finished run: the config, the folder, and each stage's typed result."""

    config: ExperimentFile
    out_dir: Path
    results: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
