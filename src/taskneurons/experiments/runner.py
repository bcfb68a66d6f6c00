"""The one experiment runner: an experiment file in, a run folder with typed results out.

``taskneurons run experiments/X.yaml [--set key=value ...]`` and every per-stage command
(``detect``, ``deactivate``, ``finetune``, ``demo``) come here. A run:

1. reads and checks the whole file (:class:`~taskneurons.experiments.experiment_file.ExperimentFile`),
   loads every task and checks the device, dtype, sizes and output folder *before* the model
   loads, so a typo costs no wait; once the model is loaded, checks every ``max_length``
   against its context length (the default 512 is lowered to it);
2. takes the run folder only if it holds nothing, or results of the same settings
   (:mod:`~taskneurons.experiments.run_acceptance`: checked before the model loads, and once it
   is loaded with each stage's ``check``; ``overwrite`` empties it), then writes
   ``run_settings.json`` and ``config.yaml`` (the resolved file: every knob, defaults filled);
3. runs the stages in order; a run of one stage writes into the run folder itself, a run of
   several writes each stage into ``<out>/<stage>/``;
4. writes ``README.md``, an index of what the folder holds, and returns a :class:`RunResult`
   holding each stage's typed result.

Example:
    >>> result = run_file("experiments/table2-smollm2-cpu.yaml", ["table2.n_test=50"])  # doctest: +SKIP
    >>> result.results["table2"].table.row("Train-Task")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from taskneurons._io import folder_problem, write_text_atomic
from taskneurons._ranks import console_process, main_first, shared_folder, world_size
from taskneurons.config import ConfigError
from taskneurons.data.load import load_task
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import fit_max_length, truncation_report
from taskneurons.data.tasks import Task, TaskFormatError
from taskneurons.evaluation.dispatch import check_task_metric
from taskneurons.experiments.common import check_sets_dtype, detect_folder
from taskneurons.experiments.experiment_file import (
    ExperimentFile,
    read_settings,
    with_defaults,
)
from taskneurons.experiments.run_acceptance import claim_folder
from taskneurons.experiments.run_context import RunContext, RunResult
from taskneurons.experiments.run_index import run_index
from taskneurons.experiments.seed_repeats import SEEDS_KEY, run_seeds
from taskneurons.experiments.stage import stage as stage_named
from taskneurons.experiments.stage_checks import check_stage_tasks, fit_sizes
from taskneurons.models.device_map import Placement, placement_problem
from taskneurons.models.loading import (
    EMBEDDED_MODELS,
    check_device,
    context_length,
    load_model,
    resolve_dtype,
)
from taskneurons.neurons.set_formats import SetFileError, read_set_file
from taskneurons.store.run_folder import RunFolder
from taskneurons.training.process_group import process_device, run_accelerator
from taskneurons.training.train_config import TrainConfig

log = logging.getLogger(__name__)

C = TypeVar("C")


def run_file(
    path: str | os.PathLike,
    overrides: list[str] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Run an experiment file with ``key=value`` overrides (see :func:`run_experiment`).

    A file (or override) that sets no ``max_length`` has it fitted to the model's context length.
    A file with ``seeds: [...]`` runs once per seed into ``<out>/seed-<s>/`` and returns a
    :class:`~taskneurons.experiments.seed_repeats.SeedsRun` (see that module).
    """
    data = read_settings(path, overrides)
    if SEEDS_KEY in data:  # one run per seed, and their statistics combined
        return run_seeds(str(path), data, lambda one: run_settings(one, path, progress, echo), echo)
    return run_settings(data, path, progress, echo)


def run_settings(
    data: dict, path: str | os.PathLike, progress: bool, echo: Callable[[str], None] | None
) -> RunResult:
    """Run the settings ``data`` read from the file ``path`` (defaults resolved here)."""
    config = ExperimentFile.from_dict(with_defaults(data), where=str(path))
    fit = not mentions_key(data, "max_length")
    return run_experiment(config, str(path), progress, echo, fit_max_length=fit)


def mentions_key(data: Any, name: str) -> bool:
    """Whether the settings ``data`` (nested mappings) set ``name`` anywhere."""
    if not isinstance(data, dict):
        return False
    return name in data or any(mentions_key(v, name) for v in data.values())


