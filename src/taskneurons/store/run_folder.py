"""The layout of a run folder, owned in one place: where the runner writes, where readers look.

A run of an experiment file writes (``taskneurons run``)::

    <out>/config.yaml               the resolved experiment file (rerunnable)
    <out>/run_settings.json         the settings the folder's results were made with
    <out>/README.md                 an index of what the folder holds
    <out>/<files of the stage>      a run of one stage writes into the run folder itself
    <out>/<stage>/<files>           a run of several stages: one folder per stage

Each stage records how its results were made in ``<stage>_config.json`` (a detection in
``detect_config.json``) beside its result files; a detection keeps each task's set as
``<task>/neurons.safetensors``. ``taskneurons analyze`` writes into ``analyze-<analysis>/``
folders, which are never taken for a stage's folder.

Example:
    >>> run = RunFolder("runs/generalization")
    >>> run.stage_dir("overlap", ["overlap", "similarity"])
    PosixPath('runs/generalization/overlap')
    >>> run.find("similarity_records.json")  # doctest: +SKIP
    PosixPath('runs/generalization/similarity/similarity_records.json')
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from taskneurons._io import check_record
from taskneurons._ranks import one_writer

#: the resolved experiment file of a run
CONFIG_FILE = "config.yaml"
#: the index of a run folder
INDEX_FILE = "README.md"
#: the settings a run folder's results were made with (written when a run is accepted)
RUN_RECORD = "run_settings.json"
#: a stage's record: ``<stage>_config.json``
RECORD_SUFFIX = "_config.json"
#: a task's neuron set in a detection folder: ``<task>/neurons.safetensors``
SETS_FILE = "neurons.safetensors"
#: the folders ``taskneurons analyze`` writes into: ``analyze-<analysis>``
ANALYSIS_PREFIX = "analyze-"


class FinishedRunError(ValueError):
    """A folder that holds no finished run of the needed stage (the message says which)."""


def read_record(
    path: str | os.PathLike, what: str = "record", error: type[Exception] = FinishedRunError
) -> dict[str, Any]:
    """The JSON object in ``path`` (``error`` naming the file when there is none or it is not
    one); a record that carries a checksum is verified, and returned without it.

    Raises:
        ChangedFileError: the record does not match the checksum saved in it.

    Example:
        >>> read_record("runs/x/overlap_config.json")["groups"]  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no {what} there (the stage did not finish in that folder)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not a readable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: not a {what} (expected a JSON object)")
    return check_record(data, path)


