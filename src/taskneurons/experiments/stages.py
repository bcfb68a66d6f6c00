"""The stages an experiment file can name, and what a run's stages share.

Each stage is a function ``(RunContext, folder) -> typed result``; :data:`STAGE_RUNNERS` maps
the names of :data:`~taskneurons.experiments.config.STAGES` to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons.data.tasks import Task
from taskneurons.experiments.common import GENERAL_FILE, detect_folder, load_neuron_sets
from taskneurons.experiments.config import ExperimentFile
from taskneurons.experiments.continual_suite import continual_suite
from taskneurons.experiments.deactivation import deactivation_experiment
from taskneurons.experiments.detect import detect_neurons
from taskneurons.experiments.multitask import multitask_experiment
from taskneurons.experiments.neuron_training import neuron_training_experiment
from taskneurons.experiments.sweep import selection_sweep
from taskneurons.neurons.neuron_set import NeuronSet

#: What each stage does, for the printed headers and the README index.
STAGE_TITLES = {
    "detect": "detect each task's neurons (relevance scores, top-k %)",
    "deactivate": "deactivate each task's neurons vs as many random ones (Table 1, Figure 5 b)",
    "table2": "train only each task's neurons vs as many random ones (Table 2, Figure 5 a)",
    "sweep": "deactivation over k x selection from scores computed once (where specificity lives)",
    "continual": "learn the tasks in order with each method; accuracy matrix, CL, FG, BWT, FWT",
    "multitask": "fine-tune on all tasks, then detect and deactivate (Table 1 on that model)",
}


@dataclass
class RunContext:
    """What the stages of one run share: model, tokenizer, tasks, config, neuron sets."""

    config: ExperimentFile
    model: nn.Module
    tokenizer: Any
    tasks: list[Task]
    progress: bool = True
    sets: dict[str, NeuronSet] | None = None
    general: NeuronSet | None = None

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


def _detect(ctx: RunContext, folder: Path):
    result = detect_neurons(
        ctx.model, ctx.tokenizer, ctx.tasks, ctx.config.detect, folder, ctx.progress
    )
    ctx.sets, ctx.general = result.sets, result.general
    return result


def _deactivate(ctx: RunContext, folder: Path):
    cfg = ctx.config.deactivate
    sets = ctx.neuron_sets()
    return deactivation_experiment(
        ctx.model, ctx.tokenizer, ctx.tasks, sets, cfg, folder, ctx.progress, general=ctx.general
    )


def _table2(ctx: RunContext, folder: Path):
    cfg = ctx.config.table2
    tasks = [t for t in ctx.tasks if cfg.tasks is None or t.id in cfg.tasks]
    return neuron_training_experiment(
        ctx.model, ctx.tokenizer, tasks, ctx.neuron_sets(), cfg, folder, ctx.progress
    )


def _multitask(ctx: RunContext, folder: Path):
    cfg = ctx.config.multitask
    return multitask_experiment(ctx.model, ctx.tokenizer, ctx.tasks, cfg, folder, ctx.progress)


def _sweep(ctx: RunContext, folder: Path):
    cfg = ctx.config
    return selection_sweep(
        ctx.model, ctx.tokenizer, ctx.tasks, cfg.detect, cfg.deactivate, cfg.sweep, folder,
        ctx.progress,
    )  # fmt: skip


def _continual(ctx: RunContext, folder: Path):
    cfg = ctx.config
    return continual_suite(
        ctx.model, ctx.tokenizer, ctx.tasks, cfg.continual, folder, cfg.resume, ctx.progress
    )


STAGE_RUNNERS: dict[str, Callable[[RunContext, Path], Any]] = {
    "detect": _detect,
    "deactivate": _deactivate,
    "table2": _table2,
    "sweep": _sweep,
    "continual": _continual,
    "multitask": _multitask,
}


@dataclass
class RunResult:
    """A finished run: the config, the folder, and each stage's typed result."""

    config: ExperimentFile
    out_dir: Path
    results: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
