"""NeuronScores: one relevance value per neuron, laid out per module as ``[layers, units]``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from taskneurons._io import atomic_path, check_header, header_modules, seal_header


@dataclass
class NeuronScores:
    """Relevance scores of every neuron of a :class:`~taskneurons.neurons.space.NeuronSpace`.

    Attributes:
        definition: ``ffn`` or ``linear``.
        scores: module name -> float32 tensor ``[layers, units]`` (non-negative relevance,
            in loss units: first-order ``|ΔL|`` per example, see ``meta["aggregate"]``).
        meta: how the scores were made (task, aggregate, loss, examples, tokens, model
            fingerprint, ...).

    Example:
        >>> s = NeuronScores("ffn", {"ffn": torch.rand(2, 8)})
        >>> s.shape("ffn")
        (2, 8)
    """

    definition: str
    scores: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)

    @property
    def modules(self) -> list[str]:
        return list(self.scores)

    def shape(self, module: str) -> tuple[int, int]:
        return tuple(self.scores[module].shape)  # type: ignore[return-value]

    @property
    def size(self) -> int:
        return sum(t.numel() for t in self.scores.values())

    def flat(self) -> torch.Tensor:
        """All scores in neuron-id order (layer-major, modules in order), ``[size]``."""
        return torch.cat([t for t in self.scores.values()], dim=1).reshape(-1)

    def save(self, path: str | os.PathLike) -> Path:
        """Save as safetensors (tensors) with the metadata as JSON in the header, and the
        checksum of both (:func:`~taskneurons._io.seal_header`)."""
        from safetensors.torch import save_file

        path = Path(path)
        # safetensors sorts tensor names: the module (= neuron-id) order goes in the header
        header = {
            "definition": self.definition,
            "modules": json.dumps(list(self.scores)),
            "meta": json.dumps(self.meta, default=str),
        }
        tensors = {m: t.contiguous() for m, t in self.scores.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=seal_header(header, tensors))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> NeuronScores:
        """The scores saved in ``path``.

        Raises:
            ChangedFileError: the file does not match the checksum saved in it (a file
                written before checksums has none and is read as it is).
            ValueError: not a scores file.
        """
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            scores = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        header = check_header(header, scores, path)
        if "definition" not in header:
            raise ValueError(f"{path} is not a taskneurons scores file (no 'definition' in header)")
        order = header_modules(header, list(scores), Path(path))
        scores = {m: scores[m] for m in order}
        return cls(header["definition"], scores, json.loads(header.get("meta", "{}")))
