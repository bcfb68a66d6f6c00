"""GGUF files: dequantized by Transformers on the first load, then read from a cache.

Transformers dequantizes a ``.gguf`` file (through the ``gguf`` package), which is slow; the
result is saved once as a plain checkpoint (safetensors weights, config, tokenizer) in the cache
folder (``$TASKNEURONS_CACHE``, default ``~/.cache/taskneurons``), under ``gguf/<stem>-<key>``
with a key of the file's contents, and later loads read that folder instead.

Example:
    >>> model, tok, cached = load_gguf(Path("model.Q4_1.gguf"), torch.float32)  # doctest: +SKIP
    >>> cached.parent == cache_root() / "gguf"  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from taskneurons._io import current_umask, give_umask_mode

log = logging.getLogger(__name__)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: the argument, ``$TASKNEURONS_CACHE``, or ``~/.cache/taskneurons``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("TASKNEURONS_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "taskneurons"


def _file_key(path: Path) -> str:
    """Content key of a file: size + SHA-256 of its first and last MiB."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        if size > (2 << 20):
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def save_plain_checkpoint(model: nn.Module, folder: Path) -> None:
    """Save a model's weights as safetensors + config (Transformers refuses GGUF-loaded models).

    The config loses its ``quantization_config``; the generation config is saved when the
    model has one. The tokenizer is not saved.

    Example:
        >>> save_plain_checkpoint(model, Path("plain"))  # doctest: +SKIP
        >>> sorted(p.name for p in Path("plain").iterdir())  # doctest: +SKIP
        ['config.json', 'generation_config.json', 'model.safetensors']
    """
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


def load_gguf(path: Path, dtype: torch.dtype, cache_dir: str | os.PathLike | None = None):
    """``(model, tokenizer, cache folder)`` of a GGUF file: from the cache, else dequantized.

    A first load dequantizes in float32, writes the cache (into a temporary sibling folder
    renamed into place; a failed write is only logged) and then casts to ``dtype``.

    Example:
        >>> model, tok, cached = load_gguf(Path("model.gguf"), torch.bfloat16)  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_root(cache_dir) / "gguf" / f"{path.stem}-{_file_key(path)}"
    if (cached / "config.json").is_file() and (cached / "tokenizer_config.json").is_file():
        log.info("loading dequantized GGUF from cache %s", cached)
        tok = AutoTokenizer.from_pretrained(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        return model, tok, cached
    log.info("dequantizing %s (first load; cached afterwards in %s)", path.name, cached)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    # dequantized: a plain float model, as the cached copy loads (and fingerprints) it
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700
        save_plain_checkpoint(model, tmp)
        tok.save_pretrained(tmp)
        give_umask_mode(tmp)  # safetensors writes its files 0600
        if cached.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, cached)
    except OSError as exc:  # the cache is an optimisation: never fail the load because of it
        log.warning("could not write the GGUF cache %s: %s", cached, exc)
        shutil.rmtree(tmp, ignore_errors=True)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model, tok, cached
