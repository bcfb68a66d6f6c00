"""The one experiment runner: an experiment file in, a run folder with typed results out.

``taskneurons run experiments/X.yaml [--set key=value ...]`` and every per-stage command
(``detect``, ``deactivate``, ``finetune``, ``demo``) come here. A run:

1. reads and checks the whole file (:class:`~taskneurons.experiments.config.ExperimentFile`),
   loads every task and checks the output folder *before* the model loads, so a typo costs
   no wait;
2. writes ``config.yaml`` (the resolved file: every knob, defaults filled) into the run folder;
3. runs the stages in order; a run of one stage writes into the run folder itself, a run of
   several writes each stage into ``<out>/<stage>/``;
4. writes ``README.md``, an index of what the folder holds, and returns a :class:`RunResult`
   holding each stage's typed result.

Example:
    >>> result = run_file("experiments/table2-smollm2-cpu.yaml", ["table2.n_test=50"])  # doctest: +SKIP
    >>> result.results["table2"].table.row("Train-Task")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons._io import write_text_atomic
from taskneurons.config import ConfigError
from taskneurons.data.load import load_task
from taskneurons.data.tasks import Task, TaskFormatError
from taskneurons.experiments.common import detect_folder, load_neuron_sets
from taskneurons.experiments.config import ExperimentFile, to_yaml
from taskneurons.experiments.deactivation import deactivation_experiment
from taskneurons.experiments.detect import detect_neurons
from taskneurons.experiments.multitask import multitask_experiment
from taskneurons.experiments.neuron_training import neuron_training_experiment
from taskneurons.models.loading import load_model
from taskneurons.neurons.neuron_set import NeuronSet

#: The experiment file of ``taskneurons demo`` (shipped with the package).
DEMO_FILE = Path(__file__).with_name("demo.yaml")

#: What each stage does, for the printed headers and the README index.
STAGE_TITLES = {
    "detect": "detect each task's neurons (relevance scores, top-k %)",
    "deactivate": "deactivate each task's neurons vs as many random ones (Table 1, Figure 5 b)",
    "table2": "train only each task's neurons vs as many random ones (Table 2, Figure 5 a)",
    "multitask": "fine-tune on all tasks, then detect and deactivate (Table 1 on that model)",
}

#: Files a run writes, for the README index (by name or stem).
FILE_NOTES = {
    "config.yaml": "the resolved experiment file: every knob, defaults filled",
    "detect_config.json": "detection knobs and provenance",
    "layer_counts": "task neurons per layer",
    "iou": "pairwise IoU of the task neuron sets",
    "table1": "Original / Deactivate-Random / Deactivate-Task (accuracy % / ROUGE-L)",
    "table1_nll": "the same evaluations by gold-label NLL (nats per example)",
    "matrix": "change of task j's score with task i's neurons off (points)",
    "matrix_nll": "change of task j's gold-label NLL with task i's neurons off (nats)",
    "deactivate_config.json": "deactivation knobs, data hashes, neuron-set records",
    "table2": "Zero-shot / Train-Random / Train-Task (accuracy % / ROUGE-L)",
    "train_matrix": "change of task j's score after training task i's neurons (points)",
    "finetune_config.json": "neuron-training knobs, data hashes, per-run summaries",
    "multitask_config.json": "multi-task fine-tuning knobs and the tuned model's fingerprint",
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

    def neuron_sets(self) -> dict[str, NeuronSet]:
        """The sets of this run's ``detect`` stage, or those in the ``neurons`` folder."""
        if self.sets is None:
            assert self.config.neurons is not None  # stages() adds detect otherwise
            self.sets = load_neuron_sets(
                self.config.neurons, self.tasks, self.model, strict=self.config.strict
            )
        return self.sets


@dataclass
class RunResult:
    """A finished run: the config, the folder, and each stage's typed result."""

    config: ExperimentFile
    out_dir: Path
    results: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _detect(ctx: RunContext, folder: Path):
    result = detect_neurons(
        ctx.model, ctx.tokenizer, ctx.tasks, ctx.config.detect, folder, ctx.progress
    )
    ctx.sets = result.sets
    return result


