"""Integrity records of saved :class:`~taskneurons.neurons.neuron_set.NeuronSet` files.

:meth:`NeuronSet.save` writes, beside the masks, what lets :meth:`NeuronSet.load` tell a
damaged or edited file from a good one:

* ``count`` (the number of selected neurons) and ``mask_sha256`` (:func:`mask_checksum`: the
  SHA-256 of each module's name, shape and bit-packed mask, in module order) in the
  safetensors header and in the JSON sidecar;
* ``meta_sha256`` (:func:`meta_checksum`: the SHA-256 of the meta as canonical JSON) in the
  sidecar, so a hand-edited ``k``, ``count``, task or model fingerprint is noticed.

:func:`verify` checks them on load. Files of older versions have none of them: their masks
are only checked to hold 0/1 bytes and to select ``meta["count"]`` neurons (when recorded).
Either way the loaded meta's ``count`` is the recomputed one, so results record the neurons
actually used.

Example:
    >>> masks = {"ffn": torch.tensor([[True, False], [False, False]])}
    >>> mask_checksum(masks)[:12]
    '81f778ef954b'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Sidecar key of the meta checksum; deleting it from a sidecar accepts a deliberate edit.
META_KEY = "meta_sha256"


def mask_checksum(masks: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of the masks in module order: ``name:LAYERSxUNITS;`` + packed bits each."""
    h = hashlib.sha256()
    for module, mask in masks.items():
        layers, units = mask.shape
        h.update(f"{module}:{layers}x{units};".encode())
        h.update(np.packbits(mask.detach().cpu().numpy().reshape(-1)).tobytes())
    return h.hexdigest()


def plain_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` as the JSON sidecar holds it (tensors as lists, paths as strings).

    Raises:
        TypeError: a value JSON cannot hold (before any file is touched).
    """
    return json.loads(json.dumps(dict(meta), default=_json_default))


def meta_checksum(meta: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a plain (JSON-loaded) meta as sorted, compact JSON."""
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save_records(
    masks: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, Any]]:
    """``(header entries, sidecar entries)`` for a set about to be saved.

    The sidecar entries hold the meta (plain, with ``count`` set to the masks' count), its
    checksum, the count and the mask checksum; the header entries hold the count and the mask
    checksum as strings.
    """
    count = int(sum(int(t.sum()) for t in masks.values()))
    digest = mask_checksum(masks)
    meta_out = plain_meta(meta)
    meta_out["count"] = count
    header = {"count": str(count), "mask_sha256": digest}
    sidecar = {
        "count": count,
        "mask_sha256": digest,
        META_KEY: meta_checksum(meta_out),
        "meta": meta_out,
    }
    return header, sidecar


def verify(
    masks: Mapping[str, torch.Tensor],
    header: Mapping[str, str],
    sidecar: Mapping[str, Any],
    paths: tuple[Path, Path],
) -> dict[str, Any]:
    """Check loaded masks against the records saved with them; return the meta to use.

    ``paths`` are the tensor file and the JSON sidecar (named in the messages). The returned
    meta is the sidecar's with ``count`` set to the number of neurons the masks select.

    Raises:
        ValueError: mask bytes other than 0/1, masks that do not match their checksum, a
            sidecar of another set, a meta edited after saving, or a recorded count that is not
            the masks' count; the message names the file.
    """
    tensor_path, meta_path = paths
    _check_bytes(masks, tensor_path)
    count = int(sum(int(t.sum()) for t in masks.values()))
    digest = mask_checksum(masks)
    if "mask_sha256" in header and header["mask_sha256"] != digest:
        raise ValueError(
            f"{tensor_path}: the neuron masks do not match the checksum saved with them "
            f"({count} neurons selected, {header.get('count', '?')} saved); the file is "
            "damaged or was edited: detect the neurons again"
        )
    if "mask_sha256" in sidecar and sidecar["mask_sha256"] != digest:
        raise ValueError(
            f"{meta_path}: its mask checksum does not match the masks in {tensor_path}; the two "
            "files do not belong together"
        )
    meta = sidecar.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: 'meta' must be a JSON object, got {type(meta).__name__}")
    if META_KEY in sidecar and sidecar[META_KEY] != meta_checksum(meta):
        raise ValueError(
            f"{meta_path}: the meta was edited after saving (its checksum does not match), so "
            "its k, count, task and model cannot be trusted; save the set again, or delete the "
            f'"{META_KEY}" entry to accept the edit'
        )
    _check_counts(count, header, sidecar, meta, paths)
    return {**meta, "count": count}


def _check_bytes(masks: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise unless every mask byte is 0 or 1 (another byte is no valid ``bool``)."""
    for module, mask in masks.items():
        raw = mask.contiguous().view(torch.uint8)
        if bool((raw > 1).any()):
            raise ValueError(
                f"{path}: the mask of module {module!r} holds byte values other than 0 and 1; "
                "the file is damaged"
            )


def _check_counts(
    count: int,
    header: Mapping[str, str],
    sidecar: Mapping[str, Any],
    meta: Mapping[str, Any],
    paths: tuple[Path, Path],
) -> None:
    """Raise unless every recorded count (header, sidecar, ``meta["count"]``) is ``count``."""
    tensor_path, meta_path = paths
    recorded = [
        (tensor_path, "header count", header.get("count")),
        (meta_path, "count", sidecar.get("count")),
        (meta_path, 'meta "count"', meta.get("count")),
    ]
    for where, what, value in recorded:
        if value is not None and not _same_count(value, count):
            raise ValueError(
                f"{where}: {what} is {value!r} but the masks in {tensor_path} select {count} "
                "neurons; the file was edited or damaged: detect the neurons again"
            )


def _same_count(value: Any, count: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value.strip() == str(count)
    return isinstance(value, (int, float)) and value == count


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
