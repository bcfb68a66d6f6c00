"""Run metadata and the JSON files a training run writes into ``out_dir``.

* :func:`run_meta`: tasks (ids, sizes, example hashes), NeuronSet (definition, count, mask
  hash) and base-model fingerprint; written into ``train_config.json`` and
  ``train_result.json`` and checked against a checkpoint on resume.
* :func:`write_train_config`, :func:`write_train_result`: those two files, with provenance.
* :func:`reset_log`, :func:`append_log`: the JSON-lines step log (one line per logged step).

Example:
    >>> meta = run_meta([sst2], task_neurons, model)  # doctest: +SKIP
    >>> meta["neurons"]  # doctest: +SKIP
    {'definition': 'ffn', 'count': 4608, 'masks_hash': '3f2a9c0d1e4b5a67'}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from taskneurons._io import write_json_atomic, write_text_atomic
from taskneurons.data.tasks import Task, examples_hash
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.training.train_config import TrainConfig, TrainResult


def masks_hash(neurons: NeuronSet) -> str:
    """16 hex digits of SHA-256 over the definition and every module's mask (as uint8)."""
    h = hashlib.sha256(neurons.definition.encode())
    for m, t in neurons.masks.items():
        h.update(m.encode())
        h.update(t.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def run_meta(tasks: Sequence[Task], neurons: NeuronSet | None, model: nn.Module) -> dict:
    """``{"tasks", "neurons", "model_fingerprint"}`` of a run (JSON-ready; ``neurons`` may be None)."""
    return {
        "tasks": [
            {"id": t.id, "n_train": len(t.train), "examples_hash": examples_hash(t.train)}
            for t in tasks
        ],
        "neurons": None
        if neurons is None
        else {
            "definition": neurons.definition,
            "count": len(neurons),
            "masks_hash": masks_hash(neurons),
        },
        "model_fingerprint": model_fingerprint(model),
    }


def write_train_config(
    out: Path,
    config: TrainConfig,
    meta: dict,
    neurons: NeuronSet | None,
    **sizes: int,
) -> Path:
    """Create ``out`` and write ``out/train_config.json``.

    Args:
        out: the run folder.
        config: the run's config.
        meta: :func:`run_meta`'s dict.
        neurons: the trained NeuronSet (its ``meta`` is recorded) or ``None``.
        sizes: counts to record (``n_trainable``, ``n_params``, ``total_steps``,
            ``steps_per_epoch``, ``world_size``).
    """
    out.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(
        out / "train_config.json",
        provenance(
            config=config.to_dict(),
            **meta,
            neurons_meta=None if neurons is None else neurons.meta,
            **sizes,
        ),
    )


def reset_log(log_path: Path, start: int) -> None:
    """Empty the step log for a fresh run; on resume from ``start``, drop lines after it."""
    if start == 0:
        write_text_atomic(log_path, "")
    elif log_path.is_file():  # drop lines logged after the checkpoint
        kept = [
            line
            for line in log_path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= start
        ]
        write_text_atomic(log_path, "".join(k + "\n" for k in kept))


def append_log(log_path: Path, record: dict) -> None:
    """Append ``record`` as one JSON line to the step log."""
    with log_path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def write_train_result(out: Path, result: TrainResult, meta: dict) -> Path:
    """Write ``out/train_result.json``: the result's summary, the run metadata, provenance."""
    return write_json_atomic(out / "train_result.json", provenance(**result.summary(), **meta))
