"""A validation split carved from a task's train examples, disjoint from training and test.

Hyper-parameters are chosen on examples no score reported later sees: the validation examples
of a task are drawn (label-stratified, seeded) from its train examples that are *not* among the
ones a run trains on, and whose input text appears neither among those nor among the task's
test inputs (a duplicate text in train and test would leak the test set into the choice).

Example:
    >>> from taskneurons.data.tasks import Example, Task
    >>> exs = [Example(f"x{i}", "ab"[i % 2]) for i in range(10)]
    >>> task = Task(id="t", kind="classification", instruction="", labels=["a", "b"],
    ...             metric="accuracy", train=exs, test=[Example("x9", "b")])
    >>> [e.input for e in validation_split(task, exs[:4], 3, seed=0)]
    ['x5', 'x6', 'x8']
"""

from __future__ import annotations

from collections.abc import Sequence

from taskneurons.data.tasks import Example, Task, subset


def validation_split(task: Task, used: Sequence[Example], n: int, seed: int = 0) -> list[Example]:
    """``n`` train examples of ``task`` outside ``used`` and outside its test inputs.

    Args:
        task: the task (its whole train split, its test split).
        used: the train examples a run trains on.
        n: how many validation examples (label-stratified for classification, seeded).
        seed: seed of the draw.

    Raises:
        ValueError: fewer than ``n`` train examples are left.
    """
    taken = {e.input for e in used} | {e.input for e in task.test}
    pool = [e for e in task.train if e.input not in taken]
    if len(pool) < n:
        raise ValueError(
            f"task {task.id!r}: {n} validation examples asked for, but only {len(pool)} train "
            f"examples are left outside the {len(used)} trained on and the test inputs"
        )
    labels = task.labels if task.kind == "classification" else None
    return subset(pool, n, seed=seed, labels=labels)
