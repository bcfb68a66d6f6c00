"""Small I/O helpers shared by every stage: atomic writes, checksums of what is read back.

Every result file that is read back records a checksum of its content when it is written, and
the reader verifies it (:func:`verify_checksum`, raising :class:`ChangedFileError` naming the
file): a JSON record under its top-level key ``"checksum"`` (:func:`seal_record`,
:func:`check_record`), a safetensors file in its header (:func:`seal_header`,
:func:`check_header`: the header and the tensors' stored bytes), a torch checkpoint as a key
of its state. A file without a checksum (written before checksums) is read as it is.

Example:
    >>> record = seal_record({"score": 50.0})
    >>> record["checksum"][:7]
    'sha256:'
    >>> check_record(record, "r.json")
    {'score': 50.0}
    >>> check_record({**record, "score": 87.5}, "r.json")
    Traceback (most recent call last):
    ...
    taskneurons._io.ChangedFileError: r.json was changed after it was written: its content does not match the checksum saved in it; the file is damaged or was edited, so it cannot be trusted: make it again
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from taskneurons._ranks import one_writer, throwaway

#: where a file keeps its checksum: a top-level key of a JSON record, an entry of a
#: safetensors header, a key of a torch checkpoint's state
CHECKSUM_KEY = "checksum"
#: how a checksum starts (its algorithm); the hex digest follows
CHECKSUM_PREFIX = "sha256:"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Nothing half-written is ever left at ``path`` (on an exception the temporary file is removed).
    The file gets the mode ``open(path, "w")`` would give it (``0o666`` less the umask), also when
    the writer replaced the temporary file (safetensors makes it ``0600``). An ``OSError``
    without a file name (a full disk) is raised naming ``path``. In a folder several processes
    share (:mod:`taskneurons._ranks`) only the main one writes; the others get a throwaway file.

    Example:
        >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    with one_writer() as writes:  # several processes: the main one writes (taskneurons._ranks)
        if not writes:
            with throwaway(path) as skipped:
                yield skipped
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            give_umask_mode(tmp_path)  # mkstemp makes the file 0600, as a writer's own temp file
            os.replace(tmp_path, path)
        except OSError as exc:
            if exc.errno is None or exc.filename not in (None, tmp):
                raise
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


def give_umask_mode(path: str | os.PathLike) -> None:
    """Give the file ``path`` (every file under it, for a folder) the mode of any tool's output:
    ``0o666`` less the umask, whatever mode its writer chose."""
    mode = 0o666 & ~current_umask()
    p = Path(path)
    for file in (p, *p.rglob("*")) if p.is_dir() else (p,):
        if file.is_file() and not file.is_symlink():
            os.chmod(file, mode)


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
    ``path``, or its nearest existing parent, must be a folder the process can write to.

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


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in the file ``path``; ``ValueError`` naming the file (and the line) when
    it is not readable JSON (cut short by an interrupted write, edited)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not readable JSON (line {exc.lineno}: {exc.msg}); the file was cut short or "
            "edited: delete it to make it again"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not readable JSON ({exc.reason})") from None


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
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_tensors_with_sidecar(
    tensor_path: Path, meta_path: Path, fmt: str, what: str
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """``(header, tensors, sidecar)`` of a taskneurons safetensors file and its JSON sidecar
    (the safetensors metadata, the tensors by name, the JSON), its format tag checked.

    The checksums written by :func:`write_tensors_with_sidecar` are verified and left out of
    the header and the sidecar returned.

    Raises:
        FileNotFoundError: either file is missing.
        ChangedFileError: either file does not match the checksum saved in it.
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
    header = check_header(header, tensors, tensor_path)
    if header.get("format") != fmt:
        raise ValueError(
            f"{tensor_path} is not a taskneurons {what} file (header format "
            f"{header.get('format')!r}, expected {fmt!r})"
        )
    try:
        sidecar = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    sidecar = check_record(sidecar, meta_path)
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
    seal: bool = True,
) -> Path:
    """Write safetensors (with ``header`` metadata) and a JSON sidecar, both atomically.

    The sidecar is serialised before any file is touched, so a value JSON cannot hold leaves
    nothing half-written. With ``seal`` the header gets the checksum of itself and the tensors
    (:func:`seal_header`) and the sidecar its own (:func:`seal_record`); a file kind with
    checksums of its own (neuron sets) passes ``False``. Returns ``tensor_path``.
    """
    from safetensors.torch import save_file

    if seal:
        header, sidecar = seal_header(header, tensors), seal_record(sidecar)
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


