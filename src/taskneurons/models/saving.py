"""Saving a (fine-tuned) model as a Hugging Face folder that :func:`load_model` reads back.

:func:`save_finetuned` writes the model, its tokenizer and a ``taskneurons_model.json``
provenance record into a folder, atomically: everything goes into a hidden sibling folder first,
which is renamed into place only once complete; a folder already there is replaced only then.
So an experiment file can name the folder as its ``model:`` and never meets a half-written one.
:func:`seal_saved_model` adds to that record the checksum of every other file of the folder
(``file_checksums``) and its own (``checksum``); :func:`check_saved_model` (called by
:func:`load_model` on a folder) verifies them, so weights changed after saving are refused
instead of used.

Example:
    >>> save_finetuned(model, tok, "runs/mt/model", {"note": "tuned"})  # doctest: +SKIP
    >>> model, tok = load_model("runs/mt/model")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons._io import (
    ChangedFileError,
    changed_message,
    check_record,
    file_checksum,
    give_umask_mode,
    write_json_atomic,
    write_json_sealed,
)
from taskneurons._ranks import one_writer
from taskneurons.models.gguf import save_plain_checkpoint

#: The provenance record inside a folder written by :func:`save_finetuned`.
MODEL_META = "taskneurons_model.json"
#: The key of :data:`MODEL_META` holding the checksum of every other file, by relative path.
FILES_KEY = "file_checksums"


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``path``; put it at ``path`` only on success.

    The temporary folder is ``.<name>.tmp-<pid>`` in the same parent (so the final rename stays
    on one file system). On an exception it is removed and ``path`` is left as it was. An
    existing ``path`` is moved aside, the new folder renamed into place, and the old one deleted;
    if that rename fails the old folder is put back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of an earlier crash of this very pid
    tmp.mkdir()
    try:
        yield tmp
        give_umask_mode(tmp)  # save_pretrained writes safetensors as 0600
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_finetuned(
    model: nn.Module, tokenizer, folder: str | os.PathLike, meta: Mapping[str, Any]
) -> Path:
    """Write ``model`` and ``tokenizer`` as a Hugging Face folder, with ``meta`` beside them.

    The weights go through ``save_pretrained`` as safetensors in the parameters' dtype (recorded
    in ``config.json``, so ``load_model(folder, dtype=...)`` with the same dtype gives the very
    same weights); tied embeddings stay tied through the config. A model straight from a GGUF
    file (its first, uncached load) refuses ``save_pretrained``; it is written the way the GGUF
    cache is (dequantized safetensors and config). ``meta`` becomes ``taskneurons_model.json``
    (:func:`seal_saved_model` then adds the checksums of the files).

    Returns:
        ``folder``.

    Raises:
        Whatever writing raises; ``folder`` is then as it was before, and no temporary folder
        is left.
    """
    folder = Path(folder)
    with one_writer() as writes:  # several processes: the main one writes (taskneurons._ranks)
        if writes:
            _save_into(model, tokenizer, folder, meta)
    return folder


def _save_into(model: nn.Module, tokenizer, folder: Path, meta: Mapping[str, Any]) -> None:
    """:func:`save_finetuned`'s write, in this process."""
    with atomic_folder(folder) as tmp:
        if getattr(model, "hf_quantizer", None) is not None:
            save_plain_checkpoint(model, tmp)
        else:
            model.save_pretrained(tmp)  # model.safetensors + config.json
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / MODEL_META, dict(meta))


#: The model attribute (and ``taskneurons_model.json`` key) holding the keys
#: (:func:`taskneurons.data.tasks.example_key`) of the examples the model was fine-tuned on.
TUNED_ON = "tuned_on"


def tuned_on(model: nn.Module) -> frozenset[str] | None:
    """The keys of the examples ``model`` was fine-tuned on, ``None`` when it records none (a
    base model, or one fine-tuned elsewhere or before this record existed).

    Example:
        >>> mark_tuned(model, {"3f2a..."}); "3f2a..." in tuned_on(model)  # doctest: +SKIP
        True
    """
    return getattr(model, f"taskneurons_{TUNED_ON}", None)


def mark_tuned(model: nn.Module, keys) -> None:
    """Record on ``model`` that it was fine-tuned on the examples of ``keys`` (added to what it
    records already)."""
    setattr(model, f"taskneurons_{TUNED_ON}", frozenset(tuned_on(model) or ()) | set(keys))


def read_tuned_on(folder: str | os.PathLike) -> frozenset[str] | None:
    """The ``tuned_on`` keys a saved model folder's ``taskneurons_model.json`` records
    (``None``: no record, or a record without them)."""
    path = Path(folder) / MODEL_META
    if not path.is_file():
        return None
    keys = json.loads(path.read_text(encoding="utf-8")).get(TUNED_ON)
    return frozenset(keys) if keys is not None else None


def seal_saved_model(folder: str | os.PathLike) -> Path:
    """Add to the ``taskneurons_model.json`` of a folder written by :func:`save_finetuned` the
    checksum of every other file of the folder (:data:`FILES_KEY`) and its own (atomically).

    Returns:
        The record's path.
    """
    folder = Path(folder)
    path = folder / MODEL_META
    meta = json.loads(path.read_text(encoding="utf-8"))
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != path)
    sums = {p.relative_to(folder).as_posix(): file_checksum(p) for p in files}
    return write_json_sealed(path, {**meta, FILES_KEY: sums})


def check_saved_model(folder: str | os.PathLike) -> None:
    """Verify a folder written by :func:`save_finetuned` against the checksums in its
    ``taskneurons_model.json`` (:func:`seal_saved_model`); a folder without them (any other
    model folder, or one saved unsealed or before checksums) passes.

    Raises:
        ChangedFileError: ``taskneurons_model.json`` or a file it lists was changed after
            saving (the message names the file), or a listed file is missing.
        ValueError: ``taskneurons_model.json`` is not readable JSON.
    """
    folder = Path(folder)
    path = folder / MODEL_META
    if not path.is_file():
        return
    try:
        record = check_record(json.loads(path.read_text(encoding="utf-8")), path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from None
    listed = record.get(FILES_KEY) if isinstance(record, dict) else None
    for name, recorded in (listed or {}).items():
        file = folder / name
        if not file.is_file():
            raise ChangedFileError(
                f"{file} is missing; {path} lists it among the files of the saved model, so "
                "the folder is incomplete: save the model again"
            )
        if file_checksum(file) != recorded:
            raise ChangedFileError(changed_message(file, "content", f"in {path}"))
