"""A finished run read back: its ``config.yaml`` and each stage's result, from its folder.

The runner writes a run folder (:class:`~taskneurons.store.run_folder.RunFolder`: the resolved
experiment file, a folder per stage when several ran); every stage's result class reads its
folder back (``Result.load``). :func:`load_run` puts the two together: the
:class:`~taskneurons.experiments.run_context.RunResult` the run returned, without running
anything (what a result cannot keep, e.g. a model, is ``None``; see each class).

Example:
    >>> run = load_run("runs/table1")  # doctest: +SKIP
    >>> run.results["deactivate"].table.row("Deactivate-Task")  # doctest: +SKIP
"""

from __future__ import annotations

import os

from taskneurons.experiments.experiment_file import ExperimentFile
from taskneurons.experiments.run_context import RunResult
from taskneurons.experiments.stage import stage as stage_named
from taskneurons.store.run_folder import FinishedRunError, RunFolder


def load_run(folder: str | os.PathLike) -> RunResult:
    """The run in ``folder``: its config and the result of every stage that wrote files (and
    declares a result class to read them back with).

    Raises:
        FinishedRunError: ``folder`` has no ``config.yaml`` (not a run folder).
        ConfigError: its ``config.yaml`` is not a valid experiment file.
    """
    run = RunFolder(folder)
    config = run_config(run)
    stages = config.stages()
    result = RunResult(config, run.path)
    dirs = run.stage_dirs(stages)
    for name in run.ran(stages):
        if stage_named(name).result:  # a stage that declares no result class is not read back
            result.results[name] = stage_named(name).result_class().load(dirs[name])
    return result


def run_config(run: RunFolder) -> ExperimentFile:
    """The experiment file of the run in ``run`` (its ``config.yaml``), checked.

    Raises:
        FinishedRunError: no ``config.yaml`` there (not a run folder).
        ConfigError: its ``config.yaml`` is not a valid experiment file.
    """
    if not run.config_path.is_file():
        raise FinishedRunError(f"{run.path}: no {run.config_path.name} (not a run folder)")
    return ExperimentFile.from_dict(run.settings(), where=str(run.config_path))
