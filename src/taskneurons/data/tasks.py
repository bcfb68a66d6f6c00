"""Tasks: examples, labels, instruction and metric of one classification or generation task.

A task comes from one of four places, all through :func:`load_task`:

* a built-in demo task name (``"sentiment"``, see :mod:`taskneurons.data.builtin`), generated
  by the project's own code;
* a task folder with ``task.json`` + ``train.jsonl`` + ``test.jsonl`` (the format of
  ``../shared/data``; one ``{"input", "output"}`` object per line, optional ``"references"``);
* a folder in O-LoRA's ``CL_Benchmark`` layout: ``labels.json`` + ``train.json`` + ``test.json``
  (JSON lists of ``{"sentence", "label"}``);
* a Hugging Face dataset (``"hf:NAME_OR_PATH"``, see :func:`load_hf_task`).

Malformed files raise :class:`TaskFormatError` with the file and line at fault.

Example:
    >>> task = load_task("sentiment")  # a built-in demo task
    >>> task.kind, task.labels
    ('classification', ['bad', 'good'])
    >>> small = task.limit(n_train=20, n_test=10, seed=0)  # label-stratified, seeded
    >>> len(small.train), len(small.test)
    (20, 10)
    >>> sst2 = load_task("../shared/data/sst2")  # doctest: +SKIP
    >>> hf = load_task("hf:stanfordnlp/sst2", input_field="sentence", output_field="label")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

TaskKind = Literal["classification", "generation"]

#: The task kinds and the metric each uses when a task file names none.
KINDS: tuple[str, ...] = ("classification", "generation")
DEFAULT_METRIC: dict[str, str] = {"classification": "accuracy", "generation": "rougeL"}
METRICS: tuple[str, ...] = ("accuracy", "rougeL")

#: Instructions used when a loader is given none (O-LoRA style).
DEFAULT_INSTRUCTION: dict[str, str] = {
    "classification": "What is the label of the following text? Choose one from the option.",
    "generation": "Generate the output for the following input.",
}

#: The files of a task folder (the ``../shared/data`` format) and of an O-LoRA folder.
TASK_FOLDER_FILES = ("task.json", "train.jsonl", "test.jsonl")
OLORA_FOLDER_FILES = ("labels.json", "train.json", "test.json")

_REQUIRED_TASK_KEYS = ("id", "kind", "instruction")


class TaskFormatError(ValueError):
    """A task file is malformed; the message names the file (and line) at fault."""


@dataclass(frozen=True)
class Example:
    """One example.

    Attributes:
        input: the input text (without instruction).
        output: the gold label (classification) or the first reference (generation).
        references: all references of a generation example (``output`` is the first);
            empty for classification.
    """

    input: str
    output: str
    references: tuple[str, ...] = ()

    @property
    def all_references(self) -> tuple[str, ...]:
        return self.references if self.references else (self.output,)


@dataclass
class Task:
    """A task: what to do (instruction, labels), how to score it (metric), and its data.

    Attributes:
        id: short identifier (``sst2``).
        kind: ``classification`` or ``generation``.
        instruction: one-sentence zero-shot instruction.
        labels: label strings (classification); ``None`` for generation.
        metric: ``accuracy`` or ``rougeL``.
        train, test: the splits.
        name: human-readable name.
        source: where the task came from (path, loader, ...), recorded in result files.
    """

    id: str
    kind: TaskKind
    instruction: str
    labels: list[str] | None
    metric: str
    train: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)
    name: str = ""
    source: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Example]:
        """The ``train`` or ``test`` examples."""
        if name not in ("train", "test"):
            raise ValueError(f"unknown split {name!r}; use 'train' or 'test'")
        return self.train if name == "train" else self.test

    def limit(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Task:
        """A new Task with seeded, label-stratified subsets of the splits (see :func:`subset`).

        ``None`` keeps a split whole. ``source["limit"]`` records the limits and the seed.

        Example:
            >>> small = load_task("sentiment").limit(n_train=50, seed=1)
            >>> len(small.train), small.source["limit"]
            (50, {'n_train': 50, 'n_test': None, 'seed': 1})
        """
        strat = self.labels if self.kind == "classification" else None
        train = self.train if n_train is None else subset(self.train, n_train, seed, strat)
        test = self.test if n_test is None else subset(self.test, n_test, seed, strat)
        source = {**self.source, "limit": {"n_train": n_train, "n_test": n_test, "seed": seed}}
        return dataclasses.replace(
            self,
            labels=list(self.labels) if self.labels is not None else None,
            train=list(train),
            test=list(test),
            source=source,
        )


def examples_hash(examples: list[Example]) -> str:
    """SHA-256 (first 16 hex digits) of a list of examples, to record which data a result used."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.input, ex.output, list(ex.references)]).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# subsets


