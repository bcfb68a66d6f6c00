"""How results were made: provenance records, library versions and model identity.

:func:`model_fingerprint` identifies a model (architecture hash and a weights checksum);
:func:`check_same_model` is the one place that compares a recorded fingerprint with a model.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from taskneurons.models.adapters import get_adapter
from taskneurons.models.placement import onloaded


def model_fingerprint(model: nn.Module) -> dict:
    """Identity of a model for result files: architecture, shapes and a weights checksum.

    ``arch`` hashes the config (which architecture and sizes); ``weights`` hashes a sample of
    weights (first and last FFN, embeddings) cast to float32, so a fine-tuned copy differs.
    ``dtype``, only when it is not float32: the parameters' dtype (weights loaded as bfloat16
    hash differently, and :func:`check_same_model` says so instead of "another model").
    """
    config = model.config
    cfg = config.to_dict()
    for volatile in (
        "_name_or_path",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "architectures",
        "_attn_implementation_autoset",
        "use_cache",
    ):
        cfg.pop(volatile, None)
    arch = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]

    h = hashlib.sha256()
    try:
        adapter = get_adapter(model)
        modules = [adapter.w2(0), adapter.w2(adapter.n_layers - 1)]
    except ValueError:
        modules = []
    emb = model.get_input_embeddings()
    for i, module in enumerate([*modules, *([emb] if emb is not None else [])]):
        with onloaded(module):  # weights a device_map offloaded: read from where they are
            t = module.weight if i < len(modules) else module.weight[:64]
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    out = {
        "model_type": getattr(config, "model_type", None),
        "source": getattr(model, "taskneurons_source", {}).get("spec")
        or getattr(config, "_name_or_path", ""),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "arch": arch,
        "weights": h.hexdigest()[:16],
    }
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    if dtype != torch.float32:
        out["dtype"] = str(dtype).removeprefix("torch.")
    return out


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape results (python, torch, transformers, ...)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("taskneurons", "torch", "transformers", "accelerate", "peft", "safetensors"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(**fields: Any) -> dict[str, Any]:
    """A record of how a result was made: the given fields, the command line, time and versions."""
    return {
        **fields,
        "command": sys.argv,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }


class ModelMismatchError(ValueError):
    """A file or record was made on another model than the one given (message says how)."""


def fingerprint_of(meta: Mapping[str, Any]) -> dict | None:
    """The model fingerprint recorded in a meta dict (``model_fingerprint`` or ``model``)."""
    for key in ("model_fingerprint", "fingerprint", "model"):
        fp = meta.get(key)
        if isinstance(fp, Mapping) and "arch" in fp:
            return dict(fp)
    return None


def check_same_model(
    recorded: Mapping[str, Any] | None,
    model: nn.Module | Mapping[str, Any],
    subject: str,
    strict: bool = True,
    hint: str = "",
    error: type[ModelMismatchError] = ModelMismatchError,
) -> None:
    """Raise ``error`` unless ``recorded`` is the fingerprint of ``model``.

    The one comparison of a recorded :func:`model_fingerprint` with a model, used wherever a
    file made on one model is applied to another (neuron sets, neuron deltas, checkpoints).

    Args:
        recorded: the fingerprint stored with the file (``None``: nothing to check).
        model: the model, or its fingerprint.
        subject: what was made, for the message (``"neuron set"``, a file path).
        strict: compare the weights checksum too (``False``: the architecture only).
        hint: appended to the message when the weights differ (what to do instead).
        error: the exception class to raise.

    Example:
        >>> fp = {"arch": "a", "weights": "w"}
        >>> check_same_model(fp, {"arch": "a", "weights": "v"}, "neuron set", strict=False)
    """
    if not recorded:
        return
    now = model if isinstance(model, Mapping) else model_fingerprint(model)
    was, dtype = recorded.get("dtype", "float32"), now.get("dtype", "float32")
    if was != dtype and recorded.get("arch") == now.get("arch"):
        raise error(
            f"{subject} was made with the model loaded as {was}, but this model is loaded as "
            f"{dtype} (same architecture, source {now.get('source') or '?'}), so its weights "
            f"are rounded otherwise: load the model with dtype={was}"
        )
    for key in ("arch", "weights") if strict else ("arch",):
        if key in recorded and recorded[key] != now.get(key):
            what = "architecture (config)" if key == "arch" else "weights"
            raise error(
                f"{subject} was made on another model: {what} fingerprint {recorded[key]} "
                f"(model_type {recorded.get('model_type')}, source "
                f"{recorded.get('source') or '?'}) != {now.get(key)} (model_type "
                f"{now.get('model_type')}, source {now.get('source') or '?'})"
                + (hint if key == "weights" else "")
            )
