"""Task spec files: a Hugging Face dataset as a task, described in a small YAML or JSON file.

An ``hf:`` task needs the names of its input and output columns, which a command line cannot
pass; a spec file holds them, and its path is accepted anywhere a task spec is (``--task``,
``--tasks``, ``tasks:`` of an experiment file, :func:`~taskneurons.data.load.load_task`)::

    # mytask.yaml
    hf: ./sst2_saved          # save_to_disk folder, .json/.jsonl file, {split: file}, Hub name
    input_field: sentence
    output_field: label
    labels: {0: Bad, 1: Good} # optional: the label list, or raw value -> label
    instruction: "Sentiment? Choose one from the option."

A spec file with a ``recast`` key instead describes a task recast to ``yes``/``no``
(:mod:`taskneurons.data.recast`). The keys are the fields of
:class:`~taskneurons.data.hf.HFTaskSpec`, the argument of
:func:`~taskneurons.data.hf.load_hf_task`; relative paths in ``hf`` are relative to the spec
file's folder. The task id defaults to the file's stem (``mytask``).

Example:
    >>> task = load_spec_file("mytask.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import yaml

from taskneurons.config import ConfigError, DuplicateKeyError, build, load_yaml
from taskneurons.data.hf import HFTaskSpec, load_hf_task
from taskneurons.data.recast import recast_task
from taskneurons.data.tasks import Task, TaskFormatError

#: Suffixes of task spec files (a ``.json`` file is one when it is an object with ``hf``).
SPEC_SUFFIXES = (".yaml", ".yml", ".json")

#: The keys every spec file needs.
REQUIRED_KEYS = ("hf", "input_field", "output_field")

#: A one-line example for messages.
SPEC_EXAMPLE = "{hf: NAME_OR_PATH, input_field: sentence, output_field: label}"

#: A ``.json`` file larger than this is data, not a spec (it is not read to find out).
_MAX_SPEC_BYTES = 1 << 20


def is_spec_file(path: Path) -> bool:
    """Whether ``path`` is a task spec file: a ``.yaml``/``.yml`` file, or a small ``.json``
    file holding a JSON object with an ``hf`` key (other JSON files are task data)."""
    if not path.is_file() or path.suffix.lower() not in SPEC_SUFFIXES:
        return False
    if path.suffix.lower() != ".json":
        return True
    if path.stat().st_size > _MAX_SPEC_BYTES:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and ("hf" in data or "recast" in data)


def read_spec(path: str | os.PathLike) -> HFTaskSpec:
    """The checked contents of a spec file.

    Raises:
        TaskFormatError: unreadable YAML/JSON, not a mapping, a missing or unknown key, or a
            value of the wrong type; the message names the file and the key.
    """
    path = Path(path)
    data = _read_mapping(path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise TaskFormatError(
            f"{path}: missing key(s) {missing}; a task spec file needs "
            f"{', '.join(REQUIRED_KEYS)}, e.g. {SPEC_EXAMPLE}"
        )
    try:
        spec = build(HFTaskSpec, data, where=str(path))
    except ConfigError as exc:
        raise TaskFormatError(str(exc)) from None
    for key in ("hf", "input_field", "output_field"):
        if getattr(spec, key) in ("", {}):
            raise TaskFormatError(f"{path}: {key}: must not be empty")
    return spec


def load_spec_file(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    id: str | None = None,
    instruction: str | None = None,
    kind: str | None = None,
) -> Task:
    """The task a spec file describes; ``name``, ``id``, ``instruction``, ``kind`` override it.

    Raises:
        TaskFormatError: a bad spec file, or a dataset that does not load or does not fit the
            spec (the message starts with the spec file).
    """
    path = Path(path)
    if "recast" in _read_mapping(path):  # a task recast to yes/no (data/recast.py)
        task = recast_task(path, _read_mapping(path), id or path.stem)
        return dataclasses.replace(task, name=name or task.name)
    spec = read_spec(path)
    spec = spec.replace(
        hf=_resolve(spec.hf, path.parent),
        id=id or spec.id or path.stem,
        name=name or spec.name,
        instruction=instruction or spec.instruction,
        kind=kind or spec.kind,
    )
    try:
        task = load_hf_task(spec)
    except TaskFormatError as exc:
        raise TaskFormatError(f"{path}: {exc}") from None
    return dataclasses.replace(task, source={**task.source, "spec_file": str(path.resolve())})


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFormatError(f"{path}: cannot read the task spec file ({exc})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text)
    except json.JSONDecodeError as exc:
        raise TaskFormatError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except DuplicateKeyError as exc:
        raise TaskFormatError(f"{path}:{exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise TaskFormatError(f"{path}{line}: invalid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise TaskFormatError(
            f"{path}: a task spec file is a mapping of settings, got "
            f"{type(data).__name__}; e.g. {SPEC_EXAMPLE}"
        )
    return data


def _resolve(source: str | dict[str, str], base: Path) -> str | dict[str, str]:
    """``hf``'s local paths made relative to the spec file's folder; Hub names kept."""
    if isinstance(source, dict):
        return {split: str(_local(str(f), base, force=True)) for split, f in source.items()}
    return str(_local(source, base, force=False))


def _local(value: str, base: Path, force: bool) -> Path | str:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    candidate = (base / p).absolute()
    path_like = value.startswith((".", "~")) or p.suffix.lower() in (".json", ".jsonl")
    if force or path_like or candidate.exists():
        return candidate
    return value
