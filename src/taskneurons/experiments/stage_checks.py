"""What the runner checks of every stage against the run's tasks, before the model loads.

* :func:`check_stage_tasks`: each stage's ``check_tasks(tasks, key)`` (tasks named by
  ``budget.tasks``, ``continual.order`` or the groups are the run's; a stage with a task x task
  matrix has two tasks or more), refused as a :class:`~taskneurons.config.ConfigError` naming
  the file and the key.
* :func:`fit_sizes`: a size (``n_train``, ``n_test``, ``n_examples``) beyond the largest split
  of the tasks is lowered to that split's size, the number of examples a task can give, so the
  resolved ``config.yaml`` and every record hold the size actually used.

Example:
    >>> fit_sizes(config, tasks).deactivate.n_test  # doctest: +SKIP
    8
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from taskneurons.config import ConfigError
from taskneurons.data.tasks import Task
from taskneurons.experiments.experiment_file import ExperimentFile
from taskneurons.experiments.stage import stage as stage_named

log = logging.getLogger(__name__)

#: size fields -> the split they count (``None``: the config's own ``split`` field)
SPLIT_OF = {"n_train": "train", "n_test": "test", "n_examples": None}


def check_stage_tasks(config: ExperimentFile, tasks: Sequence[Task], source: str) -> None:
    """Call ``check_tasks(tasks, name)`` of every stage section that runs and has one.

    Raises:
        ConfigError: a section's refusal, prefixed with ``source`` (the message names the key).
    """
    for name in config.stages():
        check = getattr(getattr(config, name), "check_tasks", None)
        if check is None:
            continue
        try:
            check(tasks, name)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def run_sections(config: ExperimentFile) -> list[str]:
    """The sections the run's stages read: each stage's own and those it uses."""
    names = [n for s in config.stages() for n in (s, *stage_named(s).uses)]
    return list(dict.fromkeys(names))


def fit_sizes(config: ExperimentFile, tasks: Sequence[Task]) -> ExperimentFile:
    """``config`` with every size of a section that runs at most the largest split it counts.

    ``subset`` keeps all of a split's examples for any size at least its length, so a lower
    size gives the very same examples; the lowered value is what the run records.
    """
    sections = dict(config.sections)
    for name in run_sections(config):
        sections[name] = _fit(sections[name], tasks, name)
    if all(sections[n] is config.sections[n] for n in sections):
        return config
    return dataclasses.replace(config, sections=sections)


def _fit(obj: Any, tasks: Sequence[Task], key: str) -> Any:
    """The config ``obj`` (section ``key``) with its sizes and those nested in it fitted."""
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not f.init:
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            new = _fit(value, tasks, f"{key}.{f.name}")
        elif f.name in SPLIT_OF and isinstance(value, int) and not isinstance(value, bool):
            new = _largest(value, SPLIT_OF[f.name] or getattr(obj, "split", "train"), tasks)
            if new != value:
                log.info("%s.%s: %d is more than any task's %s split; lowered to %d", key,
                         f.name, value, SPLIT_OF[f.name] or "scored", new)  # fmt: skip
        else:
            continue
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(obj, **changes) if changes else obj


def _largest(size: int, split: str, tasks: Sequence[Task]) -> int:
    """``size``, or the length of the largest ``split`` of ``tasks`` when that is smaller."""
    lengths = [len(getattr(t, split, None) or []) for t in tasks]
    most = max(lengths, default=0)
    return min(size, most) if most > 0 else size
