"""Stage checkpoints of a continual run: the method's state and the record of the run so far.

After every stage the experiment writes ``<out>/checkpoint/``: ``state.safetensors`` (the
method's tensors, from :meth:`~taskneurons.continual.base.ContinualMethod.state_dict`) and
``checkpoint.json`` (the stage, the method's JSON-ready state and the run's record: config,
model fingerprint, task order, data hashes, the accuracy matrix so far, reference scores and
the stages' training summaries). Both files are written atomically and carry the stage, so a
pair from two different stages is refused, and a checksum of their content, so a file changed
after it was written is refused too. A resumed run loads the state onto a fresh copy of the
base model and continues with the next stage.

Example:
    >>> write_checkpoint(out / "checkpoint", 0, method.state_dict(), {"matrix": [[80.0]]})  # doctest: +SKIP
    >>> ckpt = read_checkpoint(out / "checkpoint")  # doctest: +SKIP
    >>> ckpt.stage, ckpt.record["matrix"]  # doctest: +SKIP
    (0, [[80.0]])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taskneurons._io import check_record, read_tensors_with_sidecar, write_tensors_with_sidecar

#: format tag of the checkpoint files
FORMAT = "taskneurons.ContinualCheckpoint/1"
TENSORS = "state.safetensors"
SIDECAR = "checkpoint.json"


@dataclass
class StageCheckpoint:
    """A stage checkpoint as read back.

    Attributes:
        stage: the last finished stage (0-based).
        state: the method's state (tensors and JSON values by key).
        record: the run's record (see the module docstring).
    """

    stage: int
    state: dict[str, Any]
    record: dict[str, Any]


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a checkpoint."""
    return (Path(folder) / SIDECAR).is_file()


def checkpoint_sidecar(folder: str | os.PathLike) -> dict[str, Any] | None:
    """``checkpoint.json`` of the checkpoint in ``folder`` (its checksum checked), or ``None``.

    A cheap look (the tensors are not read): its ``stage``, the method's JSON-ready ``state``
    and the run's ``record`` (:func:`read_checkpoint` checks the pair of files).

    Raises:
        ChangedFileError: ``checkpoint.json`` does not match the checksum saved in it.
        ValueError: an unreadable ``checkpoint.json``.
    """
    path = Path(folder) / SIDECAR
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a readable continual checkpoint ({exc})") from None
    return check_record(data, path)


def checkpoint_stage(folder: str | os.PathLike) -> int | None:
    """The stage of the checkpoint in ``folder`` (from ``checkpoint.json`` alone), or ``None``.

    A cheap look before resuming (:func:`read_checkpoint` checks the pair of files).

    Raises:
        ChangedFileError: ``checkpoint.json`` does not match the checksum saved in it.
        ValueError: an unreadable ``checkpoint.json``.
    """
    data = checkpoint_sidecar(folder)
    if data is None:
        return None
    try:
        return int(data["stage"])
    except (KeyError, TypeError, ValueError) as exc:
        path = Path(folder) / SIDECAR
        raise ValueError(f"{path}: not a readable continual checkpoint ({exc})") from None


def write_checkpoint(
    folder: str | os.PathLike, stage: int, state: dict[str, Any], record: dict[str, Any]
) -> Path:
    """Write the method ``state`` and the run ``record`` after ``stage`` (atomically).

    Tensors go to ``state.safetensors`` (contiguous CPU copies), everything else to
    ``checkpoint.json``. Returns the JSON file's path.
    """
    folder = Path(folder)
    tensors = {
        k: v.detach().to("cpu").contiguous().clone()
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    }
    values = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    sidecar = {"format": FORMAT, "stage": stage, "state": values, "record": record}
    header = {"format": FORMAT, "stage": str(stage)}
    write_tensors_with_sidecar(folder / TENSORS, folder / SIDECAR, tensors, header, sidecar)
    return folder / SIDECAR


def read_checkpoint(folder: str | os.PathLike) -> StageCheckpoint | None:
    """The checkpoint in ``folder``, or ``None`` when there is none.

    Raises:
        ChangedFileError: a file does not match the checksum saved in it (both files carry
            one: ``state.safetensors`` in its header, ``checkpoint.json`` as its ``checksum``).
        ValueError: damaged files, another format, or files of two different stages.
    """
    folder = Path(folder)
    if not has_checkpoint(folder):
        return None
    header, tensors, sidecar = read_tensors_with_sidecar(
        folder / TENSORS, folder / SIDECAR, FORMAT, "continual checkpoint"
    )
    if header.get("stage") != str(sidecar.get("stage")):
        raise ValueError(
            f"{folder}: {TENSORS} is of stage {header.get('stage')} but {SIDECAR} of stage "
            f"{sidecar.get('stage')}; the checkpoint was interrupted while being written"
        )
    state = {**sidecar["state"], **tensors}
    return StageCheckpoint(int(sidecar["stage"]), state, sidecar["record"])
