"""The file format of a :class:`~taskneurons.training.neuron_delta.NeuronDelta`.

One ``.safetensors`` file holds ``delta/<param>`` (the trained slices, raw layout
``param.index_select(dim, positions)``), ``positions/<param>`` (``torch.long [n]``) and
``mask/<module>`` (the NeuronSet's masks); a JSON sidecar of the same name holds the format,
definition, dtypes, NeuronSet meta, base-model fingerprint and each parameter's axis and count.
Both carry a checksum (the header of the tensors' stored bytes and itself, the sidecar of its
content), verified by :func:`read_delta`.
:meth:`NeuronDelta.save` and :meth:`NeuronDelta.load` are thin wrappers around
:func:`write_delta`, :func:`read_delta` and :func:`delta_state`.

Example:
    >>> path, neurons, dtype, tensors = read_delta("out/sst2_delta", base_model)  # doctest: +SKIP
    >>> tensors["delta/model.layers.0.mlp.down_proj.weight"].shape  # [d_model, n]  # doctest: +SKIP
    torch.Size([576, 154])
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from taskneurons._io import (
    header_modules,
    read_tensors_with_sidecar,
    tensor_sidecar_paths,
    write_tensors_with_sidecar,
)
from taskneurons.neurons.neuron_set import NeuronSet, NeuronSetMismatchError
from taskneurons.provenance import check_same_model, provenance
from taskneurons.training.delta_hooks import DeltaEntry

#: File format tag written in the safetensors header and the JSON sidecar.
FORMAT = "taskneurons.NeuronDelta/1"


def delta_paths(path: str | os.PathLike, reading: bool = False) -> tuple[Path, Path]:
    """``(tensor file, JSON sidecar)`` for a ``.safetensors`` path or a folder."""
    return tensor_sidecar_paths(path, "delta", "neuron delta", reading)


def write_delta(
    path: str | os.PathLike,
    entries: Mapping[str, DeltaEntry],
    neurons: NeuronSet,
    fingerprint,
    dtype: torch.dtype,
    meta: Mapping | None = None,
    stored: torch.dtype | None = None,
) -> Path:
    """Write the deltas of ``entries`` (see :meth:`NeuronDelta.save`).

    Args:
        path: a ``.safetensors`` file or a folder (``delta.safetensors`` + ``delta.json``).
        entries: base parameter name -> its :class:`DeltaEntry`.
        neurons: the NeuronSet the deltas were built for.
        fingerprint: ``model_fingerprint`` of the base model.
        dtype: the delta dtype.
        meta: extra JSON-ready entries for the sidecar.
        stored: the dtype the deltas are written in (``None``: ``dtype``).

    Returns:
        The path of the ``.safetensors`` file.
    """
    stored = dtype if stored is None else stored
    tensor_path, meta_path = delta_paths(path)
    params = {
        n: {"dim": e.dim, "n": int(e.positions.numel()), "shape": list(e.delta.shape)}
        for n, e in entries.items()
    }
    sidecar = provenance(
        format=FORMAT,
        definition=neurons.definition,
        dtype=str(dtype).replace("torch.", ""),
        stored_dtype=str(stored).replace("torch.", ""),
        modules=neurons.modules,
        model_fingerprint=fingerprint,
        neurons_meta=neurons.meta,
        n_neurons=len(neurons),
        num_trainable=sum(e.delta.numel() for e in entries.values()),
        params=params,
        meta=dict(meta or {}),
    )
    tensors: dict[str, torch.Tensor] = {}
    for n, e in entries.items():
        tensors[f"delta/{n}"] = e.delta.detach().to("cpu", stored).contiguous()
        tensors[f"positions/{n}"] = e.positions.to("cpu").contiguous()
    for m, mask in neurons.masks.items():
        tensors[f"mask/{m}"] = mask.contiguous()
    header = {
        "format": FORMAT,
        "definition": neurons.definition,
        "modules": json.dumps(neurons.modules),
        "dims": json.dumps({n: e.dim for n, e in entries.items()}),
    }
    return write_tensors_with_sidecar(tensor_path, meta_path, tensors, header, sidecar)


def read_delta(
    path: str | os.PathLike, model: nn.Module, strict: bool = True
) -> tuple[Path, NeuronSet, torch.dtype, dict[str, torch.Tensor]]:
    """Read a delta file and check it was trained on ``model``.

    Returns:
        ``(tensor file, NeuronSet, delta dtype, tensors)``; ``tensors`` as stored (CPU).

    Raises:
        FileNotFoundError: the file or its sidecar is missing.
        ChangedFileError: either file does not match the checksum saved in it.
        ValueError: not a NeuronDelta file.
        NeuronSetMismatchError: the deltas were trained on another model.
    """
    tensor_path, meta_path = delta_paths(path, reading=True)
    header, tensors, sidecar = read_tensors_with_sidecar(
        tensor_path, meta_path, FORMAT, "NeuronDelta"
    )
    check_same_model(
        sidecar.get("model_fingerprint"),
        model,
        f"{tensor_path} (trained deltas)",
        strict=strict,
        hint="; pass a fresh copy of the base model (not one with the deltas merged), "
        "or strict=False",
        error=NeuronSetMismatchError,
    )
    held = [k[len("mask/") :] for k in tensors if k.startswith("mask/")]
    modules = header_modules(header, held, tensor_path)
    masks = {m: tensors[f"mask/{m}"] for m in modules}
    neurons = NeuronSet(header["definition"], masks, sidecar.get("neurons_meta") or {})
    dtype = getattr(torch, sidecar.get("dtype", "float32"))
    return tensor_path, neurons, dtype, tensors


def delta_state(
    tensor_path: Path, tensors: Mapping[str, torch.Tensor], entries: Mapping[str, DeltaEntry]
) -> dict[str, torch.Tensor]:
    """The stored deltas for ``entries`` (a state for :meth:`NeuronDelta.load_state_dict`).

    Raises:
        ValueError: a delta is missing, its positions differ from the model's layout, or the
            file holds deltas the layout does not select.
    """
    state = {}
    for n, e in entries.items():
        if f"delta/{n}" not in tensors:
            raise ValueError(f"{tensor_path} has no delta for {n}; it does not fit this model")
        saved_pos = tensors[f"positions/{n}"]
        if not torch.equal(saved_pos, e.positions.to("cpu")):
            raise ValueError(
                f"{tensor_path}: selected positions of {n} differ from the model's layout"
            )
        state[n] = tensors[f"delta/{n}"]
    extra = sorted(k[len("delta/") :] for k in tensors if k.startswith("delta/"))
    if extra != sorted(entries):
        raise ValueError(
            f"{tensor_path} holds deltas for {sorted(set(extra) - set(entries))[:5]} that "
            "this model's layout does not select"
        )
    return state
