"""Neuron sets in formats other tools read: LAPE's ``.pth`` lists and a plain JSON form.

* **LAPE** (Tang et al. 2024, ``activation_mask`` files): ``torch.save`` of a list holding one
  ``torch.long`` tensor of unit indices per layer (one set), or a list of such lists (one set per
  language / task, in order). Only ``ffn`` neurons; the file records no unit count, so the
  model's is used.
* **JSON** (:data:`JSON_FORMAT`): ``{"format", "definition", "shape": {module: [layers, units]},
  "neurons": {"layer": [units]}, "provenance": {...}}`` for one set (``linear`` sets hold
  ``{module: {"layer": [units]}}``), or ``{"format", "sets": {task: <one set>}}`` for several.
  A bare ``{"layer": [units], ...}`` mapping is read as one ``ffn`` set.

:func:`read_set_file` parses a file without any model (a malformed file is refused in one line
naming it); :func:`fit_sets` turns what it read into :class:`NeuronSet` s of a model's space,
refusing layers or units out of its range.

Example:
    >>> s = NeuronSet("ffn", {"ffn": torch.tensor([[True, False], [False, True]])})
    >>> to_lape(s)
    [tensor([0]), tensor([1])]
    >>> to_json({"t": s})["sets"]["t"]["neurons"]
    {'0': [0], '1': [1]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from taskneurons._io import atomic_path, write_json_atomic
from taskneurons.neurons.neuron_files import plain_meta
from taskneurons.neurons.neuron_set import NeuronSet, NeuronSetMismatchError
from taskneurons.neurons.set_layout import shapes_of
from taskneurons.neurons.space import NeuronSpace

#: the format tag of the JSON form
JSON_FORMAT = "taskneurons.neurons-json/1"
#: suffixes read as LAPE files (anything else is read as JSON)
LAPE_SUFFIXES = (".pth", ".pt")


@dataclass
class ReadSet:
    """One set as a file holds it, before it meets a model.

    Attributes:
        units: module -> ``[per layer: unit indices]`` (``None`` for a layer the file omits).
        definition: ``"ffn"`` or ``"linear"``.
        n_layers: layers the file says it covers (LAPE: its list length; JSON: ``shape``).
        shape: module -> ``(layers, units)`` when the file records it.
        meta: the provenance the file holds.
    """

    units: dict[str, dict[int, list[int]]]
    definition: str = "ffn"
    n_layers: int | None = None
    shape: dict[str, tuple[int, int]] | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class SetFile:
    """What :func:`read_set_file` read: named sets (JSON ``sets``) or sets in order (LAPE)."""

    path: Path
    kind: str
    sets: list[tuple[str | None, ReadSet]]


# -- export -------------------------------------------------------------------------------------
def to_lape(neurons: NeuronSet) -> list[torch.Tensor]:
    """LAPE's form of one ``ffn`` set: one ``torch.long`` tensor of unit indices per layer.

    Raises:
        ValueError: a ``linear`` set (LAPE holds one module per layer).
    """
    if neurons.definition != "ffn":
        raise ValueError(
            f"LAPE files hold ffn neurons only; this set is of definition "
            f"{neurons.definition!r}: export it as JSON"
        )
    return [neurons.indices("ffn", layer).clone() for layer in range(neurons.n_layers)]


def _one_json(neurons: NeuronSet) -> dict[str, Any]:
    per_module = {
        m: {str(layer): neurons.indices(m, layer).tolist() for layer in range(neurons.n_layers)}
        for m in neurons.modules
    }
    return {
        "definition": neurons.definition,
        "shape": {m: list(s) for m, s in neurons.shapes().items()},
        "neurons": per_module["ffn"] if neurons.definition == "ffn" else per_module,
        "provenance": plain_meta(neurons.meta),
    }


def to_json(sets: Mapping[str, NeuronSet]) -> dict[str, Any]:
    """The JSON form of named sets: ``{"format", "sets": {name: {..., "neurons": {layer:
    [units]}, "provenance"}}}``."""
    return {"format": JSON_FORMAT, "sets": {name: _one_json(s) for name, s in sets.items()}}


def write_set_file(sets: Mapping[str, NeuronSet], path: str | os.PathLike) -> Path:
    """Write ``sets`` as LAPE (``.pth``/``.pt``: a list per set, one set alone) or JSON."""
    path = Path(path)
    if path.suffix in LAPE_SUFFIXES:
        lists = [to_lape(s) for s in sets.values()]
        with atomic_path(path) as tmp:  # several processes: the main one writes
            torch.save(lists[0] if len(lists) == 1 else lists, tmp)
        return path
    return write_json_atomic(path, to_json(sets))


# -- import -------------------------------------------------------------------------------------
class SetFileError(ValueError):
    """A neuron-set file that cannot be read (the message names it and says why)."""


def read_set_file(path: str | os.PathLike) -> SetFile:
    """Parse a LAPE ``.pth``/``.pt`` or a JSON neuron-set file (no model needed).

    Raises:
        FileNotFoundError: no such file.
        SetFileError: not a neuron-set file of either form (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"neuron set file not found: {path}")
    if path.suffix in LAPE_SUFFIXES:
        return SetFile(path, "lape", _read_lape(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SetFileError(f"{path}: not a JSON neuron-set file ({exc})") from None
    return SetFile(path, "json", _read_json(data, path))


def _read_lape(path: Path) -> list[tuple[str | None, ReadSet]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a file that is no torch file
        raise SetFileError(f"{path}: not a torch file LAPE wrote ({exc})".splitlines()[0]) from None
    if not isinstance(obj, (list, tuple)) or not obj:
        raise SetFileError(
            f"{path}: a LAPE file holds a list (one entry per layer), got {obj!r:.40}"
        )
    nested = all(isinstance(x, (list, tuple)) for x in obj)
    lists = obj if nested else [obj]
    return [(None, _lape_set(layers, path, i)) for i, layers in enumerate(lists)]


def _lape_set(layers, path: Path, index: int) -> ReadSet:
    units: dict[int, list[int]] = {}
    for layer, entry in enumerate(layers):
        t = torch.as_tensor(entry) if not isinstance(entry, torch.Tensor) else entry
        if t.dim() > 1 or t.is_floating_point() or t.dtype == torch.bool:
            raise SetFileError(
                f"{path}: set {index}, layer {layer}: expected a 1-d tensor of unit indices, got "
                f"{t.dtype} of shape {tuple(t.shape)}"
            )
        units[layer] = [int(u) for u in t.reshape(-1).tolist()]
    return ReadSet({"ffn": units}, "ffn", n_layers=len(layers), meta={"source": str(path)})


def _read_json(data: Any, path: Path) -> list[tuple[str | None, ReadSet]]:
    if not isinstance(data, dict):
        raise SetFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if "sets" in data:
        if not isinstance(data["sets"], dict) or not data["sets"]:
            raise SetFileError(f"{path}: 'sets' must map set names to sets")
        return [(str(n), _json_set(s, path, f"sets.{n}")) for n, s in data["sets"].items()]
    if "neurons" in data:
        return [(None, _json_set(data, path, ""))]
    return [(None, _json_set({"neurons": data}, path, ""))]  # bare {"layer": [units]}


def _json_set(entry: Any, path: Path, where: str) -> ReadSet:
    at = f"{path}: {where + ': ' if where else ''}"
    if not isinstance(entry, dict) or not isinstance(entry.get("neurons"), dict):
        raise SetFileError(f"{at}expected {{'neurons': {{layer: [units]}}, ...}}")
    definition = entry.get("definition", "ffn")
    if definition not in ("ffn", "linear"):
        raise SetFileError(f"{at}definition must be 'ffn' or 'linear', got {definition!r}")
    raw = entry["neurons"] if definition == "linear" else {"ffn": entry["neurons"]}
    units = {str(m): _layer_units(v, f"{at}neurons: {m}: ") for m, v in raw.items()}
    shape = entry.get("shape")
    if shape is not None and not _is_shape(shape):
        raise SetFileError(f"{at}shape must map modules to [layers, units], got {shape!r:.60}")
    shape = {m: (int(s[0]), int(s[1])) for m, s in shape.items()} if shape else None
    meta = entry.get("provenance") or {}
    if not isinstance(meta, dict):
        raise SetFileError(f"{at}provenance must be a JSON object")
    n_layers = next(iter(shape.values()))[0] if shape else None
    return ReadSet(units, definition, n_layers, shape, dict(meta))


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, dict) and all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(x, int) for x in s)
        for s in shape.values()
    )


