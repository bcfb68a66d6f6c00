"""Small I/O helpers shared by every stage: atomic writes and provenance records."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Nothing half-written is ever left at ``path``: on an exception the temporary file is removed.
    The file gets the mode a plain ``open(path, "w")`` would give it (``0o666`` less the umask).

    Example:
        >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:  # mkstemp makes the file 0600; results get the permissions any tool's output gets
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process umask, read without changing it where ``/proc`` allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (no atomic read exists)
    os.umask(mask)
    return mask


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why files cannot be written under the folder ``path`` (made if missing); ``None``: fine.

    Looks at ``path`` or, when it does not exist yet, its nearest existing parent: that must be
    a folder the process can write to.

    Example:
        >>> folder_problem("/etc/hostname/sub")  # doctest: +SKIP
        '/etc/hostname is a file, not a folder'
    """
    p = Path(path)
    for existing in (p, *p.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} is not writable"
        return None
    return None


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_tensors_with_sidecar(
    tensor_path: Path, meta_path: Path, fmt: str, what: str
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """Read a taskneurons safetensors file and its JSON sidecar, checking the format tag.

    Returns:
        ``(header, tensors, sidecar)``: the safetensors metadata, the tensors by name, the JSON.

    Raises:
        FileNotFoundError: either file is missing.
        ValueError: unreadable safetensors, another format tag, invalid JSON (with its line),
            a sidecar whose neuron definition differs from the tensor file's.
    """
    from safetensors import safe_open

    if not tensor_path.is_file():
        raise FileNotFoundError(f"{what} file not found: {tensor_path}")
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{what} {tensor_path} has no JSON sidecar {meta_path} (it holds the meta)"
        )
    try:
        with safe_open(str(tensor_path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{tensor_path} is not a readable safetensors file: {exc}") from exc
    if header.get("format") != fmt:
        raise ValueError(
            f"{tensor_path} is not a taskneurons {what} file (header format "
            f"{header.get('format')!r}, expected {fmt!r})"
        )
    try:
        sidecar = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    if sidecar.get("definition") != header.get("definition"):
        raise ValueError(
            f"{meta_path} says definition {sidecar.get('definition')!r} but {tensor_path} "
            f"says {header.get('definition')!r}; the two files do not belong together"
        )
    return header, tensors, sidecar


def tensor_sidecar_paths(
    path: str | os.PathLike, stem: str, what: str, reading: bool = False
) -> tuple[Path, Path]:
    """``(tensor file, JSON sidecar)`` for a ``.safetensors`` path or a folder.

    A folder holds ``<stem>.safetensors`` and ``<stem>.json``; when reading, the ``.json``
    sidecar's path is accepted too.
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        return p, p.with_suffix(".json")
    if p.suffix == ".json" and reading:
        return p.with_suffix(".safetensors"), p
    if p.suffix and not p.is_dir():
        raise ValueError(
            f"{what} path {p} must end in .safetensors or name a folder (got suffix {p.suffix!r})"
        )
    return p / f"{stem}.safetensors", p / f"{stem}.json"


def write_tensors_with_sidecar(
    tensor_path: Path,
    meta_path: Path,
    tensors: dict[str, Any],
    header: dict[str, str],
    sidecar: dict[str, Any],
) -> Path:
    """Write safetensors (with ``header`` metadata) and a JSON sidecar, both atomically.

    The sidecar is serialised before any file is touched, so a value JSON cannot hold leaves
    nothing half-written. Returns ``tensor_path``.
    """
    from safetensors.torch import save_file

    text = json.dumps(sidecar, indent=2, default=_json_default) + "\n"  # fails before I/O
    with atomic_path(tensor_path) as tmp_t, atomic_path(meta_path) as tmp_m:
        save_file(tensors, str(tmp_t), metadata=header)
        tmp_m.write_text(text, encoding="utf-8")
    return tensor_path


def header_modules(header: dict[str, str], names: list[str], path: Path) -> list[str]:
    """The module order (= neuron-id order) recorded in a safetensors header.

    safetensors sorts tensor names, so the order is kept in the header's ``modules`` entry (a
    JSON list); ``names`` are the modules the file holds. Without the entry, sorted ``names``.

    Raises:
        ValueError: the header lists other modules than the file holds.
    """
    order = json.loads(header.get("modules", "null")) or sorted(names)
    if sorted(order) != sorted(names):
        raise ValueError(f"{path}: header lists modules {order} but the file holds {sorted(names)}")
    return order
