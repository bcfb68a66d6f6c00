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
import random
from collections.abc import Sequence
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

    def __post_init__(self) -> None:
        check_task_id(self.id, self.source)

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


def check_task_id(task_id: Any, source: dict | None = None) -> str:
    """``task_id`` if it is a plain, safe file name (run folders and files are named after it).

    Refused: an empty id, ``.``/``..``, a path separator (``../x``, ``/tmp/x``, ``a/b``), a
    leading dot (a hidden file), control characters, or more than 100 characters.

    Raises:
        TaskFormatError: naming the id and where the task came from (``source``).
    """
    bad = None
    if not isinstance(task_id, str) or not task_id.strip():
        bad = "it is empty" if isinstance(task_id, str) else "it is not a string"
    elif "/" in task_id or "\\" in task_id:
        bad = "it holds a path separator"
    elif task_id.startswith("."):
        bad = "it starts with a dot"
    elif any(ord(c) < 32 or ord(c) == 127 for c in task_id) or task_id != task_id.strip():
        bad = "it holds control characters or surrounding spaces"
    elif len(task_id) > 100:
        bad = "it is longer than 100 characters"
    if bad is None:
        return task_id
    where = _source_text(source or {})
    raise TaskFormatError(
        f"task id {task_id!r}{where} is not a plain file name ({bad}); results are written to "
        "files named after the id: use letters, digits, '-', '_' and '.'"
    )


def _source_text(source: dict) -> str:
    for key in ("path", "name", "data_files"):
        if source.get(key):
            return f" (from {source[key]})"
    return ""


def examples_hash(examples: list[Example]) -> str:
    """SHA-256 (first 16 hex digits) of a list of examples, to record which data a result used."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.input, ex.output, list(ex.references)]).encode())
    return h.hexdigest()[:16]


def example_key(ex: Example) -> str:
    """SHA-256 (first 16 hex digits) of one example: how a fine-tuned model records the
    examples it was trained on, so that relevance scoring can leave them out.

    Example:
        >>> example_key(Example("great film", "Good")) == example_key(Example("great film", "Good"))
        True
    """
    return examples_hash([ex])


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
    alloc = _allocate(n, [len(strata[k]) for k in keys])
    chosen: list[int] = []
    for k, a in zip(keys, alloc, strict=True):
        chosen.extend(rng.sample(strata[k], a))
    return [examples[i] for i in sorted(chosen)]


def _allocate(n: int, sizes: list[int]) -> list[int]:
    """``n`` split over strata of ``sizes`` in proportion (largest remainder, ties to the
    first); with ``n >= len(sizes)`` every stratum gets at least one.

    Example:
        >>> _allocate(10, [80, 20]), _allocate(3, [98, 1, 1])
        ([8, 2], [1, 1, 1])
    """
    total = sum(sizes)
    quotas = [n * s / total for s in sizes]
    alloc = [int(q) for q in quotas]
    rest = n - sum(alloc)
    by_remainder = sorted(range(len(sizes)), key=lambda j: (-(quotas[j] - alloc[j]), j))
    for j in by_remainder[:rest]:
        alloc[j] += 1
    if n >= len(sizes):  # every present label at least once
        for j in range(len(sizes)):
            if alloc[j] == 0:
                donor = max(range(len(sizes)), key=lambda d: (alloc[d], -d))
                alloc[donor] -= 1
                alloc[j] = 1
    return alloc


def read_text(path: Path) -> str:
    """The UTF-8 text of a task file (a leading BOM dropped); missing/undecodable -> error."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TaskFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise TaskFormatError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_json(path: Path) -> Any:
    """The parsed JSON of a task file; invalid JSON -> ``TaskFormatError`` naming the line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskFormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def check_kind(kind: Any, where: str) -> str:
    """``kind`` if it is one of :data:`KINDS`; ``where`` names the file for the message."""
    if kind not in KINDS:
        raise TaskFormatError(f"{where}: unknown kind {kind!r}; use one of {list(KINDS)}")
    return kind


def check_metric(metric: Any, where: str) -> str:
    """``metric`` if it is one of :data:`METRICS`; ``where`` names the file for the message."""
    if metric not in METRICS:
        raise TaskFormatError(f"{where}: unknown metric {metric!r}; use one of {list(METRICS)}")
    return metric


def check_labels(labels: Any, where: str) -> list[str]:
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


def make_example(
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


def check_nonempty(examples: list[Example], where: str) -> list[Example]:
    """``examples`` if there is at least one; ``where`` names the split file for the message."""
    if not examples:
        raise TaskFormatError(f"{where}: no examples (the split is empty)")
    return examples
