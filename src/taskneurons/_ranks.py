"""One run folder written by several processes (``torchrun``, ``accelerate launch``).

Under several processes every process runs the same stages in the same order (they must, to
take part in the collectives); only the main process writes. Within :func:`shared_folder`
(what ``taskneurons run`` wraps a run in) every write goes through :func:`one_writer`: every
process waits for the others, the main process writes, every process waits again. So between
two writes the folder is the same for every process, and whatever a process decides from it
(resume, reuse of saved scores) every process decides alike. The others skip the payload where
that is cheap to arrange, or write it into a throwaway temporary file
(:func:`taskneurons._io.atomic_path`).

Outside :func:`shared_folder`, :func:`one_writer` given an accelerator of several processes lets
only its main process write (as a script's own ``if accelerator.is_main_process``) and waits;
without one, or in one process, this process writes and nothing waits.

This module imports neither torch nor accelerate.

Example:
    >>> with one_writer() as writes:  # one process: this one writes
    ...     writes
    True
    >>> console_process({"RANK": "1", "WORLD_SIZE": "2"})
    False
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

#: the accelerator of the run whose folder the processes share (``None``: no such run), and
#: whether this process writes within the write under way (``depth`` > 0: nested writes)
_STATE: dict[str, Any] = {"accelerator": None, "depth": 0, "writes": True}


def several(accelerator: Any) -> bool:
    """Whether ``accelerator`` (``None``: none) spans several processes."""
    return accelerator is not None and accelerator.num_processes > 1


def world_size(env: Mapping[str, str] | None = None) -> int:
    """The number of processes ``torchrun`` / ``accelerate launch`` started (``WORLD_SIZE``).

    Example:
        >>> world_size({"WORLD_SIZE": "4"})
        4
    """
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", "1") or 1)


def console_process(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process prints to the console: the main one (``RANK`` 0, or no ``RANK``).

    Read from the environment, so it holds before the process group starts.
    """
    env = os.environ if env is None else env
    return world_size(env) <= 1 or (env.get("RANK", "0") or "0") == "0"


@contextlib.contextmanager
def shared_folder(accelerator: Any) -> Iterator[None]:
    """Within: the processes of ``accelerator`` run the same writes, which only the main
    process makes, each between two barriers (:func:`one_writer`). One process: nothing.

    Example:
        >>> with shared_folder(None):  # one process
        ...     sharing()
        False
    """
    if not several(accelerator):
        yield
        return
    previous = _STATE["accelerator"]
    _STATE["accelerator"] = accelerator
    try:
        yield
    finally:
        _STATE["accelerator"] = previous


def sharing() -> bool:
    """Whether a run's folder is shared by several processes now (:func:`shared_folder`)."""
    return _STATE["accelerator"] is not None


def shared_accelerator() -> Any:
    """The accelerator of the run whose folder several processes share now (``None``: none):
    what divides a run's work (relevance scoring) among its processes."""
    return _STATE["accelerator"]


@contextlib.contextmanager
def one_writer(accelerator: Any = None) -> Iterator[bool]:
    """Yield whether this process makes the write in the block; the processes wait before
    and after it when several share the work.

    The accelerator is the shared folder's (:func:`shared_folder`), else ``accelerator`` when it
    spans several processes; with neither, this process writes and nothing waits. A write
    inside a write waits for nothing and writes where the outer one does. The barrier after
    the block is skipped when it raises (``torchrun`` then stops the other processes).

    Example:
        >>> with one_writer() as writes:  # doctest: +SKIP
        ...     if writes:
        ...         torch.save(state, path)
    """
    if _STATE["depth"]:
        yield _STATE["writes"]
        return
    acc = _STATE["accelerator"] or (accelerator if several(accelerator) else None)
    if acc is None:
        yield True
        return
    acc.wait_for_everyone()
    writes = bool(acc.is_main_process)
    _STATE.update(depth=1, writes=writes)
    try:
        yield writes
    finally:
        _STATE.update(depth=0, writes=True)
    acc.wait_for_everyone()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The block runs in the main process first, then in the others (a shared folder only):
    what the main process writes there (a download, a conversion cache) the others read.

    Example:
        >>> with main_first():
        ...     "load the model"
        'load the model'
    """
    acc = _STATE["accelerator"]
    if acc is None:
        yield
        return
    if not acc.is_main_process:
        acc.wait_for_everyone()
    yield
    if acc.is_main_process:
        acc.wait_for_everyone()


@contextlib.contextmanager
def throwaway(path: os.PathLike) -> Iterator[Any]:
    """A temporary file outside the run folder, named after ``path`` and deleted after the
    block: where a process that does not write puts what it would have written."""
    import tempfile
    from pathlib import Path

    fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".skipped")
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def quiet_other_processes() -> None:
    """In a process other than the main one (:func:`console_process`): no warnings, no log
    records below errors (the main process prints them once). Elsewhere: nothing."""
    if console_process():
        return
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