def _layer_units(value: Any, at: str) -> dict[int, list[int]]:
    if not isinstance(value, dict):
        raise SetFileError(f"{at}expected {{layer: [units]}}, got {type(value).__name__}")
    out: dict[int, list[int]] = {}
    for key, units in value.items():
        if not str(key).lstrip("-").isdigit():
            raise SetFileError(f"{at}layer keys must be integers, got {key!r}")
        if not isinstance(units, list) or not all(
            isinstance(u, int) and not isinstance(u, bool) for u in units
        ):
            raise SetFileError(f"{at}layer {key}: expected a list of unit indices")
        out[int(key)] = units
    return out


# -- onto a model's space -------------------------------------------------------------------------
def from_read(read: ReadSet, shapes: Mapping[str, tuple[int, int]], where: str) -> NeuronSet:
    """The :class:`NeuronSet` of ``read`` in a space of ``shapes`` (module -> (layers, units)).

    Raises:
        NeuronSetMismatchError: other modules, another layer count, or a layer or unit out of
            the space's range (``where`` names the file and set).
    """
    shapes = shapes_of(shapes)
    if set(read.units) != set(shapes):
        raise NeuronSetMismatchError(
            f"{where}: holds modules {sorted(read.units)}, the model's {read.definition} "
            f"neurons are {list(shapes)}"
        )
    n_layers = next(iter(shapes.values()))[0]
    if read.n_layers is not None and read.n_layers != n_layers:
        raise NeuronSetMismatchError(
            f"{where}: covers {read.n_layers} layers, the model has {n_layers}"
        )
    masks = {m: torch.zeros(s, dtype=torch.bool) for m, s in shapes.items()}
    for module, per_layer in read.units.items():
        width = shapes[module][1]
        for layer, units in per_layer.items():
            if not 0 <= layer < n_layers:
                raise NeuronSetMismatchError(
                    f"{where}: layer {layer} outside the model's layers 0..{n_layers - 1}"
                )
            bad = [u for u in units if not 0 <= u < width]
            if bad:
                raise NeuronSetMismatchError(
                    f"{where}: layer {layer}: unit {bad[0]} outside the model's units "
                    f"0..{width - 1}"
                )
            masks[module][layer, units] = True
    return NeuronSet(read.definition, masks, dict(read.meta))


