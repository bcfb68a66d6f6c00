"""The stages an experiment file can name, and what a run's stages share.

Each stage is a function ``(RunContext, folder) -> typed result``; :data:`STAGE_RUNNERS` maps
the names of :data:`~taskneurons.experiments.experiment_file.STAGES` to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons.data.tasks import Task
from taskneurons.experiments.common import GENERAL_FILE, detect_folder, load_neuron_sets
from taskneurons.experiments.continual.suite import continual_suite
from taskneurons.experiments.experiment_file import ExperimentFile
from taskneurons.experiments.finetuning.budget_grid import budget_grid
from taskneurons.experiments.finetuning.cross_training import cross_training
from taskneurons.experiments.finetuning.table2 import neuron_training_experiment
from taskneurons.experiments.generalization.controlled_overlap import controlled_overlap_experiment
from taskneurons.experiments.generalization.overlap import overlap_experiment
from taskneurons.experiments.generalization.proportion_sweep import generalization_experiment
from taskneurons.experiments.generalization.similarity import similarity_experiment
from taskneurons.experiments.generalization.task_groups import ScoredTasks
from taskneurons.experiments.specificity.deactivation import deactivation_experiment
from taskneurons.experiments.specificity.detect import detect_neurons
from taskneurons.experiments.specificity.multitask import multitask_experiment
from taskneurons.experiments.specificity.sweep import selection_sweep
from taskneurons.experiments.zero_shot.prompt_variants import prompt_variants_experiment
from taskneurons.neurons.neuron_set import NeuronSet

#: What each stage does, for the printed headers and the README index.
STAGE_TITLES = {
    "detect": "detect each task's neurons (relevance scores, top-k %)",
    "deactivate": "deactivate each task's neurons vs as many random ones (Table 1, Figure 5 b)",
    "table2": "train only each task's neurons vs as many random ones (Table 2, Figure 5 a)",
    "sweep": "deactivation over k x selection from scores computed once (where specificity lives)",
    "budget": "train own vs random neurons over optimizer x steps x k x seeds (Table 2 budgets)",
    "crosstrain": "train each task's neurons on each task's data: the gain matrix's specificity",
    "prompts": "zero-shot scores under several prompt variants (plain vs chat template), paired "
    "differences",
    "overlap": "overlap of training and test tasks' neurons at each proportion (Table 8)",
    "generalization": "train the groups' neurons at each proportion; ID and OOD scores (Fig. 2)",
    "controlled_overlap": "fixed number of trained neurons, chosen overlap with the test tasks' "
    "(Tables 9-11)",
    "similarity": "per-layer parameter similarity of task neurons; correlation with OOD scores "
    "(Fig. 3, Table 4)",
    "continual": "learn the tasks in order with each method; accuracy matrix, CL, FG, BWT, FWT",
    "multitask": "fine-tune on all tasks, then detect and deactivate (Table 1 on that model)",
}


@dataclass
class RunContext:
    """What the stages of one run share: model, tokenizer, tasks, config, neuron sets, scores.

    ``scored`` holds the relevance scores the generalization stages computed or loaded, so a
    later stage of the run scores no task again; ``detect_dir`` is where this run's ``detect``
    stage wrote its scores.
    """

    config: ExperimentFile
    model: nn.Module
    tokenizer: Any
    tasks: list[Task]
    progress: bool = True
    sets: dict[str, NeuronSet] | None = None
    general: NeuronSet | None = None
    scored: ScoredTasks | None = None
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


def _detect(ctx: RunContext, folder: Path):
    result = detect_neurons(
        ctx.model, ctx.tokenizer, ctx.tasks, ctx.config.detect, folder, ctx.progress
    )
    ctx.sets, ctx.general, ctx.detect_dir = result.sets, result.general, folder
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
    source = cfg.neurons if cfg.neurons is not None else ctx.detect_dir
    return selection_sweep(
        ctx.model, ctx.tokenizer, ctx.tasks, cfg.detect, cfg.deactivate, cfg.sweep, folder,
        ctx.progress, cfg.resume, source,
    )  # fmt: skip


def _continual(ctx: RunContext, folder: Path):
    cfg = ctx.config
    return continual_suite(
        ctx.model, ctx.tokenizer, ctx.tasks, cfg.continual, folder, cfg.resume, ctx.progress
    )


def _scoring_stage(experiment: Callable[..., Any], section: str):
    """A generalization stage: scores from earlier stages, ``neurons:`` or this run's detect."""

    def run(ctx: RunContext, folder: Path):
        cfg = ctx.config
        source = cfg.neurons if cfg.neurons is not None else ctx.detect_dir
        result = experiment(
            ctx.model, ctx.tokenizer, ctx.tasks, cfg.detect, getattr(cfg, section), folder,
            ctx.progress, ctx.scored, source,
        )  # fmt: skip
        ctx.scored = result.scored.merged(ctx.scored)
        return result

    return run


def _budget(ctx: RunContext, folder: Path):
    cfg = ctx.config
    return budget_grid(
        ctx.model, ctx.tokenizer, ctx.tasks, cfg.detect, cfg.budget, folder, ctx.progress
    )


def _crosstrain(ctx: RunContext, folder: Path):
    return cross_training(
        ctx.model, ctx.tokenizer, ctx.tasks, ctx.neuron_sets(), ctx.config.crosstrain, folder,
        ctx.progress,
    )  # fmt: skip


def _prompts(ctx: RunContext, folder: Path):
    return prompt_variants_experiment(
        ctx.model, ctx.tokenizer, ctx.tasks, ctx.config.prompts, folder, ctx.progress
    )


STAGE_RUNNERS: dict[str, Callable[[RunContext, Path], Any]] = {
    "detect": _detect,
    "deactivate": _deactivate,
    "table2": _table2,
    "sweep": _sweep,
    "budget": _budget,
    "crosstrain": _crosstrain,
    "prompts": _prompts,
    "overlap": _scoring_stage(overlap_experiment, "overlap"),
    "generalization": _scoring_stage(generalization_experiment, "generalization"),
    "controlled_overlap": _scoring_stage(controlled_overlap_experiment, "controlled_overlap"),
    "similarity": _scoring_stage(similarity_experiment, "similarity"),
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
