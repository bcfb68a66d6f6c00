"""The ``torch.distributed`` process group taskneurons starts, and its end.

Under ``torchrun`` or ``accelerate launch`` a process joins the default process group when the
first ``accelerate.Accelerator`` is made. A gloo group that is still alive when the
interpreter exits makes it abort now and then after the work is done (rank 1: SIGABRT,
"terminate called without an active exception"). So the tool ends each group it starts, and
only those: a group the caller's code started (its own ``Accelerator``, its own
``init_process_group``) is the caller's to end.

* :func:`new_accelerator` (what :func:`taskneurons.training.loop.train` makes when it is given
  no accelerator): when making it started the group, the group is ended at interpreter exit
  (``atexit``), after every later use in the process;
* :func:`ending_started_group`, around a whole command (``taskneurons.cli.main``): a group
  started inside it is ended when the command returns; one running before it is left alone.

This module imports neither torch nor accelerate until it is used (the CLI starts fast).

Example:
    >>> with ending_started_group():  # doctest: +SKIP
    ...     train(model, tok, task, TrainConfig())  # under torchrun: starts the gloo group
    >>> group_running()  # doctest: +SKIP
    False
"""

from __future__ import annotations

import atexit
import contextlib
import sys
from collections.abc import Iterator

from taskneurons._ranks import several, world_size


def group_running() -> bool:
    """Whether this process is in an initialised default process group (torch not imported:
    ``False``, without importing it)."""
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized())


def end_process_group() -> bool:
    """Destroy the default process group, if one is running; ``True`` when one was ended.

    Accelerate's shared state is reset too, so an ``Accelerator`` made afterwards in this
    process starts a group again instead of using the one that is gone.
    """
    if not group_running():
        return False
    sys.modules["torch.distributed"].destroy_process_group()
    state = sys.modules.get("accelerate.state")
    if state is not None:
        state.AcceleratorState._reset_state(reset_partial_state=True)
        state.GradientState._reset_state()
    return True


def new_accelerator(**kwargs):
    """An ``accelerate.Accelerator(**kwargs)``; if making it started the process group
    (``torchrun``), the group is ended at interpreter exit.

    Example:
        >>> accelerator = new_accelerator()  # doctest: +SKIP
        >>> accelerator.num_processes  # 2 under torchrun --nproc_per_node 2  # doctest: +SKIP
        2
    """
    from accelerate import Accelerator

    running = group_running()
    accelerator = Accelerator(**kwargs)
    if not running and group_running():
        atexit.register(end_process_group)
    return accelerator


@contextlib.contextmanager
def ending_started_group() -> Iterator[None]:
    """End, on the way out, a process group started inside the block (not one running before).

    Example:
        >>> with ending_started_group():  # doctest: +SKIP
        ...     main_command()
    """
    running = group_running()
    try:
        yield
    finally:
        if not running:
            end_process_group()


def run_accelerator(device: str):
    """The accelerator of a run under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1:
    it starts the process group, on the CPU for a ``cpu`` run); ``None`` in one process, where
    nothing is imported.

    Example:
        >>> run_accelerator("cpu") is None  # one process
        True
    """
    if world_size() <= 1:
        return None
    return new_accelerator(cpu=str(device).split(":")[0] == "cpu")


def process_device(device: str, accelerator) -> str:
    """Where this process puts the model: ``device``, or under several processes the
    accelerator's device of the same kind (``cuda`` -> ``cuda:<LOCAL_RANK>``).

    Example:
        >>> process_device("cuda", None)
        'cuda'
    """
    if not several(accelerator):
        return device
    mine = accelerator.device
    return str(mine) if str(device).split(":")[0] == mine.type else device
