"""What a local model folder must hold, checked before Transformers reads it.

A Hugging Face model folder needs a readable ``config.json`` naming a ``model_type`` of a family
taskneurons supports (:data:`~taskneurons.models.adapters.ADAPTER_TABLE`), weights and tokenizer
files. Each lack is one :class:`ModelLoadError` (an unsupported family: an
:class:`~taskneurons.models.adapters.UnsupportedModelError`) that says what is wrong, instead of
a damaged download or a tokenizer problem reported by whichever reader tripped first.

Example:
    >>> check_model_folder(Path("runs/mt/model"), ["smollm2-135m"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from taskneurons.models.adapters import (
    UnsupportedModelError,
    spec_for_model_type,
    supported_families,
)


class ModelLoadError(RuntimeError):
    """A model spec could not be loaded; the message says why and what to do."""


#: Patterns of the files that hold a checkpoint's weights (one must be in a model folder).
WEIGHT_FILES = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "*.bin.index.json",
)

#: Files a tokenizer can be loaded from (one of them must be in a model folder).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def check_model_folder(folder: Path, embedded: Sequence[str]) -> None:
    """Raise naming what the model folder lacks: config, architecture, weights, tokenizer.

    ``embedded``: the embedded model names (offered when the folder is no model folder).

    Raises:
        ModelLoadError: no ``config.json``, one that is not a JSON object, or no weights or
            tokenizer files.
        UnsupportedModelError: ``config.json`` names no ``model_type``.
    """
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"{folder} is not a Hugging Face model folder (no config.json); give a folder "
            f"saved with save_pretrained, a .gguf file, a hub id, or one of {sorted(embedded)}"
        )
    check_architecture(folder / "config.json")
    if not any(f.is_file() for pattern in WEIGHT_FILES for f in folder.glob(pattern)):
        raise ModelLoadError(
            f"{folder} has a config.json but no model weights (no model.safetensors, "
            "pytorch_model.bin or sharded index); save the model there with save_pretrained "
            "or download it again"
        )
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); save the "
            "tokenizer there with tokenizer.save_pretrained(folder)"
        )


def check_architecture(path: Path) -> None:
    """``config.json`` at ``path`` is a JSON object that names a ``model_type``."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ModelLoadError(
            f"{path} is not valid JSON{where} ({why}); the model's config is damaged or was cut "
            "short (an interrupted download or copy): save or download the model again"
        ) from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} is not a model config (expected a JSON object)")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UnsupportedModelError(
            f"{path} names no model_type, so the architecture is unknown; taskneurons needs a "
            f"Hugging Face causal LM of one of these families: {', '.join(supported_families())}"
        )


def unsupported(folder: Path) -> UnsupportedModelError | None:
    """Why the model in ``folder`` failed to load when its family is not supported (T5, BERT:
    not a causal LM Transformers loads as one); ``None`` when it is supported."""
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_type"]
    try:
        spec_for_model_type(model_type)
    except UnsupportedModelError as exc:
        return UnsupportedModelError(f"{folder / 'config.json'}: {exc}")
    return None
