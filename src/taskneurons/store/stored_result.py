"""What the result of every stage shares: the folder it is written to and read back from, and
the record of how it was made (``<stage>_config.json``, the stage's ``meta``).

A stage's result class (a dataclass with ``out_dir`` and ``meta``) names its record in
``RECORD``, writes its files in ``save(folder)`` (:meth:`StoredResult.target`: where,
:meth:`StoredResult.write_meta`: its record) and reads them in ``from_files(path, meta)``;
:meth:`StoredResult.load` reads the record and calls it.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Result(StoredResult):
    ...     RECORD = "toy_config.json"
    ...     value: float
    ...     out_dir: Path
    ...     meta: dict
    ...     def save(self, folder=None):
    ...         return self.write_meta(self.target(folder))
    ...     @classmethod
    ...     def from_files(cls, path, meta):
    ...         return cls(meta["value"], path, meta)
    >>> Result(1.0, Path("out"), {"value": 1.0}).target(None)
    PosixPath('out')
    >>> Result.load("out").value  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from taskneurons._io import write_json_atomic
from taskneurons.store.run_folder import read_record


class StoredResult:
    """A result written into a folder (``save``) and read back from it (``load``).

    Attributes:
        RECORD: the file name of the result's record (its ``meta``) in its folder.
    """

    RECORD: ClassVar[str] = ""
    out_dir: Any
    meta: dict

    def target(self, folder: str | os.PathLike | None) -> Path:
        """Where :meth:`save` writes: ``folder``, else where the result was made (``out_dir``)."""
        return Path(folder) if folder is not None else Path(self.out_dir)

    def write_meta(self, out: Path) -> Path:
        """Write :attr:`meta` as ``out/RECORD``; returns ``out``."""
        write_json_atomic(out / self.RECORD, self.meta)
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Any:
        """The result written into ``folder``: its record, then the rest (:meth:`from_files`).

        Raises:
            FinishedRunError: a file of the result is missing or unreadable.
        """
        return cls.from_files(*cls.read_meta(folder))

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> Any:
        """The result in ``path`` whose record is ``meta`` (each result class reads its files)."""
        raise NotImplementedError(f"{cls.__name__} does not read its files back")

    @classmethod
    def read_meta(cls, folder: str | os.PathLike) -> tuple[Path, dict]:
        """``(folder, its record)``.

        Raises:
            FinishedRunError: the record is missing or not a JSON object.
        """
        path = Path(folder)
        return path, read_record(path / cls.RECORD)
