"""Pieces shared by the experiments: test subsets, neuron-set folders, provenance records."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from taskneurons.data.tasks import Task, examples_hash, subset
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.provenance import model_fingerprint, provenance


def _test_examples(task: Task, n: int | None, seed: int):
    exs = task.test
    if n is not None and n < len(exs):
        exs = subset(
            exs, n, seed=seed, labels=task.labels if task.kind == "classification" else None
        )
    return list(exs)


def _experiment_meta(config, model, tasks, test, neuron_sets, controls, **extra) -> dict:
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


def load_neuron_sets(
    folder: str | os.PathLike, tasks: list[Task], model: nn.Module, strict: bool = True
) -> dict[str, NeuronSet]:
    """Load ``folder/<task>/neurons.safetensors`` for every task, checked against ``model``."""
    folder = Path(folder)
    sets = {}
    for t in tasks:
        path = folder / t.id / "neurons.safetensors"
        if not path.is_file():
            raise FileNotFoundError(
                f"no neuron set for task {t.id!r} at {path}; run `taskneurons detect` first"
            )
        sets[t.id] = NeuronSet.load(path, model=model, strict=strict)
    return sets


def _limited(task: Task, n_train: int | None, seed: int) -> Task:
    return task.limit(n_train=n_train, seed=seed) if n_train is not None else task