def _deactivate(ctx: RunContext, folder: Path):
    cfg = ctx.config.deactivate
    return deactivation_experiment(
        ctx.model, ctx.tokenizer, ctx.tasks, ctx.neuron_sets(), cfg, folder, ctx.progress
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


STAGE_RUNNERS: dict[str, Callable[[RunContext, Path], Any]] = {
    "detect": _detect,
    "deactivate": _deactivate,
    "table2": _table2,
    "multitask": _multitask,
}


def run_file(
    path: str | os.PathLike,
    overrides: list[str] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Run an experiment file with ``key=value`` overrides (see :func:`run_experiment`)."""
    config = ExperimentFile.read(path, overrides)
    return run_experiment(config, source=str(path), progress=progress, echo=echo)


def run_experiment(
    config: ExperimentFile,
    source: str = "experiment",
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Run every stage of ``config``; ``echo`` gets each stage's header and result text.

    Raises:
        ConfigError: a task, the ``neurons`` folder or the output folder is not usable (the
            message names ``source`` and the key), before the model is loaded.
    """
    start = time.perf_counter()
    say = echo or (lambda text: None)
    tasks = load_tasks(config, source)
    out = prepare_out(config, source)
    model, tokenizer = load_model(config.model, dtype=config.dtype, device=config.device)
    write_text_atomic(out / "config.yaml", to_yaml(config))
    ctx = RunContext(config, model, tokenizer, tasks, progress)
    run = RunResult(config, out)
    stages = config.stages()
    for n, stage in enumerate(stages, start=1):
        folder = out if len(stages) == 1 else out / stage
        say(f"\n== {n}/{len(stages)} {stage}: {STAGE_TITLES[stage]}")
        run.results[stage] = STAGE_RUNNERS[stage](ctx, folder)
        say(run.results[stage].markdown() + "\n")
    run.seconds = time.perf_counter() - start
    write_text_atomic(out / "README.md", run_index(run, source))
    return run


def load_tasks(config: ExperimentFile, source: str) -> list[Task]:
    """Every task of the file, loaded; errors name the file and the ``tasks[i]`` key."""
    tasks = []
    for i, spec in enumerate(config.tasks):
        try:
            tasks.append(load_task(spec, seed=config.seed))
        except (TaskFormatError, FileNotFoundError, TypeError) as exc:
            raise ConfigError(f"{source}: tasks[{i}]: {exc}") from None
    ids = [t.id for t in tasks]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ConfigError(f"{source}: tasks: the task id(s) {repeated} appear twice")
    wanted = config.table2.tasks
    if wanted is not None and "table2" in config.stages():
        unknown = [t for t in wanted if t not in ids]
        if unknown:
            raise ConfigError(f"{source}: table2.tasks: {unknown} are not among the tasks {ids}")
    if config.neurons is not None:
        try:
            detect_folder(config.neurons)
        except FileNotFoundError as exc:
            raise ConfigError(f"{source}: neurons: {exc}") from None
    return tasks


def prepare_out(config: ExperimentFile, source: str) -> Path:
    """The run folder, created; ``ConfigError`` if it is a file or cannot be written."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{source}: out: {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{source}: out: cannot create {out} ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise ConfigError(f"{source}: out: {out} is not writable")
    return out


def run_index(run: RunResult, source: str) -> str:
    """The run folder's ``README.md``: what ran, from which file, and what each file holds."""
    cfg = run.config
    lines = [
        f"# Run of {source}",
        "",
        f"Model `{cfg.model}` ({cfg.dtype}, {cfg.device}); tasks: "
        + ", ".join(f"`{t}`" for t in cfg.tasks)
        + f"; seed {cfg.seed}; {run.seconds:.0f} s.",
        "Rerun: `taskneurons run config.yaml` (every knob is in it).",
        "",
        "| file | what it holds |",
        "|---|---|",
        "| `config.yaml` | " + FILE_NOTES["config.yaml"] + " |",
    ]
    stages = list(run.results)
    for stage in stages:
        folder = run.out_dir if len(stages) == 1 else run.out_dir / stage
        prefix = "" if len(stages) == 1 else f"{stage}/"
        if prefix:
            lines.append(f"| `{prefix}` | {STAGE_TITLES[stage]} |")
        lines += _file_rows(folder, prefix)
    return "\n".join(lines) + "\n"


def _file_rows(folder: Path, prefix: str) -> list[str]:
    rows = []
    for path in sorted(folder.iterdir()):
        if path.name in ("config.yaml", "README.md") or path.name.startswith("."):
            continue
        if path.is_dir():
            n = sum(1 for p in path.rglob("*") if p.is_file())
            rows.append(f"| `{prefix}{path.name}/` | {n} files |")
            continue
        note = FILE_NOTES.get(path.name) or FILE_NOTES.get(path.stem, "")
        rows.append(f"| `{prefix}{path.name}` | {note} |")
    return rows
