"""The neuron set each task trained in a neuron-training run, kept with the run's result files.

NCFT and W-NCFT (:mod:`taskneurons.continual.strategies.ncft`) find task ``t``'s neurons on the
model as stage ``t`` finds it, so the sets cannot be found again without the run. A finished
run writes them as ``<run folder>/neurons/<task>/neurons.safetensors`` (:class:`NeuronSet`
files, the layout ``taskneurons detect`` writes) before ``result.json``: a few hundred KB
beside the result, unlike the stage checkpoint (``results/**/checkpoint/`` is not tracked),
so analyses of the sets (``taskneurons analyze reuse``) run on any machine.

Example:
    >>> save_task_neurons("runs/cl/ncft", method.neuron_sets)  # doctest: +SKIP
    >>> list(load_task_neurons("runs/cl/ncft", ["sst2", "agnews"]))  # doctest: +SKIP
    ['sst2', 'agnews']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.store.run_folder import RunFolder

#: the folder of a run that holds its tasks' neuron sets
NEURONS_DIR = "neurons"


def task_neurons_folder(folder: str | os.PathLike) -> RunFolder:
    """``<folder>/neurons``: where a run keeps its tasks' neuron sets."""
    return RunFolder(Path(folder) / NEURONS_DIR)


def save_task_neurons(folder: str | os.PathLike, sets: Mapping[str, NeuronSet]) -> None:
    """Write every task's set as ``<folder>/neurons/<task>/neurons.safetensors`` (atomically,
    one file pair per task; :meth:`NeuronSet.save`)."""
    run = task_neurons_folder(folder)
    for task, neurons in sets.items():
        neurons.save(run.set_path(task))


def has_task_neurons(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a run's task neuron sets (``neurons/``)."""
    return task_neurons_folder(folder).path.is_dir()


def load_task_neurons(folder: str | os.PathLike, order: Sequence[str]) -> dict[str, NeuronSet]:
    """Task id -> its neuron set, in ``order`` (the run's training order).

    Raises:
        FileNotFoundError: a task of ``order`` has no set in ``<folder>/neurons`` (the
            message names the tasks and the folder).
        ValueError: a set file is damaged or was edited (:meth:`NeuronSet.load`).
    """
    run = task_neurons_folder(folder)
    missing = [t for t in order if not run.set_path(t).is_file()]
    if missing:
        raise FileNotFoundError(f"{run.path}: no neuron set for tasks {missing}")
    return {t: NeuronSet.load(run.set_path(t)) for t in order}