def fit_sets(found: SetFile, space_of, tasks: list[str]) -> dict[str, NeuronSet]:
    """Each task's set from ``found``: by name (JSON ``sets``), else in the tasks' order; one
    unnamed set serves a run of one task. ``space_of(definition)`` is the model's space.

    Raises:
        NeuronSetMismatchError: a task without a set, another number of sets than tasks, or
            a set that does not fit the space (message names the file).
    """
    named = all(name is not None for name, _ in found.sets)
    if named:
        by_name = dict(found.sets)
        missing = [t for t in tasks if t not in by_name]
        if missing:
            raise NeuronSetMismatchError(
                f"{found.path}: no set for tasks {missing}; it holds {sorted(by_name)}"
            )
        pairs = [(t, by_name[t]) for t in tasks]
    elif len(found.sets) == len(tasks):
        pairs = [(t, s) for t, (_, s) in zip(tasks, found.sets, strict=True)]
    else:
        raise NeuronSetMismatchError(
            f"{found.path}: holds {len(found.sets)} set(s) in order, the run has "
            f"{len(tasks)} tasks ({', '.join(tasks)}); give one set per task"
        )
    out = {}
    for task, read in pairs:
        space: NeuronSpace = space_of(read.definition)
        out[task] = from_read(read, shapes_of(space), f"{found.path} (set of {task})")
        out[task].meta.setdefault("task", task)
    return out
