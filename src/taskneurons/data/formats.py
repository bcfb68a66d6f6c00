"""Task files on disk: task folders (``task.json`` + ``train.jsonl`` + ``test.jsonl``) and O-LoRA
``CL_Benchmark`` folders (``labels.json`` + ``train.json`` + ``test.json``).

Malformed files raise :class:`~taskneurons.data.tasks.TaskFormatError` naming file and line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskneurons.data.tasks import (
    DEFAULT_INSTRUCTION,
    DEFAULT_METRIC,
    Example,
    Task,
    TaskFormatError,
    check_kind,
    check_labels,
    check_metric,
    check_nonempty,
    load_json,
    make_example,
    read_text,
)

#: The files of a task folder (the ``../shared/data`` format) and of an O-LoRA folder.
TASK_FOLDER_FILES = ("task.json", "train.jsonl", "test.jsonl")


OLORA_FOLDER_FILES = ("labels.json", "train.json", "test.json")


_REQUIRED_TASK_KEYS = ("id", "kind", "instruction")


def _json_list_with_lines(path: Path) -> list[tuple[int, Any]]:
    """The elements of a JSON list file with the line each one starts on."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskFormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise TaskFormatError(
            f"{path}: expected a JSON list of objects, got a {type(data).__name__}"
        )
    # walk the (valid) text again to find where each element starts
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    pos = ws.match(text, 0).end() + 1  # after '['
    line, counted = 1, 0
    out: list[tuple[int, Any]] = []
    for _ in range(len(data)):
        pos = ws.match(text, pos).end()
        if text[pos] == ",":
            pos = ws.match(text, pos + 1).end()
        line += text.count("\n", counted, pos)
        counted = pos
        obj, pos = decoder.raw_decode(text, pos)
        out.append((line, obj))
    return out


def jsonl_lines(text: str) -> list[tuple[int, str]]:
    r"""The non-blank lines of JSON Lines text with their 1-based line numbers.

    Lines end at ``"\n"`` only (a trailing ``"\r"`` is dropped, for CRLF files): U+0085,
    U+2028, U+2029 and the other characters ``str.splitlines`` breaks on are valid inside JSON
    strings and stay part of their line.

    Example:
        >>> text = '{"a": "x' + chr(0x2028) + 'y"}\r\n\n{"a": 2}\n'
        >>> [(n, len(line)) for n, line in jsonl_lines(text)]
        [(1, 12), (3, 8)]
    """
    out = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            out.append((lineno, line))
    return out


def read_jsonl_examples(
    path: str | os.PathLike, kind: str, labels: list[str] | None
) -> list[Example]:
    """Validated examples of one ``.jsonl`` split file (``{"input", "output"}`` per line).

    Blank lines are skipped; ``"references"`` (generation) must be a list of strings; a
    classification ``"output"`` must be one of ``labels``; other keys are ignored.

    Raises:
        TaskFormatError: naming ``file:line`` and the fault (a file holding a JSON array:
            naming the file).
    """
    path = Path(path)
    examples: list[Example] = []
    lines = jsonl_lines(read_text(path))
    if lines and lines[0][1].lstrip().startswith("["):
        raise TaskFormatError(
            f"{path}: this is a JSON array, not JSON Lines; a .jsonl file holds one JSON object "
            'per line ({"input": ..., "output": ...})'
        )
    for lineno, line in lines:
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskFormatError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise TaskFormatError(f"{where}: expected a JSON object, got a {type(rec).__name__}")
        for key in ("input", "output"):
            if key not in rec:
                raise TaskFormatError(f'{where}: missing "{key}" (keys: {sorted(rec)})')
        examples.append(
            make_example(where, rec["input"], rec["output"], rec.get("references"), kind, labels)
        )
    return check_nonempty(examples, str(path))


