"""Training checkpoints: trainable tensors, optimizer, scheduler and RNG state, checked on resume."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from taskneurons.neurons.neuron_set import NeuronSetMismatchError
from taskneurons.provenance import check_same_model
from taskneurons.training.config import TrainConfig

#: config fields that may change between a checkpoint and its resumption
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "log_file", "merge")


CHECKPOINT = "checkpoint.pt"


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


def _json_normal(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def _load_checkpoint(path: Path, config: TrainConfig, meta: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != "taskneurons.train_checkpoint/1":
        raise ValueError(f"{path} is not a taskneurons training checkpoint")
    saved = _json_normal(state["config"])
    now = _json_normal(config.to_dict())
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    diff = [k for k in diff if k not in _RESUMABLE_CHANGES]
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
        raise ValueError(f"cannot resume from {path}: the config differs ({detail})")
    for key, what in (("tasks", "tasks/data"), ("neurons", "NeuronSet")):
        if _json_normal({"x": state["meta"].get(key)}) != _json_normal({"x": meta.get(key)}):
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
