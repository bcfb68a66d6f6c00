"""Pieces shared by the experiments: test subsets, neuron-set folders, provenance records."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from taskneurons.data.tasks import Example, Task, examples_hash, subset
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.provenance import model_fingerprint, provenance


def eval_examples(task: Task, n: int | None, seed: int) -> list[Example]:
    """``n`` test examples of ``task`` (label-stratified, seeded; ``None``: all of them)."""
    exs = task.test
    if n is not None and n < len(exs):
        exs = subset(
            exs, n, seed=seed, labels=task.labels if task.kind == "classification" else None
        )
    return list(exs)


def limited(task: Task, n_train: int | None, seed: int) -> Task:
    """``task`` with ``n_train`` train examples (label-stratified, seeded; ``None``: all)."""
    return task.limit(n_train=n_train, seed=seed) if n_train is not None else task


def experiment_meta(config, model, tasks, test, neuron_sets, controls, **extra) -> dict:
    """The provenance record written beside a deactivation or neuron-training experiment."""
    return provenance(
        config=config.to_dict(),
        model=model_fingerprint(model),
        metric={t.id: t.metric for t in tasks},
        data_hash={t.id: examples_hash(test[t.id]) for t in tasks},
        neuron_sets={t.id: neuron_sets[t.id].meta for t in tasks},
        random_overlap={t.id: controls[t.id].meta.get("n_overlap", 0) for t in tasks},
        **extra,
    )


def check_sets_cover(tasks: list[Task], neuron_sets: Mapping[str, NeuronSet]) -> None:
    """Raise ``ValueError`` unless every task has a neuron set."""
    missing = [t.id for t in tasks if t.id not in neuron_sets]
    if missing:
        raise ValueError(f"no neuron set for tasks {missing}; have {sorted(neuron_sets)}")


def detect_folder(folder: str | os.PathLike) -> Path:
    """The folder holding ``<task>/neurons.safetensors``: ``folder`` or its ``detect/``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"neuron folder not found: {folder}")
    inner = folder / "detect"
    if inner.is_dir() and not any(folder.glob("*/neurons.safetensors")):
        return inner
    return folder


def load_neuron_sets(
    folder: str | os.PathLike, tasks: list[Task], model: nn.Module, strict: bool = True
) -> dict[str, NeuronSet]:
    """Load ``folder/<task>/neurons.safetensors`` for every task, checked against ``model``.

    ``folder`` is a ``detect`` output folder, or a run folder holding one as ``detect/``.
    """
    folder = detect_folder(folder)
    sets = {}
    for t in tasks:
        path = folder / t.id / "neurons.safetensors"
        if not path.is_file():
            raise FileNotFoundError(
                f"no neuron set for task {t.id!r} at {path}; run `taskneurons detect` first"
            )
        sets[t.id] = NeuronSet.load(path, model=model, strict=strict)
    return sets
