"""Saving a (fine-tuned) model as a Hugging Face folder that :func:`load_model` reads back.

:func:`save_finetuned` writes the model, its tokenizer and a ``taskneurons_model.json``
provenance record into a folder, atomically: everything goes into a hidden sibling folder first,
which is renamed into place only once complete; a folder already there is replaced only then.
So an experiment file can name the folder as its ``model:`` and never meets a half-written one.

Example:
    >>> save_finetuned(model, tok, "runs/mt/model", {"note": "tuned"})  # doctest: +SKIP
    >>> model, tok = load_model("runs/mt/model")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.models.gguf import save_plain_checkpoint

#: The provenance record inside a folder written by :func:`save_finetuned`.
MODEL_META = "taskneurons_model.json"


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
    cache is (dequantized safetensors and config). ``meta`` becomes ``taskneurons_model.json``.

    Returns:
        ``folder``.

    Raises:
        Whatever writing raises; ``folder`` is then as it was before, and no temporary folder
        is left.
    """
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        if getattr(model, "hf_quantizer", None) is not None:
            save_plain_checkpoint(model, tmp)
        else:
            model.save_pretrained(tmp)  # model.safetensors + config.json
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / MODEL_META, dict(meta))
    return folder