def subset(
    examples: Sequence[Example], n: int, seed: int = 0, labels: Sequence[str] | None = None
) -> list[Example]:
    """A seeded subset of ``n`` examples, stratified by output label when ``labels`` are given.

    Stratification allocates ``n`` proportionally to the label counts (largest remainder; ties
    go to the label listed first) and gives every present label at least one example when
    ``n`` is at least the number of present labels. Outputs outside ``labels`` form their own
    strata. The chosen examples keep their original relative order; the same ``seed`` always
    gives the same subset. ``n >= len(examples)`` returns all examples in their original order.

    Args:
        examples: the pool.
        n: how many examples to keep (> 0).
        seed: random seed.
        labels: the label set to stratify by (``None``: a plain seeded sample).

    Raises:
        ValueError: ``n <= 0``.

    Example:
        >>> exs = [Example(str(i), "a" if i < 80 else "b") for i in range(100)]
        >>> picked = subset(exs, 10, seed=0, labels=["a", "b"])
        >>> sum(e.output == "b" for e in picked)
        2
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"subset size must be an integer, got {n!r}")
    if n <= 0:
        raise ValueError(f"subset size must be > 0, got {n}")
    examples = list(examples)
    if n >= len(examples):
        return examples
    rng = random.Random(seed)
    if labels is None:
        chosen = rng.sample(range(len(examples)), n)
        return [examples[i] for i in sorted(chosen)]

    # strata in a fixed order: the given labels first, then any other outputs sorted
    order = {lab: i for i, lab in enumerate(labels)}
    strata: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        strata.setdefault(ex.output, []).append(i)
    keys = sorted(strata, key=lambda k: (order.get(k, len(order)), k))
    sizes = [len(strata[k]) for k in keys]
    total = len(examples)

    quotas = [n * s / total for s in sizes]
    alloc = [int(q) for q in quotas]
    rest = n - sum(alloc)
    by_remainder = sorted(range(len(keys)), key=lambda j: (-(quotas[j] - alloc[j]), j))
    for j in by_remainder[:rest]:
        alloc[j] += 1
    if n >= len(keys):  # every present label at least once
        for j in range(len(keys)):
            if alloc[j] == 0:
                donor = max(range(len(keys)), key=lambda d: (alloc[d], -d))
                alloc[donor] -= 1
                alloc[j] = 1

    chosen: list[int] = []
    for k, a in zip(keys, alloc, strict=True):
        chosen.extend(rng.sample(strata[k], a))
    return [examples[i] for i in sorted(chosen)]


# --------------------------------------------------------------------------------------------
# validation helpers


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TaskFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise TaskFormatError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _load_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskFormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def _check_kind(kind: Any, where: str) -> str:
    if kind not in KINDS:
        raise TaskFormatError(f"{where}: unknown kind {kind!r}; use one of {list(KINDS)}")
    return kind


def _check_metric(metric: Any, where: str) -> str:
    if metric not in METRICS:
        raise TaskFormatError(f"{where}: unknown metric {metric!r}; use one of {list(METRICS)}")
    return metric


def _check_labels(labels: Any, where: str) -> list[str]:
    """A classification task's labels: a non-empty list of distinct non-empty strings."""
    if labels is None:
        raise TaskFormatError(f"{where}: a classification task needs labels")
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TaskFormatError(f"{where}: labels must be a list of strings, got {labels!r}")
    if len(labels) < 2:
        raise TaskFormatError(
            f"{where}: a classification task needs at least 2 labels, got {list(labels)!r}"
        )
    for lab in labels:
        if not isinstance(lab, str) or not lab.strip():
            raise TaskFormatError(f"{where}: every label must be a non-empty string, got {lab!r}")
    seen: set[str] = set()
    for lab in labels:
        if lab in seen:
            raise TaskFormatError(f"{where}: duplicate label {lab!r} in {list(labels)!r}")
        seen.add(lab)
    return list(labels)