def load_task_folder(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    id: str | None = None,
    instruction: str | None = None,
) -> Task:
    """A task from a folder with ``task.json``, ``train.jsonl`` and ``test.jsonl``.

    ``task.json`` needs ``id``, ``kind`` and ``instruction``; ``labels`` for classification;
    ``name`` (default: the id) and ``metric`` (default: accuracy / rougeL by kind) are optional.
    ``name``, ``id`` and ``instruction`` override the file's values.

    Example:
        >>> task = load_task_folder("../shared/data/sst2")  # doctest: +SKIP
        >>> task.labels, len(task.train), len(task.test)  # doctest: +SKIP
        (['Good', 'Bad'], 1000, 500)
    """
    folder = Path(path)
    _require_files(folder, TASK_FOLDER_FILES, "a task folder")
    meta_path = folder / "task.json"
    meta = load_json(meta_path)
    if not isinstance(meta, dict):
        raise TaskFormatError(f"{meta_path}: expected a JSON object, got a {type(meta).__name__}")
    missing = [k for k in _REQUIRED_TASK_KEYS if k not in meta]
    if missing:
        raise TaskFormatError(
            f"{meta_path}: missing required key(s) {missing} (needs {list(_REQUIRED_TASK_KEYS)})"
        )
    for key in ("id", "instruction"):
        if not isinstance(meta[key], str) or not meta[key].strip():
            raise TaskFormatError(f"{meta_path}: {key!r} must be a non-empty string")
    kind = check_kind(meta["kind"], str(meta_path))
    metric = check_metric(meta.get("metric", DEFAULT_METRIC[kind]), str(meta_path))
    labels = check_labels(meta.get("labels"), str(meta_path)) if kind == "classification" else None
    train = read_jsonl_examples(folder / "train.jsonl", kind, labels)
    test = read_jsonl_examples(folder / "test.jsonl", kind, labels)
    return Task(
        id=id or meta["id"],
        kind=kind,
        instruction=instruction or meta["instruction"],
        labels=labels,
        metric=metric,
        train=train,
        test=test,
        name=name or str(meta.get("name") or meta["id"]),
        source={"format": "task-folder", "path": str(folder.resolve())},
    )


def _require_files(folder: Path, files: Sequence[str], what: str) -> None:
    for f in files:
        if (folder / f).is_dir():
            raise TaskFormatError(
                f"{folder / f}: is a folder, not a file ({what} needs the files {', '.join(files)})"
            )
        if not (folder / f).is_file():
            raise TaskFormatError(f"{folder / f}: missing ({what} needs {', '.join(files)})")


def load_olora_folder(
    path: str | os.PathLike,
    *,
    instruction: str | None = None,
    kind: str = "classification",
    name: str | None = None,
    id: str | None = None,
) -> Task:
    """A task from a folder in O-LoRA's ``CL_Benchmark`` layout.

    ``labels.json`` is a JSON list of label strings; ``train.json`` / ``test.json`` are JSON
    lists of ``{"sentence": ..., "label": ...}``. The id is the folder name. With
    ``kind="generation"`` the ``label`` is the reference text and ``labels.json`` is optional.

    Example:
        >>> task = load_olora_folder("CL_Benchmark/SC/SST-2",
        ...     instruction="What is the sentiment of the following paragraph? "
        ...                 "Choose one from the option.")  # doctest: +SKIP
    """
    folder = Path(path)
    kind = check_kind(kind, f"{folder}: kind argument")
    needed = OLORA_FOLDER_FILES if kind == "classification" else ("train.json", "test.json")
    _require_files(folder, needed, "an O-LoRA folder")
    labels = None
    if kind == "classification":
        labels = check_labels(load_json(folder / "labels.json"), str(folder / "labels.json"))
    task_id = id or folder.resolve().name
    return Task(
        id=task_id,
        kind=kind,  # type: ignore[arg-type]
        instruction=instruction or DEFAULT_INSTRUCTION[kind],
        labels=labels,
        metric=DEFAULT_METRIC[kind],
        train=read_olora_examples(folder / "train.json", kind, labels),
        test=read_olora_examples(folder / "test.json", kind, labels),
        name=name or task_id,
        source={"format": "olora", "path": str(folder.resolve())},
    )


def read_olora_examples(
    path: str | os.PathLike, kind: str, labels: list[str] | None
) -> list[Example]:
    """Validated examples of one O-LoRA split file (a JSON list of ``{"sentence", "label"}``).

    Raises:
        TaskFormatError: naming ``file:line`` (where the object starts) and the fault.

    Example:
        >>> exs = read_olora_examples("SST-2/test.json", "classification",
        ...                           ["Good", "Bad"])  # doctest: +SKIP
    """
    path = Path(path)
    out = []
    for line, rec in _json_list_with_lines(path):
        where = f"{path}:{line}"
        if not isinstance(rec, dict):
            raise TaskFormatError(f"{where}: expected a JSON object, got a {type(rec).__name__}")
        for key in ("sentence", "label"):
            if key not in rec:
                raise TaskFormatError(f'{where}: missing "{key}" (keys: {sorted(rec)})')
        names = ("sentence", "label", "references")
        out.append(make_example(where, rec["sentence"], rec["label"], None, kind, labels, names))
    return check_nonempty(out, str(path))
