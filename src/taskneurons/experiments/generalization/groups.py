"""Task groups of the generalization experiments (PAPER.md Table 3), and their checks (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from taskneurons.config import Config


@dataclass
class TaskGroup(Config):
    """A group of PAPER.md Table 3: trained together, tested in-domain and out-of-domain.

    Attributes:
        name: the group's name in tables and file names (``a``, ``cls``, ...).
        train: ids of the training tasks (also the in-domain test tasks).
        test: ids of the out-of-domain test tasks (none of them a training task).

    Example:
        >>> TaskGroup("a", ["amazonfood", "qqp"], ["sst2"]).test
        ['sst2']
    """

    name: str = ""
    train: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"a group needs a name of letters, digits, - and _, got {self.name!r}")
        if not self.train or not self.test:
            raise ValueError(f"group {self.name!r}: needs training tasks and test tasks")
        for key, ids in (("train", self.train), ("test", self.test)):
            if len(set(ids)) != len(ids):
                raise ValueError(f"group {self.name!r}: {key} lists a task twice: {ids}")
        both = sorted(set(self.train) & set(self.test))
        if both:
            raise ValueError(
                f"group {self.name!r}: {both} are both training and out-of-domain test tasks"
            )


def default_groups() -> list[TaskGroup]:
    """PAPER.md Table 3: (a) classification, (b) generation.

    The paper's "Amazon" is its AmazonFood task (the paper's six classification tasks are
    AmazonFood, SST-2, QQP, PAWS, MNLI, GPTNLI), so group ``a`` trains ``amazonfood``.
    """
    return [
        TaskGroup("a", ["amazonfood", "qqp", "mnli"], ["sst2", "paws", "gptnli"]),
        TaskGroup("b", ["sciq", "e2e", "cnn_dailymail"], ["tweetqa", "commongen", "xsum"]),
    ]


def check_groups(groups: Sequence[TaskGroup], tasks: Sequence[Any], key: str) -> None:
    """``ValueError`` naming ``key`` unless every group's tasks are among ``tasks`` (the run's)
    and the groups' names differ.

    Example:
        >>> class T:
        ...     def __init__(self, id): self.id = id
        >>> check_groups([TaskGroup("a", ["x"], ["y"])], [T("x")], "overlap.groups")
        Traceback (most recent call last):
        ...
        ValueError: overlap.groups: group 'a' names tasks ['y'] that are not among the run's tasks ['x']; add them to tasks: or change the group
    """
    ids = [t.id for t in tasks]
    for g in groups:
        missing = [t for t in [*g.train, *g.test] if t not in ids]
        if missing:
            raise ValueError(
                f"{key}: group {g.name!r} names tasks {missing} that are not among the run's "
                f"tasks {ids}; add them to tasks: or change the group"
            )
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"{key}: two groups have one name: {names}")


class GroupsConfig:
    """What the configs holding ``groups`` share: the check of the groups against the run's
    tasks, before the model loads."""

    groups: list[TaskGroup]

    def check_tasks(self, tasks: Sequence[Any], key: str) -> None:
        """Every group names tasks of the run (``key``: the stage's section)."""
        check_groups(self.groups, tasks, f"{key}.groups")


def check_percents(values: Sequence[float], key: str, low_open: bool = True) -> None:
    """``ValueError`` unless ``values`` is a non-empty list of distinct percentages.

    ``low_open``: each in ``(0, 100]``; otherwise in ``[0, 100]``.
    """
    if not values:
        raise ValueError(f"{key}: give at least one value")
    for v in values:
        if not (0 < v <= 100 if low_open else 0 <= v <= 100):
            span = "(0, 100]" if low_open else "[0, 100]"
            raise ValueError(f"{key}: {v!r} is not a percentage in {span}")
    if len(set(values)) != len(values):
        raise ValueError(f"{key}: a value is listed twice: {list(values)}")


#: How a generalization stage reads a proportion ``p``: ``model``, the paper's (the top ``p`` %
#: of all neurons under the selection, so 100 % is every neuron); ``set``, the top ``p`` % of
#: each task's set at the detect ``k`` by its own relevance.
ProportionOf = Literal["model", "set"]