def _make_example(
    where: str,
    inp: Any,
    out: Any,
    refs: Any,
    kind: str,
    labels: list[str] | None,
    names: tuple[str, str, str] = ("input", "output", "references"),
) -> Example:
    """One validated example; ``where`` is ``file:line`` (or a dataset row) for the messages."""
    in_name, out_name, ref_name = names
    if not isinstance(inp, str):
        raise TaskFormatError(f'{where}: "{in_name}" must be a string, got {inp!r:.80}')
    if not isinstance(out, str):
        raise TaskFormatError(f'{where}: "{out_name}" must be a string, got {out!r:.80}')
    if kind == "classification":
        assert labels is not None
        if out not in labels:
            raise TaskFormatError(
                f"{where}: label {out!r} is not one of the task's labels {labels}"
            )
        return Example(inp, out)
    if not out.strip():
        raise TaskFormatError(f'{where}: "{out_name}" is empty')
    if refs is None:
        return Example(inp, out)
    if (
        isinstance(refs, (str, bytes))
        or not isinstance(refs, Sequence)
        or not refs
        or not all(isinstance(r, str) for r in refs)
    ):
        raise TaskFormatError(
            f'{where}: "{ref_name}" must be a non-empty list of strings, got {refs!r:.80}'
        )
    # keep the invariant: output is the first reference
    return Example(inp, out, (out,) + tuple(r for r in refs if r != out))


def _check_nonempty(examples: list[Example], where: str) -> list[Example]:
    if not examples:
        raise TaskFormatError(f"{where}: no examples (the split is empty)")
    return examples


def _json_list_with_lines(path: Path) -> list[tuple[int, Any]]:
    """The elements of a JSON list file with the line each one starts on."""
    text = _read_text(path)
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


# --------------------------------------------------------------------------------------------
# task folders (task.json + train.jsonl + test.jsonl)


def read_jsonl_examples(
    path: str | os.PathLike, kind: str, labels: list[str] | None
) -> list[Example]:
    """Validated examples of one ``.jsonl`` split file (``{"input", "output"}`` per line).

    Blank lines are skipped; ``"references"`` (generation) must be a list of strings; a
    classification ``"output"`` must be one of ``labels``; other keys are ignored.

    Raises:
        TaskFormatError: naming ``file:line`` and the fault.
    """
    path = Path(path)
    examples: list[Example] = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
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
            _make_example(where, rec["input"], rec["output"], rec.get("references"), kind, labels)
        )
    return _check_nonempty(examples, str(path))


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
    meta = _load_json(meta_path)
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
    kind = _check_kind(meta["kind"], str(meta_path))
    metric = _check_metric(meta.get("metric", DEFAULT_METRIC[kind]), str(meta_path))
    labels = _check_labels(meta.get("labels"), str(meta_path)) if kind == "classification" else None
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
        if not (folder / f).is_file():
            raise TaskFormatError(f"{folder / f}: missing ({what} needs {', '.join(files)})")


