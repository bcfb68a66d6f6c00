"""Tasks: examples, labels, instruction and metric of one classification or generation task."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

TaskKind = Literal["classification", "generation"]


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


def examples_hash(examples: list[Example]) -> str:
    """SHA-256 (first 16 hex digits) of a list of examples, to record which data a result used."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.input, ex.output, list(ex.references)]).encode())
    return h.hexdigest()[:16]