def run_experiment(
    config: ExperimentFile,
    source: str = "experiment",
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    *,
    fit_max_length: bool = False,
) -> RunResult:
    """Run every stage of ``config``; ``echo`` gets each stage's header and result text.

    ``fit_max_length``: lower every ``max_length`` beyond the model's context length to it
    (for settings the user did not choose); otherwise such a value is refused, except the
    default 512.

    Raises:
        ConfigError: a task, the ``neurons`` folder, the device, the dtype, a size, a stage's
            settings against the tasks (:func:`check_stage_tasks`) or the output folder is not
            usable (the message names ``source`` and the key), before the model is loaded; a
            ``max_length`` beyond the model's context length, before any work; an ``out``
            folder holding results of other settings, or no record of them (see
            :mod:`~taskneurons.experiments.run_acceptance`), leaving it as it was. Sizes beyond
            every task's split are lowered to it (:func:`fit_sizes`), and so recorded.
    """
    start = time.perf_counter()
    say = echo or (lambda text: None)
    tasks = load_tasks(config, source)
    check_settings(config, source)
    check_stage_tasks(config, tasks, source)
    check_given_sets(config, tasks)
    config = fit_sizes(config, tasks)
    prepare_out(config, source)
    claim = claim_folder(config, tasks, source)  # a folder of other settings: refused here
    accelerator = run_accelerator(config.device)  # several processes: the group starts here
    if not console_process():  # several processes: the main one prints
        progress, say = False, lambda text: None
    with shared_folder(accelerator):  # several processes: the main one writes, between barriers
        placement = Placement(config.device_map, config.offload_folder)
        device = process_device(config.device, accelerator)
        with main_first():  # a download or GGUF conversion cache, made once
            model, tokenizer = load_model(config.model, config.dtype, device, placement=placement)
        config = fit_context(config, model, source, fit_max_length)
        ctx = RunContext(config, model, tokenizer, tasks, progress)
        folder = claim.accept(ctx)  # the stages' checks; then run_settings.json and config.yaml
        run = run_stages(ctx, folder, say)
        run.seconds = time.perf_counter() - start
        write_text_atomic(folder.index_path, run_index(run, source))
    return run


def run_stages(ctx: RunContext, folder: RunFolder, say: Callable[[str], None]) -> RunResult:
    """Run the stages of ``ctx.config`` in order, into ``folder``; ``say`` gets each stage's
    header and result text."""
    config = ctx.config
    run = RunResult(config, Path(config.out))
    stages = config.stages()
    for n, (name, stage_dir) in enumerate(folder.stage_dirs(stages).items(), start=1):
        stage = stage_named(name)
        say(f"\n== {n}/{len(stages)} {name}: {stage.title}")
        run.results[name] = stage.runner()(ctx, getattr(config, name), stage_dir)
        truncation_report()  # a warning per task whose inputs were cut to max_length
        say(run.results[name].markdown() + "\n")
    return run