# --------------------------------------------------------------------------------------------
# O-LoRA CL_Benchmark folders (labels.json + train.json + test.json)


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
    kind = _check_kind(kind, f"{folder}: kind argument")
    needed = OLORA_FOLDER_FILES if kind == "classification" else ("train.json", "test.json")
    _require_files(folder, needed, "an O-LoRA folder")
    labels = None
    if kind == "classification":
        labels = _check_labels(_load_json(folder / "labels.json"), str(folder / "labels.json"))

    def read(split_file: str) -> list[Example]:
        p = folder / split_file
        out = []
        for line, rec in _json_list_with_lines(p):
            where = f"{p}:{line}"
            if not isinstance(rec, dict):
                raise TaskFormatError(
                    f"{where}: expected a JSON object, got a {type(rec).__name__}"
                )
            for key in ("sentence", "label"):
                if key not in rec:
                    raise TaskFormatError(f'{where}: missing "{key}" (keys: {sorted(rec)})')
            out.append(
                _make_example(
                    where,
                    rec["sentence"],
                    rec["label"],
                    None,
                    kind,
                    labels,
                    names=("sentence", "label", "references"),
                )
            )
        return _check_nonempty(out, str(p))

    task_id = id or folder.resolve().name
    return Task(
        id=task_id,
        kind=kind,  # type: ignore[arg-type]
        instruction=instruction or DEFAULT_INSTRUCTION[kind],
        labels=labels,
        metric=DEFAULT_METRIC[kind],
        train=read("train.json"),
        test=read("test.json"),
        name=name or task_id,
        source={"format": "olora", "path": str(folder.resolve())},
    )


# --------------------------------------------------------------------------------------------
# Hugging Face datasets


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise ImportError(
            'loading Hugging Face datasets needs the "datasets" package: '
            'pip install "taskneurons[hf]"'
        ) from None
    return datasets


