"""Training checkpoints: trainable tensors, optimizer, scheduler and RNG state, checked on resume.

:func:`write_checkpoint` writes ``checkpoint.pt`` (main process, atomically) with the checksum
of its state (tensors' stored bytes and every value, under ``"checksum"``);
:func:`restore_checkpoint` verifies it, checks the state against the run (config, tasks,
NeuronSet, base model) and loads it back.

Example:
    >>> write_checkpoint(out / CHECKPOINT, 10, cfg, meta, named, opt, sched, acc)  # doctest: +SKIP
    >>> restore_checkpoint(out / CHECKPOINT, cfg, meta, named, opt, sched)  # doctest: +SKIP
    10
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from taskneurons._io import CHECKSUM_KEY, atomic_path, checksum, verify_checksum
from taskneurons._ranks import one_writer
from taskneurons.neurons.neuron_set import NeuronSetMismatchError
from taskneurons.provenance import check_same_model
from taskneurons.store.settings import SettingsKey, normal
from taskneurons.training.train_config import TrainConfig

#: config fields that may change between a checkpoint and its resumption
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "log_file", "merge", "checkpointing")


#: file name of the checkpoint inside ``out_dir``
CHECKPOINT = "checkpoint.pt"

#: format tag stored in the checkpoint
CHECKPOINT_FORMAT = "taskneurons.train_checkpoint/1"


# -- checkpoints -----------------------------------------------------------------------------
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_checkpoint(path: Path, config: TrainConfig, meta: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a taskneurons training checkpoint")
    recorded = state.pop(CHECKSUM_KEY, None)  # none in a checkpoint written before checksums
    verify_checksum(recorded, state, path, "state")
    now = SettingsKey.of(**config.to_dict())
    saved = normal(state["config"])
    keys = sorted(set(saved) | set(now.values))
    diff = now.changes(saved, keys, ignore=_RESUMABLE_CHANGES, arrow="->")
    if diff:
        raise ValueError(f"cannot resume from {path}: the config differs ({', '.join(diff[:6])})")
    run = SettingsKey.of(tasks=meta.get("tasks"), neurons=meta.get("neurons"))
    differ = run.differing(normal(state["meta"]), keys=("tasks", "neurons"))
    if differ:
        what = {"tasks": "tasks/data", "neurons": "NeuronSet"}[differ[0]]
        raise ValueError(f"cannot resume from {path}: the {what} differ from the checkpoint's")
    check_same_model(
        state["meta"]["model_fingerprint"],
        meta["model_fingerprint"],
        f"cannot resume from {path}: it",
        hint="; pass the same base model",
        error=NeuronSetMismatchError,
    )
    return state


def _load_trainable(named: list[tuple[str, nn.Parameter]], saved: dict, path: Path) -> None:
    names = [n for n, _ in named]
    if sorted(names) != sorted(saved):
        raise ValueError(
            f"checkpoint {path} holds other trainable tensors than this run "
            f"({sorted(set(saved) ^ set(names))[:5]})"
        )
    with torch.no_grad():
        for n, p in named:
            p.copy_(saved[n].to(p.device, p.dtype))


def write_checkpoint(
    path: Path,
    step: int,
    config: TrainConfig,
    meta: dict,
    named: list[tuple[str, nn.Parameter]],
    optimizer: torch.optim.Optimizer,
    scheduler,
    accelerator,
) -> None:
    """Write the state after ``step`` optimizer steps to ``path`` (main process), then sync.

    Args:
        path: the checkpoint file (written atomically).
        step: optimizer steps done.
        config: the run's config (checked on resume).
        meta: the run metadata (tasks, NeuronSet, model fingerprint; checked on resume).
        named: the trainable ``(name, tensor)`` pairs (stored on CPU).
        optimizer, scheduler: their ``state_dict()`` is stored.
        accelerator: the ``accelerate.Accelerator``; every process waits for the write
            (:func:`~taskneurons._ranks.one_writer`).
    """
    with one_writer(accelerator) as writes:  # several processes: the main one writes
        if not writes:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "config": config.to_dict(),
            "meta": normal(meta),
            "trainable": {n: p.detach().to("cpu").clone() for n, p in named},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
        }
        state[CHECKSUM_KEY] = checksum(state)  # of the tensors' bytes and every value
        with atomic_path(path) as tmp:
            torch.save(state, tmp)


def restore_checkpoint(
    path: Path,
    config: TrainConfig,
    meta: dict,
    named: list[tuple[str, nn.Parameter]],
    optimizer: torch.optim.Optimizer,
    scheduler,
) -> int:
    """Load ``path`` into the trainable tensors, optimizer, scheduler and the torch RNG.

    Returns:
        The optimizer steps the checkpoint was written after (where to resume).

    Raises:
        ChangedFileError: the file does not match the checksum saved in it.
        ValueError: the file is not a checkpoint, or the config (except
            ``checkpoint_every``, ``log_every``, ``log_file``, ``merge``, ``checkpointing``),
            tasks, NeuronSet or trainable tensors differ.
        NeuronSetMismatchError: it was written for another base model.
    """
    state = _load_checkpoint(path, config, meta)
    _load_trainable(named, state["trainable"], path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(state["step"])