def load_tasks(config: ExperimentFile, source: str) -> list[Task]:
    """Every task of the file, loaded; errors name the file and the ``tasks[i]`` key."""
    tasks: list[Task] = []
    first: dict[str, int] = {}  # task id -> index of the spec that gave it
    for i, spec in enumerate(config.tasks):
        try:
            task = load_task(spec, seed=config.seed)
            check_task_metric(task)
        except (TaskFormatError, FileNotFoundError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: tasks[{i}]: {exc}") from None
        if task.id in first:
            j = first[task.id]
            raise ConfigError(
                f"{source}: tasks: {config.tasks[j]} (tasks[{j}]) and {spec} (tasks[{i}]) have "
                f"the same task id {task.id!r}; results are stored by task id, so one would "
                "overwrite the other: give one of them another id"
            )
        first[task.id] = i
        tasks.append(task)
    if config.neurons is not None:
        try:
            if Path(config.neurons).is_file():
                read_set_file(config.neurons)  # a malformed file is refused before the model
            else:
                detect_folder(config.neurons)
        except (FileNotFoundError, SetFileError) as exc:
            raise ConfigError(f"{source}: neurons: {exc}") from None
    return tasks


def prepare_out(config: ExperimentFile, source: str) -> Path:
    """The run folder (made once the run is accepted); ``ConfigError`` if it is a file or
    cannot be written."""
    out = Path(config.out)
    problem = folder_problem(out)
    if problem:
        raise ConfigError(f"{source}: out: {problem}")
    return out


#: Config fields that count examples: ``None`` (all) or at least 1.
SIZE_KEYS = ("n_examples", "n_train", "n_test")


def config_items(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every field of a config dataclass, nested fields included
    (an experiment file's stage sections by their stage names: ``detect.k``)."""
    for name, value in _fields(obj):
        yield prefix + name, value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from config_items(value, f"{prefix}{name}.")


def _fields(obj: Any) -> Iterator[tuple[str, Any]]:
    """``(name, value)`` of ``obj``'s fields; an experiment file's sections one by one."""
    for f in dataclasses.fields(obj):
        if isinstance(obj, ExperimentFile) and f.name == "sections":
            yield from obj.sections.items()
        else:
            yield f.name, getattr(obj, f.name)


def check_settings(config: ExperimentFile, source: str) -> None:
    """What can be checked before the model loads: device, dtype, and the run stages' sizes."""
    try:
        check_device(config.device)
    except ValueError as exc:
        raise ConfigError(f"{source}: device: {exc}") from None
    try:
        resolve_dtype(config.dtype)
    except ValueError as exc:
        raise ConfigError(f"{source}: dtype: {exc}") from None
    for stage in config.stages():
        for key, value in config_items(getattr(config, stage), f"{stage}."):
            if key.rsplit(".", 1)[-1] in SIZE_KEYS and isinstance(value, int) and value < 1:
                raise ConfigError(
                    f"{source}: {key}: must be at least 1 (or null for all examples), got {value}"
                )
    check_placement(config, source)


def check_placement(config: ExperimentFile, source: str) -> None:
    """``device_map`` against the run, before the model loads: a stage that trains, several
    processes, deactivation by ``parameters`` (offloaded weights cannot be written), a GGUF
    model, ``disk`` without ``offload_folder`` (``ConfigError`` naming the key)."""
    if config.device_map is None:
        return
    training, writing = [], []
    for stage in config.stages():
        for key, value in config_items(getattr(config, stage), f"{stage}."):
            if isinstance(value, TrainConfig) and stage not in training:
                training.append(stage)
            if key.endswith(".mode") and value == "parameters":
                writing.append(key)
    problem = placement_problem(config.device_map, training, world_size())
    if problem is None and writing:
        problem = (
            f"{writing[0]}: 'parameters' writes the weights, which a device_map may have "
            "offloaded; use mode: activation"
        )
    try:
        if problem is None:
            placement = Placement(config.device_map, config.offload_folder)
            placement.kwargs(config.model, list(EMBEDDED_MODELS))
    except ValueError as exc:
        problem = str(exc).removeprefix("device_map: ")
    if problem is not None:
        raise ConfigError(f"{source}: device_map: {problem}")


def check_given_sets(config: ExperimentFile, tasks: list[Task]) -> None:
    """The ``neurons:`` sets the stages will use, against the dtype the model will be loaded
    as, before it loads (:func:`~taskneurons.experiments.common.check_sets_dtype`)."""
    stages = config.stages()
    needs_sets = any("sets" in stage_named(s).needs for s in stages)
    if config.neurons is not None and needs_sets and "detect" not in stages:
        dtype = str(resolve_dtype(config.dtype)).removeprefix("torch.")
        check_sets_dtype(config.neurons, tasks, dtype)


def _map_prompts(obj: Any, change: Callable[[PromptConfig], PromptConfig]) -> Any:
    """``obj`` with ``change`` applied to every :class:`PromptConfig` inside it."""
    if isinstance(obj, PromptConfig):
        return change(obj)
    if isinstance(obj, dict):
        new = {k: _map_prompts(v, change) for k, v in obj.items()}
        return obj if all(new[k] is obj[k] for k in obj) else new
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        new = _map_prompts(value, change) if f.init else value
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(obj, **changes) if changes else obj


def fit_context(config: C, model: nn.Module, source: str, fit: bool = False) -> C:
    """``config`` (an experiment file, or any config holding prompts, as ``eval``'s) with every
    ``max_length`` within the model's context length: the one context rule of the tool.

    With ``fit``, and for the default ``max_length`` (512), a longer value is lowered to the
    context length; another value beyond it, in the top-level prompt or a stage that runs, is
    refused (``ConfigError`` naming the key).
    """
    limit = context_length(model)
    if limit is None:
        return config
    default = PromptConfig().max_length
    runs = ("prompt", *config.stages()) if isinstance(config, ExperimentFile) else None
    for key, value in config_items(config):
        if isinstance(value, PromptConfig) and (runs is None or key.split(".", 1)[0] in runs):
            explicit = value.max_length != default and not fit
            where = f"{source}: {key}.max_length:"
            fit_max_length(value.max_length, limit, explicit, where, error=ConfigError)
    n = limit[0]
    fitted = _map_prompts(config, lambda p: p.replace(max_length=n) if p.max_length > n else p)
    if fitted != config:
        log.info("max_length lowered to the model's context length %d", n)
    return fitted