def load_hf_task(
    path_or_name: str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    input_field: str,
    output_field: str,
    labels: Sequence[str] | Mapping[Any, str] | None = None,
    kind: str = "classification",
    instruction: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    id: str | None = None,
    name: str | None = None,
    references_field: str | None = None,
    config_name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Task:
    """A task from a Hugging Face dataset.

    ``path_or_name`` is one of: a folder written by ``DatasetDict.save_to_disk`` (read with
    ``datasets.load_from_disk``); a local ``.json``/``.jsonl`` file or a ``{split: file}``
    mapping (read with ``datasets.load_dataset("json", data_files=...)``); a Hub dataset name
    (``datasets.load_dataset(name, config_name)``, needs the network).

    Labels: integer labels of a ``ClassLabel`` feature become the class names. ``labels`` may
    be the label list (default: the ``ClassLabel`` names, else the sorted distinct outputs) or
    a mapping from raw values (ints or strings) to label strings, which renames them.

    Args:
        input_field, output_field: the columns holding the input text and the label/reference.
        references_field: (generation) a column with a list of reference strings.
        train_split, test_split: split names in the dataset.
        id: task id (default: the folder/file stem or the last part of the Hub name).

    Raises:
        TaskFormatError: missing split/column, bad values (naming split and row), or a Hub
            dataset that cannot be reached.
        ImportError: ``datasets`` is not installed (``pip install "taskneurons[hf]"``).

    Example:
        >>> task = load_hf_task("my_saved_dataset", input_field="sentence",
        ...                     output_field="label")  # doctest: +SKIP
    """
    datasets = _import_datasets()
    kind = _check_kind(kind, "load_hf_task: kind argument")
    cache = str(cache_dir) if cache_dir is not None else None
    if isinstance(path_or_name, Mapping):
        files = {str(k): str(v) for k, v in path_or_name.items()}
        for f in files.values():
            if not Path(f).is_file():
                raise TaskFormatError(f"{f}: file not found")
        label_of_source = "json:" + ",".join(f"{k}={v}" for k, v in files.items())
        default_id = Path(next(iter(files.values()))).parent.name or "task"
        dd = _hf_call(
            label_of_source, datasets.load_dataset, "json", data_files=files, cache_dir=cache
        )
        source = {"format": "hf-json", "data_files": files}
    else:
        spec = str(path_or_name)
        p = Path(spec).expanduser()
        if p.is_dir():
            dd = _hf_call(spec, datasets.load_from_disk, str(p))
            default_id = p.resolve().name
            source = {"format": "hf-disk", "path": str(p.resolve())}
        elif p.is_file():
            if p.suffix not in (".json", ".jsonl"):
                raise TaskFormatError(
                    f"{p}: not a .json/.jsonl file or a folder saved with save_to_disk"
                )
            dd = _hf_call(spec, datasets.load_dataset, "json", data_files=str(p), cache_dir=cache)
            default_id = p.stem
            source = {"format": "hf-json", "data_files": str(p.resolve())}
        elif (
            spec.startswith((".", "/", "~"))
            or os.path.isabs(spec)
            or p.suffix in (".json", ".jsonl")
        ):
            raise TaskFormatError(f"{spec}: no such file or folder")
        else:
            dd = _hf_call(
                f"hf:{spec}", datasets.load_dataset, spec, config_name, cache_dir=cache, hub=True
            )
            default_id = config_name or spec.rstrip("/").split("/")[-1]
            source = {"format": "hf-hub", "name": spec, "config": config_name}
        label_of_source = f"hf:{spec}"

    if not isinstance(dd, Mapping):
        raise TaskFormatError(
            f"{label_of_source}: a single Dataset without splits; save a DatasetDict with "
            f"{train_split!r} and {test_split!r} splits"
        )
    for split in (train_split, test_split):
        if split not in dd:
            raise TaskFormatError(
                f"{label_of_source}: no split {split!r} (splits: {sorted(dd)}); "
                f"pass train_split=/test_split="
            )
    for split in (train_split, test_split):
        cols = list(dd[split].column_names)
        for col in (input_field, output_field, references_field):
            if col is not None and col not in cols:
                raise TaskFormatError(
                    f"{label_of_source}: split {split!r} has no column {col!r} (columns: {cols})"
                )

    feature = dd[train_split].features[output_field]
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    mapping = dict(labels) if isinstance(labels, Mapping) else None

    def raw_to_label(value: Any, where: str) -> Any:
        if mapping is not None:
            for key in (value, str(value)):
                if key in mapping:
                    return mapping[key]
            if class_names is not None and isinstance(value, int) and 0 <= value < len(class_names):
                name_ = class_names[value]
                if name_ in mapping:
                    return mapping[name_]
            raise TaskFormatError(f"{where}: label {value!r} is not a key of the labels mapping")
        if class_names is not None and isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(class_names):
                raise TaskFormatError(
                    f"{where}: class index {value} outside the ClassLabel names {class_names}"
                )
            return class_names[value]
        if kind == "classification" and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    raw: dict[str, list[tuple[str, Any, Any, Any]]] = {}
    for split in (train_split, test_split):
        ds = dd[split]
        inputs = ds[input_field]
        outputs = ds[output_field]
        refs = ds[references_field] if references_field else [None] * len(inputs)
        rows = []
        for i, (inp, out, ref) in enumerate(zip(inputs, outputs, refs, strict=True)):
            where = f"{label_of_source} split {split!r} row {i}"
            rows.append((where, inp, raw_to_label(out, where), ref))
        if not rows:
            raise TaskFormatError(f"{label_of_source}: split {split!r} is empty")
        raw[split] = rows

    label_list: list[str] | None = None
    if kind == "classification":
        if mapping is not None:
            label_list = list(dict.fromkeys(mapping.values()))
        elif labels is not None:
            label_list = list(labels)
        elif class_names is not None:
            label_list = class_names
        else:
            seen = {r[2] for rows in raw.values() for r in rows}
            if not all(isinstance(s, str) for s in seen):
                bad = next(r for rows in raw.values() for r in rows if not isinstance(r[2], str))
                raise TaskFormatError(
                    f'{bad[0]}: "{output_field}" must be a string, got {bad[2]!r}'
                )
            label_list = sorted(seen)
        label_list = _check_labels(label_list, f"{label_of_source}: labels")

    names = (input_field, output_field, references_field or "references")
    splits = {
        split: [_make_example(w, i, o, r, kind, label_list, names) for w, i, o, r in rows]
        for split, rows in raw.items()
    }
    task_id = id or default_id
    source.update(
        {
            "input_field": input_field,
            "output_field": output_field,
            "train_split": train_split,
            "test_split": test_split,
        }
    )
    return Task(
        id=task_id,
        kind=kind,  # type: ignore[arg-type]
        instruction=instruction or DEFAULT_INSTRUCTION[kind],
        labels=label_list,
        metric=DEFAULT_METRIC[kind],
        train=splits[train_split],
        test=splits[test_split],
        name=name or task_id,
        source=source,
    )


def _hf_call(what: str, fn, *args, hub: bool = False, **kwargs):
    """Call a ``datasets`` loader; turn its failures into one-line TaskFormatErrors."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if hub:
            raise TaskFormatError(
                f"{what}: could not load the dataset from the Hugging Face Hub "
                f"({type(e).__name__}: {msg}); check the name and the network, or load a "
                f"local copy saved with save_to_disk"
            ) from None
        raise TaskFormatError(f"{what}: could not load ({type(e).__name__}: {msg})") from None


# --------------------------------------------------------------------------------------------
# the one entry point


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
    """Load a task from a spec: a built-in name, a folder, or ``hf:NAME_OR_PATH``.

    Dispatch:
        * a :class:`Task` is returned as is;
        * ``"hf:NAME_OR_PATH"`` -> :func:`load_hf_task` (``kwargs``: ``input_field``,
          ``output_field``, ``labels``, splits, ...; ``kind`` defaults to classification);
        * a built-in demo task name (see :func:`taskneurons.data.builtin.builtin_task_names`)
          -> the generated task (``seed``; ``kwargs``: ``n_train``, ``n_test``); a folder of the
          same name is reached with ``./NAME``;
        * a folder with ``task.json`` -> :func:`load_task_folder` (or the ``task.json`` file);
        * a folder with ``labels.json``/``train.json`` -> :func:`load_olora_folder`
          (``kind`` optional).

    ``name``, ``id`` and ``instruction`` override the loaded values.

    Raises:
        TaskFormatError: the spec names nothing loadable, or a file is malformed.

    Example:
        >>> load_task("arithmetic").metric
        'rougeL'
    """
    if isinstance(spec, Task):
        return spec
    text = os.fspath(spec)
    if text.startswith("hf:"):
        return load_hf_task(
            text[3:],
            id=id,
            name=name,
            instruction=instruction,
            kind=kind or "classification",
            **kwargs,
        )

    from taskneurons.data.builtin import builtin_task, builtin_task_names

    if text in builtin_task_names():
        task = builtin_task(text, seed=seed, **kwargs)
        return _override(task, name=name, id=id, instruction=instruction)

    path = Path(text).expanduser()
    if path.is_file() and path.name == "task.json":
        path = path.parent
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
            f"{path}: a task spec is a folder, a built-in name or hf:...; for a JSON file use "
            f"'hf:{text}' with input_field= and output_field="
        )
    raise TaskFormatError(
        f"unknown task {text!r}: no such folder, not 'hf:...', and not a built-in task "
        f"(built-in: {', '.join(builtin_task_names())})"
    )


def _no_kwargs(kwargs: Mapping[str, Any], path: Path, what: str) -> None:
    if kwargs:
        raise TypeError(f"{path}: unexpected argument(s) {sorted(kwargs)} for {what}")


def _override(task: Task, *, name: str | None, id: str | None, instruction: str | None) -> Task:
    changes = {k: v for k, v in (("name", name), ("id", id), ("instruction", instruction)) if v}
    return dataclasses.replace(task, **changes) if changes else task


__all__ = [
    "DEFAULT_INSTRUCTION",
    "Example",
    "Task",
    "TaskFormatError",
    "TaskKind",
    "examples_hash",
    "load_hf_task",
    "load_olora_folder",
    "load_task",
    "load_task_folder",
    "read_jsonl_examples",
    "subset",
]
