"""A JSON cache of results keyed by their settings (:class:`~taskneurons.store.settings.SettingsKey`).

The file is ``{"format": <tag>, "entries": {<digest>: {..., "record": <settings>}}}``: each entry
is found by the digest of the settings it was made with (config, model identity, data hashes)
and keeps those settings beside the result, so the file says how every value was made. Each
:meth:`SettingsCache.put` writes the file atomically, so an interrupted run keeps what it had;
a ``sealed`` cache writes the checksum of its content too (``"checksum"``), and a file that
carries one is verified when it is read.

Example:
    >>> cache = SettingsCache("out/reference_cache.json", "taskneurons.ReferenceScores/1",
    ...                       "reference cache")  # doctest: +SKIP
    >>> key = SettingsKey.of(kind="zero_shot", task="sst2")  # doctest: +SKIP
    >>> cache.get(key) or cache.put(key, {"score": 52.0})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from taskneurons._io import check_record, write_json_atomic, write_json_sealed
from taskneurons.store.settings import SettingsKey


class SettingsCache:
    """Results by the digest of their settings, in one JSON file (read once, written per put).

    Args:
        path: the cache file (created on the first :meth:`put`).
        format: its format tag (a file with another one is refused).
        what: what the cache is, for messages (``"reference cache"``).
        sealed: write the checksum of the file's content into it (:func:`~taskneurons._io.seal_record`).

    Raises:
        ChangedFileError: the file does not match the checksum saved in it.
        ValueError: ``path`` is not readable JSON, or not a cache of ``format``.
    """

    def __init__(
        self, path: str | os.PathLike, format: str, what: str, sealed: bool = False
    ) -> None:
        self.path, self.format, self.what, self.sealed = Path(path), format, what, sealed
        self.entries: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: not a readable {self.what} ({exc})") from None
        data = check_record(data, self.path)
        if not isinstance(data, dict) or data.get("format") != self.format:
            raise ValueError(f"{self.path}: not a {self.what} (format {self.format!r})")
        return dict(data.get("entries", {}))

    def get(self, key: SettingsKey) -> dict[str, Any] | None:
        """The entry made with the settings ``key``, or ``None``."""
        return self.entries.get(key.digest())

    def put(self, key: SettingsKey, entry: dict[str, Any]) -> dict[str, Any]:
        """Keep ``entry`` (with ``record``: the settings) under ``key``; write the file."""
        stored = {**entry, "record": key.to_dict()}
        self.entries[key.digest()] = stored
        write = write_json_sealed if self.sealed else write_json_atomic
        write(self.path, {"format": self.format, "entries": self.entries})
        return stored
