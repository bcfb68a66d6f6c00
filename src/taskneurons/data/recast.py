"""Tasks recast to one label set: different skills, the same answers (a shared-label suite).

Tasks that answer with disjoint label sets (Good/Bad, World/Sports/..., fourteen DBpedia classes)
make "task-specific neurons" partly a matter of which label tokens a task writes. A suite of tasks
of different skills that all answer ``yes`` or ``no`` removes that confound. A recast is a task
spec file (YAML) read wherever a task spec is (``tasks:`` of an experiment file, ``--tasks``,
:func:`~taskneurons.data.load.load_task`)::

    # sports.yaml                          (the task id is the file's stem)
    recast: ../../../../shared/data/agnews  # a task folder, relative to this file
    instruction: Is this news article about sports? Answer yes or no.
    yes_labels: [Sports]                    # these labels answer yes, the others no

    # concepts.yaml                         (pairs: a generation task as "does it match?")
    recast: ../../../../shared/data/commongen
    instruction: Does the sentence use all of the concepts? Answer yes or no.
    pair: Sentence                          # yes: its own output; no: another example's

Every split keeps its source split (no example moves between train and test), and is balanced:
as many ``yes`` as ``no``, drawn with ``seed`` (at most ``n_train``/``n_test`` in all).

Example:
    >>> spec = RecastSpec(recast="agnews", instruction="Sports?", yes_labels=["Sports"])
    >>> spec.labels
    ['yes', 'no']
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from taskneurons.config import Config, ConfigError, build
from taskneurons.data.formats import load_task_folder
from taskneurons.data.tasks import Example, Task, TaskFormatError


@dataclass
class RecastSpec(Config):
    """A recast task (see the module docstring).

    Attributes:
        recast: the source task folder (relative paths: to the spec file).
        instruction: the yes/no question the recast task asks.
        yes_labels: classification source: the source labels that answer ``yes`` (the others
            ``no``; not ``yes:``, which YAML reads as ``true``).
        pair: generation (or any) source: the name of the candidate line; ``yes`` examples show
            their own output, ``no`` examples another example's of the same split.
        n_train, n_test: at most this many examples per split, half ``yes`` (``None``: all the
            balance allows).
        seed: seed of the draws.
        name: a readable name (default: the id).
    """

    labels: ClassVar[list[str]] = ["yes", "no"]

    recast: str = ""
    instruction: str = ""
    yes_labels: list[str] | None = None
    pair: str | None = None
    n_train: int | None = 500
    n_test: int | None = 200
    seed: int = 0
    name: str = ""

    def validate(self) -> None:
        if not self.recast or not self.instruction:
            raise ValueError("a recast needs `recast` (the source task) and `instruction`")
        if (self.yes_labels is None) == (self.pair is None):
            raise ValueError(
                "give either `yes_labels` (labels that answer yes) or `pair` (a line name)"
            )
        if self.yes_labels is not None and not self.yes_labels:
            raise ValueError("yes_labels: give at least one source label")


def recast_task(path: Path, data: dict[str, Any], task_id: str) -> Task:
    """The task a recast spec file describes (``path``: the file, ``data``: its mapping).

    Raises:
        TaskFormatError: a bad spec, a missing source, a ``yes`` label the source has not, a
            source without both answers; the message names the spec file.
    """
    try:
        spec = build(RecastSpec, data, where=str(path))
    except ConfigError as exc:
        raise TaskFormatError(str(exc)) from None
    source = load_task_folder(path.parent / spec.recast)
    splits = {}
    for split, n in (("train", spec.n_train), ("test", spec.n_test)):
        examples = getattr(source, split)
        rng = random.Random(f"{spec.seed}:{split}")
        pairs = (
            _by_labels(spec, source, examples, path)
            if spec.yes_labels
            else _by_pairs(spec, examples)
        )
        splits[split] = _balanced(pairs, n, rng, f"{path}: {split}")
    record = {"recast": str((path.parent / spec.recast).resolve()), "spec_file": str(path)}
    record["source_task"] = source.id
    return Task(
        id=task_id, kind="classification", instruction=spec.instruction,
        labels=list(RecastSpec.labels), metric="accuracy", train=splits["train"],
        test=splits["test"], name=spec.name or task_id, source=record,
    )  # fmt: skip


def _by_labels(spec: RecastSpec, source: Task, examples: list[Example], path: Path) -> dict:
    """``{"yes": [...], "no": [...]}``: a source example answers yes when its label is in ``yes``."""
    unknown = sorted(set(spec.yes_labels or []) - set(source.labels or []))
    if unknown:
        raise TaskFormatError(f"{path}: yes_labels: {unknown} are not labels of {source.id} "
                              f"({source.labels})")  # fmt: skip
    out: dict[str, list[Example]] = {"yes": [], "no": []}
    for ex in examples:
        out["yes" if ex.output in spec.yes_labels else "no"].append(Example(ex.input, ""))
    return out


def _by_pairs(spec: RecastSpec, examples: list[Example]) -> dict:
    """Half the examples (seeded) with their own output (yes), half with another's (no)."""
    rng = random.Random(f"{spec.seed}:pairs:{len(examples)}")
    order = list(range(len(examples)))
    rng.shuffle(order)
    half = len(order) // 2
    yes, no = order[:half], order[half : 2 * half]
    others = no[1:] + no[:1]  # each "no" input gets the next "no" example's output
    line = spec.pair

    def shown(i: int, j: int) -> Example:
        return Example(f"{examples[i].input}\n{line}: {examples[j].output}", "")

    return {
        "yes": [shown(i, i) for i in yes],
        "no": [shown(i, j) for i, j in zip(no, others, strict=True)],
    }


def _balanced(pairs: dict, n: int | None, rng: random.Random, where: str) -> list[Example]:
    """As many yes as no (at most ``n`` in all), drawn by ``rng``, in a seeded order."""
    per = min(len(pairs["yes"]), len(pairs["no"]))
    if n is not None:
        per = min(per, n // 2)
    if per == 0:
        raise TaskFormatError(f"{where}: the source gives no example of one answer")
    chosen = []
    for answer in RecastSpec.labels:
        drawn = rng.sample(pairs[answer], per)
        chosen += [dataclasses.replace(ex, output=answer) for ex in drawn]
    rng.shuffle(chosen)
    return chosen