# -- checksums --------------------------------------------------------------------------------
class ChangedFileError(ValueError):
    """A file whose content does not match the checksum recorded in it when it was written."""


def checksum(value: Any) -> str:
    """``sha256:<hex>`` of ``value``: JSON values, mappings (keys sorted), sequences, bytes and
    tensors or arrays (dtype, shape and their bytes as stored, never a float re-encoding).

    Example:
        >>> checksum({"b": [1, 2.5], "a": None}) == checksum({"a": None, "b": (1, 2.5)})
        True
    """
    h = hashlib.sha256()
    _feed(h, value)
    return CHECKSUM_PREFIX + h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    """Add ``value`` to the hash ``h``, each part tagged with its kind and length."""
    torch = sys.modules.get("torch")  # a tensor implies torch is loaded
    if isinstance(value, Mapping):
        h.update(f"d{len(value)}:".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"l{len(value)}:".encode())
        for item in value:
            _feed(h, item)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        h.update(f"b{len(value)}:".encode())
        h.update(value)
    elif torch is not None and isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        h.update(f"t{t.dtype}{list(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif hasattr(value, "tobytes") and hasattr(value, "dtype") and hasattr(value, "shape"):
        h.update(f"a{value.dtype}{list(value.shape)}:".encode())  # numpy arrays
        h.update(value.tobytes())
    else:  # None, bool, int, float (repr round-trips), str; torch.dtype and the like
        text = repr(value).encode()
        h.update(f"{type(value).__name__}{len(text)}:".encode())
        h.update(text)


def changed_message(path: str | os.PathLike, what: str = "content", where: str = "in it") -> str:
    """The refusal of a file whose ``what`` does not match the checksum saved ``where``."""
    return (
        f"{path} was changed after it was written: its {what} does not match the checksum "
        f"saved {where}; the file is damaged or was edited, so it cannot be trusted: make it "
        "again"
    )


def verify_checksum(
    recorded: Any, value: Any, path: str | os.PathLike, what: str = "content"
) -> None:
    """Raise :class:`ChangedFileError` naming ``path`` unless ``recorded`` is the checksum of
    ``value``; a missing checksum (``None``: a file written before checksums) passes."""
    if recorded is not None and recorded != checksum(value):
        raise ChangedFileError(changed_message(path, what))


def plain_json(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists, paths and tensors as JSON values)."""
    return json.loads(json.dumps(value, default=_json_default))


def seal_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` as JSON reads it back, with the checksum of the rest under ``"checksum"``.

    Raises:
        TypeError: a value JSON cannot hold (before any file is touched).
    """
    plain = plain_json({k: v for k, v in record.items() if k != CHECKSUM_KEY})
    return {**plain, CHECKSUM_KEY: checksum(plain)}


def check_record(record: Any, path: str | os.PathLike) -> Any:
    """``record`` (a JSON object as read from ``path``) without its checksum, once verified.

    Anything that is not an object with a ``"checksum"`` key is returned as it is.

    Raises:
        ChangedFileError: the record does not match its checksum (the message names ``path``).
    """
    if not isinstance(record, dict) or CHECKSUM_KEY not in record:
        return record
    rest = {k: v for k, v in record.items() if k != CHECKSUM_KEY}
    verify_checksum(record[CHECKSUM_KEY], rest, path)
    return rest


def write_json_sealed(path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``record`` with its checksum (:func:`seal_record`) as JSON, atomically."""
    return write_json_atomic(path, seal_record(record))


def seal_header(header: Mapping[str, str], tensors: Mapping[str, Any]) -> dict[str, str]:
    """A safetensors ``header`` with the checksum of itself and ``tensors`` under ``"checksum"``."""
    rest = {k: v for k, v in header.items() if k != CHECKSUM_KEY}
    return {**rest, CHECKSUM_KEY: checksum({"header": rest, "tensors": tensors})}


def check_header(
    header: Mapping[str, str], tensors: Mapping[str, Any], path: str | os.PathLike
) -> dict[str, str]:
    """The safetensors ``header`` of ``path`` without its checksum, once verified against the
    header and the ``tensors`` read (a header without one: as it is).

    Raises:
        ChangedFileError: the tensors or the header do not match the checksum.
    """
    rest = {k: v for k, v in header.items() if k != CHECKSUM_KEY}
    verify_checksum(
        header.get(CHECKSUM_KEY),
        {"header": rest, "tensors": tensors},
        path,
        "tensor data or header",
    )
    return rest


def file_checksum(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of the bytes of the file ``path`` (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return CHECKSUM_PREFIX + h.hexdigest()
