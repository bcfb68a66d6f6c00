"""The one entry point for tasks: :func:`load_task` dispatches on the spec.

Example:
    >>> load_task("arithmetic").metric
    'rougeL'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskneurons.data.builtin import builtin_task, builtin_task_names
from taskneurons.data.formats import (
    OLORA_FOLDER_FILES,
    TASK_FOLDER_FILES,
    load_olora_folder,
    load_task_folder,
)
from taskneurons.data.hf import load_hf_task
from taskneurons.data.spec import is_spec_file, load_spec_file
from taskneurons.data.tasks import Task, TaskFormatError


def load_task(
    spec: str | os.PathLike | Task,
    *,
    name: str | None = None,
    id: str | None = None,
    instruction: str | None = None,
    kind: str | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> Task:
    """Load a task from a spec: a built-in name, a folder, a spec file or ``hf:NAME_OR_PATH``.

    Dispatch:
        * a :class:`Task` is returned as is;
        * ``"hf:NAME_OR_PATH"`` -> :func:`load_hf_task` (``kwargs``: the other
          :class:`~taskneurons.data.hf.HFTaskSpec` fields, ``input_field`` and ``output_field``
          required; ``kind`` defaults to classification);
        * a task spec file (``.yaml``/``.yml``, or ``.json`` holding an object with ``hf``)
          -> :func:`taskneurons.data.spec.load_spec_file` (an ``HFTaskSpec`` in a file, so
          ``hf:`` tasks work from the command line);
        * a built-in demo task name (see :func:`taskneurons.data.builtin.builtin_task_names`)
          -> the generated task (``seed``; ``kwargs``: ``n_train``, ``n_test``); a folder of the
          same name is reached with ``./NAME``;
        * a folder with ``task.json`` -> :func:`load_task_folder` (or the ``task.json`` file);
        * a folder with ``labels.json``/``train.json`` -> :func:`load_olora_folder`
          (``kind`` optional).

    ``name``, ``id`` and ``instruction`` override the loaded values.

    Raises:
        TaskFormatError: the spec names nothing loadable, a file is malformed, or an ``hf:``
            spec lacks ``input_field``/``output_field`` (the message shows a spec file).

    Example:
        >>> load_task("arithmetic").metric
        'rougeL'
    """
    if isinstance(spec, Task):
        return spec
    text = os.fspath(spec)
    if text.startswith("hf:"):
        _check_hf_fields(text, kwargs)
        return load_hf_task(
            text[3:],
            id=id,
            name=name,
            instruction=instruction,
            kind=kind or "classification",
            **kwargs,
        )

    if text in builtin_task_names():
        task = builtin_task(text, seed=seed, **kwargs)
        return _override(task, name=name, id=id, instruction=instruction)
    return _load_path(text, kwargs, name=name, id=id, instruction=instruction, kind=kind)


def _load_path(
    text: str,
    kwargs: Mapping[str, Any],
    *,
    name: str | None,
    id: str | None,
    instruction: str | None,
    kind: str | None,
) -> Task:
    """A task spec file, a task folder (or its ``task.json``) or an O-LoRA folder."""
    path = Path(text).expanduser()
    if path.is_file() and path.name == "task.json":
        path = path.parent
    if is_spec_file(path):
        _no_kwargs(kwargs, path, "a task spec file (its keys go in the file)")
        return load_spec_file(path, name=name, id=id, instruction=instruction, kind=kind)
    if path.is_dir():
        if (path / "task.json").exists():
            _no_kwargs(kwargs, path, "a task folder")
            if kind is not None:
                raise TypeError(f"{path}: the kind of a task folder comes from its task.json")
            return load_task_folder(path, name=name, id=id, instruction=instruction)
        if (path / "labels.json").exists() or (path / "train.json").exists():
            _no_kwargs(kwargs, path, "an O-LoRA folder")
            return load_olora_folder(
                path, instruction=instruction, kind=kind or "classification", name=name, id=id
            )
        raise TaskFormatError(
            f"{path}: not a task folder (needs {', '.join(TASK_FOLDER_FILES)}) nor an O-LoRA "
            f"folder (needs {', '.join(OLORA_FOLDER_FILES)})"
        )
    if path.is_file():
        raise TaskFormatError(
            f"{path}: a task spec is a folder, a built-in name or a task spec file (.yaml, or "
            f".json with an 'hf' key); for a data file write one, e.g. {{hf: {text}, "
            "input_field: ..., output_field: ...}"
        )
    raise TaskFormatError(
        f"unknown task {text!r}: no such folder, not 'hf:...', and not a built-in task "
        f"(built-in: {', '.join(builtin_task_names())})"
    )


def _check_hf_fields(text: str, kwargs: Mapping[str, Any]) -> None:
    """A bare ``hf:NAME`` (no ``input_field``/``output_field``) names a spec file instead."""
    missing = [k for k in ("input_field", "output_field") if k not in kwargs]
    if missing:
        raise TaskFormatError(
            f"{text}: an hf: task needs {' and '.join(missing)}, which a task name cannot "
            f"carry; write a task spec file (e.g. mytask.yaml: {{hf: {text[3:]}, input_field: "
            "sentence, output_field: label}) and pass its path as the task"
        )


def _no_kwargs(kwargs: Mapping[str, Any], path: Path, what: str) -> None:
    if kwargs:
        raise TypeError(f"{path}: unexpected argument(s) {sorted(kwargs)} for {what}")


def _override(task: Task, *, name: str | None, id: str | None, instruction: str | None) -> Task:
    changes = {k: v for k, v in (("name", name), ("id", id), ("instruction", instruction)) if v}
    return dataclasses.replace(task, **changes) if changes else task
