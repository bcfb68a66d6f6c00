"""Checks shared by the stage configs: counts that must be at least 1, and what a stage's
settings must hold of the run's tasks (checked before the model loads). No torch.

A stage config that names tasks (``budget.tasks``, ``continual.order``, the groups) or needs
several of them (a task x task matrix) has a ``check_tasks(tasks, key)`` method; the runner calls
it for every stage of the file once the tasks are loaded, before the model is, and reports a
``ValueError`` as the file's error. The helpers here word those refusals alike.

Example:
    >>> class T:
    ...     def __init__(self, id): self.id = id
    >>> check_ids(["mood"], [T("mood"), T("answer")], "budget.tasks")
    >>> check_ids(["sst2"], [T("mood")], "budget.tasks")
    Traceback (most recent call last):
    ...
    ValueError: budget.tasks: ['sst2'] are not among the tasks ['mood']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: why a stage compares tasks with each other (the refusal of a run with one task says it)
MATRIX = "its task x task matrix and specificity statistics compare each task with the others"


def check_count(tasks: Sequence[Any], stage: str, why: str = MATRIX, least: int = 2) -> None:
    """``ValueError`` (key ``tasks``) unless the run has at least ``least`` tasks."""
    if len(tasks) < least:
        ids = [t.id for t in tasks]
        raise ValueError(
            f"tasks: {stage} needs at least {least} tasks ({why}); got {len(ids)}: {ids}"
        )


def check_ids(ids: Sequence[str] | None, tasks: Sequence[Any], key: str) -> None:
    """``ValueError`` naming ``key`` unless every id of ``ids`` (``None``: all) is a task's."""
    have = [t.id for t in tasks]
    unknown = [i for i in ids or [] if i not in have]
    if unknown:
        raise ValueError(f"{key}: {unknown} are not among the tasks {have}")


def check_not_empty(ids: Sequence[str] | None, key: str = "tasks") -> None:
    """``ValueError`` for an empty list of task ids (``None`` means all tasks)."""
    if ids is not None and not ids:
        raise ValueError(f"{key}: an empty list trains no task; give task ids, or null for all")


def check_counts(config: Any, *names: str) -> None:
    """``ValueError`` unless each field ``names`` of ``config`` (resamples, draws) is >= 1.

    Example:
        >>> class C: n_boot = 0
        >>> check_counts(C(), "n_boot")
        Traceback (most recent call last):
        ...
        ValueError: n_boot must be >= 1, got 0
    """
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