class RunFolder:
    """A run folder (or one stage's folder of it) and what it holds.

    Args:
        path: the folder (it need not exist yet).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        """``config.yaml``: the resolved experiment file."""
        return self.path / CONFIG_FILE

    @property
    def index_path(self) -> Path:
        """``README.md``: what the folder holds."""
        return self.path / INDEX_FILE

    @property
    def run_record_path(self) -> Path:
        """``run_settings.json``: the settings the folder's results were made with."""
        return self.path / RUN_RECORD

    def held_settings(self) -> dict[str, Any] | None:
        """The settings in ``run_settings.json`` (``None`` without one).

        Raises:
            FinishedRunError: the file is not a readable record.
            ChangedFileError: it does not match the checksum saved in it.

        Example:
            >>> RunFolder("runs/sweep").held_settings()["sweep.k"]  # doctest: +SKIP
            [1.0, 10.0]
        """
        if not self.run_record_path.is_file():
            return None
        settings = read_record(self.run_record_path, "run record").get("settings")
        if not isinstance(settings, dict):
            raise FinishedRunError(f"{self.run_record_path}: not a run record (no settings)")
        return settings

    def clear(self) -> None:
        """Remove everything in the folder (hidden files too), keeping the folder itself.

        Example:
            >>> RunFolder("runs/old").clear()  # doctest: +SKIP
        """
        with one_writer() as writes:  # several processes: the main one removes
            for path in sorted(self.path.iterdir()) if self.path.is_dir() and writes else []:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()

    def settings(self) -> dict[str, Any]:
        """The mapping in ``config.yaml`` (``{}`` without one)."""
        if not self.config_path.is_file():
            return {}
        data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def stage_dir(self, stage: str, stages: Sequence[str]) -> Path:
        """Where ``stage`` writes in a run of ``stages``: the run folder itself when it runs
        alone, else ``<run>/<stage>/``."""
        return self.path if len(stages) == 1 else self.path / stage

    def stage_dirs(self, stages: Sequence[str]) -> dict[str, Path]:
        """Each stage of a run of ``stages`` -> its folder."""
        return {stage: self.stage_dir(stage, stages) for stage in stages}

    def ran(self, stages: Sequence[str]) -> list[str]:
        """Those of ``stages`` (a run's, in order) whose folder holds their files."""
        dirs = self.stage_dirs(stages)
        return [s for s in stages if dirs[s].is_dir() and any(self.entries(dirs[s]))]

    @staticmethod
    def record_name(stage: str) -> str:
        """The name of a stage's record: ``<stage>_config.json``."""
        return stage + RECORD_SUFFIX

    def find(self, name: str) -> Path | None:
        """``<run>/name`` or ``<run>/<stage>/name`` (the first in sorted order; never in an
        ``analyze-*`` folder), or ``None``."""
        if (self.path / name).is_file():
            return self.path / name
        found = sorted(
            p for p in self.path.glob(f"*/{name}") if not p.parent.name.startswith(ANALYSIS_PREFIX)
        )
        return found[0] if found else None

    def record(self, stage: str, name: str | None = None) -> dict[str, Any] | None:
        """The record of ``stage`` (``name``: its file, default ``<stage>_config.json``) in
        this folder or its stage folder, or ``None`` when there is none."""
        path = self.find(name or self.record_name(stage))
        return None if path is None else read_record(path)

    def detect_dir(self) -> Path:
        """The folder holding ``<task>/neurons.safetensors``: this one, or its ``detect/``.

        Raises:
            FileNotFoundError: the folder does not exist.
        """
        if not self.path.is_dir():
            raise FileNotFoundError(f"neuron folder not found: {self.path}")
        inner = self.path / "detect"
        if inner.is_dir() and not self.set_tasks():
            return inner
        return self.path

    def neuron_sets_dir(self) -> Path | None:
        """Where the neuron sets a stage of this folder used are kept: this folder when it
        holds sets (a sweep's cell), else the ``detect/`` folder beside it (the run's detect
        stage), else the ``neurons:`` folder of its run's ``config.yaml``; ``None`` when there
        are none."""
        if self.set_tasks():
            return self.path
        beside = self.path.parent / "detect"
        if RunFolder(beside).set_tasks():
            return beside
        for run in (self, RunFolder(self.path.parent)):
            neurons = run.settings().get("neurons")
            if neurons and Path(neurons).is_dir():
                return RunFolder(neurons).detect_dir()
        return None

    def set_path(self, task: str) -> Path:
        """Where task ``task``'s neuron set is kept: ``<folder>/<task>/neurons.safetensors``."""
        return self.path / task / SETS_FILE

    def set_tasks(self) -> list[str]:
        """The tasks whose neuron set this folder holds (sorted)."""
        return sorted(p.parent.name for p in self.path.glob(f"*/{SETS_FILE}"))

    def entries(self, folder: str | os.PathLike | None = None) -> list[Path]:
        """The result files and folders directly in ``folder`` (default: this one), sorted;
        not ``config.yaml``, ``README.md``, ``run_settings.json`` or hidden files."""
        folder = Path(folder) if folder is not None else self.path
        if not folder.is_dir():
            return []
        skip = (CONFIG_FILE, INDEX_FILE, RUN_RECORD)
        return [
            p for p in sorted(folder.iterdir()) if p.name not in skip and not p.name.startswith(".")
        ]
