"""NeuronSet: a selection of neurons of a :class:`~taskneurons.neurons.space.NeuronSpace`.

A set is one boolean mask ``[layers, units]`` per module of the space (``{"ffn": ...}`` for the
``ffn`` definition, ``{"gate": ..., "up": ..., "down": ...}`` for ``linear``), plus a ``meta``
record of how it was made (model fingerprint, definition, k, scope, task, data, seed, version).
Set algebra: ``a | b``, ``a & b``, ``a - b``. Ways to make one are in
:mod:`taskneurons.neurons.selection`.

Example:
    >>> s = NeuronSet("ffn", {"ffn": torch.tensor([[True, False], [False, True]])})
    >>> len(s), s.fraction()
    (2, 0.5)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from taskneurons._io import (
    header_modules,
    read_tensors_with_sidecar,
    tensor_sidecar_paths,
    write_tensors_with_sidecar,
)
from taskneurons.neurons.neuron_files import save_records
from taskneurons.neurons.neuron_files import verify as verify_records
from taskneurons.neurons.set_layout import (
    describe_layout,
    layout_difference,
    same_layout,
    shapes_of,
    unflatten,
)
from taskneurons.neurons.space import DEFINITIONS, Neuron, NeuronSpace
from taskneurons.provenance import ModelMismatchError, check_same_model, fingerprint_of

#: File format tag written in the safetensors header and the JSON sidecar.
FORMAT = "taskneurons.NeuronSet/1"


class NeuronSetMismatchError(ModelMismatchError):
    """A NeuronSet does not fit a model, a space or another set (the message says what differs)."""


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("taskneurons")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


@dataclass
class NeuronSet:
    """A set of neurons of one :class:`NeuronSpace`, as boolean masks.

    Attributes:
        definition: ``"ffn"`` or ``"linear"``.
        masks: module name -> ``torch.bool`` tensor ``[layers, units]``; ``True`` = selected.
            Modules are in the space's id order (``["ffn"]`` or the FFN's linear names).
        meta: how the set was made: ``model_fingerprint``, ``definition``, ``k``, ``scope``,
            ``rank_modules``, ``task``, ``data``/``examples_hash``, ``seed``, ``version``,
            ``scores_meta`` (the meta of the scores it came from), ...

    Example:
        >>> s = NeuronSet("ffn", {"ffn": torch.tensor([[True, False, True], [False] * 3])})
        >>> len(s), s.counts_per_layer()["ffn"].tolist(), s.indices("ffn", 0).tolist()
        (2, [2, 0], [0, 2])
    """

    definition: str
    masks: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.definition not in DEFINITIONS:
            raise ValueError(
                f"unknown neuron definition {self.definition!r}; use one of {DEFINITIONS}"
            )
        if not self.masks:
            raise ValueError("a NeuronSet needs at least one module mask")
        layers = set()
        for m, t in self.masks.items():
            if not isinstance(t, torch.Tensor) or t.dtype != torch.bool or t.dim() != 2:
                desc = (
                    f"{t.dtype} tensor of shape {tuple(t.shape)}"
                    if isinstance(t, torch.Tensor)
                    else type(t).__name__
                )
                raise ValueError(
                    f"mask of module {m!r} must be a torch.bool tensor [layers, units], got {desc}"
                )
            layers.add(t.shape[0])
        if len(layers) != 1:
            shapes = {m: tuple(t.shape) for m, t in self.masks.items()}
            raise ValueError(f"module masks have different layer counts: {shapes}")
        self.masks = {m: t.detach().to("cpu") for m, t in self.masks.items()}

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def empty(cls, space: NeuronSpace, meta: dict | None = None) -> NeuronSet:
        """The empty set of ``space`` (deactivating it is a no-op)."""
        return cls(space.definition, space.zeros(torch.bool), dict(meta or {}))

    @classmethod
    def from_neurons(
        cls, space: NeuronSpace, neurons: Iterable[tuple[int, str, int]], meta: dict | None = None
    ) -> NeuronSet:
        """The set of the given ``(layer, module, unit)`` coordinates of ``space``.

        Example:
            >>> s = NeuronSet.from_neurons(space, [(0, "ffn", 3), (1, "ffn", 0)])  # doctest: +SKIP
        """
        masks = space.zeros(torch.bool)
        for layer, module, unit in neurons:
            space.neuron_id(layer, module, unit)  # validates the coordinates
            masks[module][layer, unit] = True
        return cls(space.definition, masks, dict(meta or {}))

    @classmethod
    def from_ids(
        cls, space: NeuronSpace, ids: Iterable[int] | torch.Tensor, meta: dict | None = None
    ) -> NeuronSet:
        """The set of the given stable neuron ids of ``space`` (inverse of :meth:`ids`)."""
        flat = torch.zeros(space.size, dtype=torch.bool)
        idx = torch.as_tensor(list(ids) if not isinstance(ids, torch.Tensor) else ids).long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= space.size):
            raise IndexError(f"neuron ids must lie in [0, {space.size}), got {idx.tolist()[:10]}")
        flat[idx] = True
        return cls(space.definition, unflatten(flat, shapes_of(space)), dict(meta or {}))

    # -- shape -----------------------------------------------------------------------------------
    @property
    def modules(self) -> list[str]:
        """Module names in id order."""
        return list(self.masks)

    @property
    def n_layers(self) -> int:
        return next(iter(self.masks.values())).shape[0]

    def shape(self, module: str) -> tuple[int, int]:
        """``(layers, units)`` of one module."""
        return tuple(self.masks[module].shape)  # type: ignore[return-value]

    @property
    def size(self) -> int:
        """Number of neurons in the space (selected or not)."""
        return sum(t.numel() for t in self.masks.values())

    def shapes(self) -> dict[str, tuple[int, int]]:
        """Module -> ``(layers, units)``."""
        return {m: self.shape(m) for m in self.masks}

    def describe_shape(self) -> str:
        """Human-readable layout, e.g. ``"30 layers x 1536 units (definition 'ffn')"``."""
        return describe_layout(self.definition, self.shapes())

    # -- counting and listing ----------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of selected neurons."""
        return int(sum(int(t.sum()) for t in self.masks.values()))

    def __repr__(self) -> str:
        what = self.meta.get("task") or self.meta.get("kind") or ""
        tag = f", {what}" if what else ""
        return f"NeuronSet({len(self)} of {self.size} neurons, {self.describe_shape()}{tag})"

    def fraction(self) -> float:
        """Selected share of the space, in ``[0, 1]``."""
        return len(self) / self.size

    def counts_per_layer(self) -> dict[str, torch.Tensor]:
        """Module -> ``torch.long`` tensor ``[layers]``: selected neurons per layer."""
        return {m: t.sum(dim=1, dtype=torch.long) for m, t in self.masks.items()}

    def indices(self, module: str, layer: int) -> torch.Tensor:
        """Selected unit indices (ascending, ``torch.long`` ``[n]``) of ``module`` at ``layer``."""
        if module not in self.masks:
            raise KeyError(f"module {module!r} not in this NeuronSet's modules {self.modules}")
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} outside [0, {self.n_layers})")
        return self.masks[module][layer].nonzero().reshape(-1)

    def flat(self) -> torch.Tensor:
        """All masks in neuron-id order (layer-major, modules in order), ``torch.bool [size]``."""
        return torch.cat(list(self.masks.values()), dim=1).reshape(-1)

    def ids(self, space: NeuronSpace | None = None) -> torch.Tensor:
        """Stable neuron ids (ascending, ``torch.long [len(self)]``) as :class:`NeuronSpace` counts.

        ``space`` (optional) is checked to have this set's layout.
        """
        if space is not None:
            self.check_space(space)
        return self.flat().nonzero().reshape(-1)

    def to_neurons(self, space: NeuronSpace | None = None) -> list[Neuron]:
        """The selected neurons as ``Neuron(layer, module, unit)``, in id order."""
        if space is not None:
            self.check_space(space)
        out: list[Neuron] = []
        for layer in range(self.n_layers):
            for m, t in self.masks.items():
                out.extend(Neuron(layer, m, int(u)) for u in t[layer].nonzero().reshape(-1))
        return out

    # -- compatibility --------------------------------------------------------------------------
    def check_space(self, space: NeuronSpace) -> None:
        """Raise :class:`NeuronSetMismatchError` unless the set has ``space``'s layout."""
        space_shapes = shapes_of(space)
        if space.definition != self.definition or not same_layout(space_shapes, self.shapes()):
            raise NeuronSetMismatchError(
                f"neuron set has {self.describe_shape()}, model has "
                f"{describe_layout(space.definition, space_shapes)}"
                + layout_difference(self.definition, self.shapes(), space.definition, space_shapes)
            )

    def check_model(self, model: nn.Module, strict: bool = True) -> None:
        """Check layout (against ``NeuronSpace(model, definition)``) and the model fingerprint.

        The fingerprint's ``arch`` (config hash) must match; with ``strict`` its ``weights``
        (weight checksum) must match too. A set without a recorded fingerprint is only checked
        for its layout.
        """

        self.check_space(NeuronSpace(model, self.definition))  # type: ignore[arg-type]
        check_same_model(
            fingerprint_of(self.meta),
            model,
            "neuron set",
            strict=strict,
            hint=" (pass strict=False to accept the same architecture with other weights)",
            error=NeuronSetMismatchError,
        )

    def _check_same_layout(self, other: NeuronSet, op: str) -> None:
        if not isinstance(other, NeuronSet):
            raise TypeError(f"{op} needs two NeuronSets, got {type(other).__name__}")
        if other.definition != self.definition or not same_layout(other.shapes(), self.shapes()):
            raise NeuronSetMismatchError(
                f"cannot {op} neuron sets of different spaces: {self.describe_shape()} vs "
                f"{other.describe_shape()}"
            )

    # -- set algebra ---------------------------------------------------------------------------
    def _combine(self, other: NeuronSet, op: str, fn) -> NeuronSet:
        self._check_same_layout(other, op)
        masks = {m: fn(self.masks[m], other.masks[m]) for m in self.masks}
        meta: dict = {"op": op, "operands": [_summary(self.meta), _summary(other.meta)]}
        fa, fb = fingerprint_of(self.meta), fingerprint_of(other.meta)
        if fa is not None and fa == fb:
            meta["model_fingerprint"] = fa
        meta["definition"] = self.definition
        return NeuronSet(self.definition, masks, meta)

    def __or__(self, other: NeuronSet) -> NeuronSet:
        """Union."""
        return self._combine(other, "union", torch.logical_or)

    def __and__(self, other: NeuronSet) -> NeuronSet:
        """Intersection."""
        return self._combine(other, "intersection", torch.logical_and)

    def __sub__(self, other: NeuronSet) -> NeuronSet:
        """Difference: neurons of ``self`` not in ``other``."""
        return self._combine(other, "difference", lambda a, b: a & ~b)

    def __eq__(self, other: object) -> bool:
        """Same definition and the same selected neurons (``meta`` is ignored)."""
        if not isinstance(other, NeuronSet):
            return NotImplemented
        return (
            self.definition == other.definition
            and same_layout(self.shapes(), other.shapes())
            and all(torch.equal(self.masks[m], other.masks[m]) for m in self.masks)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    # -- files -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Save the masks as safetensors and the meta as a JSON sidecar, both atomically.

        ``path`` is a ``.safetensors`` file (sidecar: same name with ``.json``) or a folder
        (files ``neurons.safetensors`` and ``neurons.json`` inside it). Nothing half-written is
        left behind on failure: the meta is serialised before any file is touched, and each file
        is written to a temporary name and renamed. The neuron count and a checksum of the
        masks go into both files, and a checksum of the meta into the sidecar (see
        :mod:`taskneurons.neurons.neuron_files`); the saved meta's ``count`` is the masks' count.

        Returns:
            The path of the ``.safetensors`` file.
        """
        tensor_path, meta_path = _paths(path)
        checks, records = save_records(self.masks, self.meta)  # fails before any file is touched
        sidecar = {"format": FORMAT, "definition": self.definition, **records}
        # safetensors sorts tensor names; the module order (= neuron-id order) goes in the header
        header = {
            "format": FORMAT,
            "definition": self.definition,
            "modules": json.dumps(self.modules),
            **checks,
        }
        tensors = {m: t.contiguous() for m, t in self.masks.items()}
        # the mask and meta checksums above are this file kind's own (no generic seal)
        return write_tensors_with_sidecar(
            tensor_path, meta_path, tensors, header, sidecar, seal=False
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        model: nn.Module | None = None,
        space: NeuronSpace | None = None,
        strict: bool = True,
    ) -> NeuronSet:
        """Load a set written by :meth:`save`, optionally checking it against a model or space.

        Args:
            path: the ``.safetensors`` file or the folder it was saved into.
            model: check layout against ``NeuronSpace(model, definition)`` and the recorded
                model fingerprint (``arch``; also ``weights`` when ``strict``).
            space: check the layout against this space (its model's fingerprint too).
            strict: also require the same weights checksum.

        Raises:
            FileNotFoundError: the file or its JSON sidecar is missing.
            ValueError: the file is not a NeuronSet file, or it is damaged or was edited: its
                masks do not match the checksum or count saved with them, its meta does not
                match its checksum, or the sidecar belongs to another set (message names the
                file). The loaded meta's ``count`` is the number of neurons the masks select.
            NeuronSetMismatchError: the set does not fit ``model``/``space`` (message says how).
        """

        tensor_path, meta_path = _paths(path, reading=True)
        header, masks, sidecar = read_tensors_with_sidecar(
            tensor_path, meta_path, FORMAT, "NeuronSet"
        )
        order = header_modules(header, list(masks), tensor_path)
        masks = {m: masks[m] for m in order}
        meta = verify_records(masks, header, sidecar, (tensor_path, meta_path))
        out = cls(header["definition"], masks, meta)
        if model is None and space is not None:
            model = space.adapter.model
        if space is not None:
            out.check_space(space)
        if model is not None:
            out.check_model(model, strict=strict)
        return out


def space_for(
    model: nn.Module, neurons: NeuronSet, space: NeuronSpace | None = None, purpose: str = "use"
) -> NeuronSpace:
    """The :class:`NeuronSpace` of ``model`` that ``neurons`` must fit (built if not given).

    Raises:
        TypeError: ``neurons`` is not a :class:`NeuronSet`.
        NeuronSetMismatchError: ``space`` belongs to another model object, or the set does
            not fit the space (message gives both layouts).
    """
    if not isinstance(neurons, NeuronSet):
        raise TypeError(f"neurons must be a NeuronSet, got {type(neurons).__name__}")
    if space is None:
        space = NeuronSpace(model, neurons.definition)  # type: ignore[arg-type]
    elif space.adapter.model is not model:
        raise NeuronSetMismatchError(
            f"the given NeuronSpace was built on another model object than the one to {purpose}"
        )
    neurons.check_space(space)
    return space


def _summary(meta: Mapping) -> dict:
    keys = ("task", "kind", "k", "scope", "seed", "op")
    return {k: meta[k] for k in keys if k in meta}


def _paths(path: str | os.PathLike, reading: bool = False) -> tuple[Path, Path]:
    """``(tensor file, JSON sidecar)`` for a ``.safetensors`` path or a folder."""
    return tensor_sidecar_paths(path, "neurons", "neuron set", reading)
