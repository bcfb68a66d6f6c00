"""The one settings record: what a result depends on, recorded beside it and compared on resume.

A result that can be reused (evaluations, reference scores, a checkpoint, a detection) records
the settings it depends on — its config, the model fingerprint, the hashes of its data, the
sets it used — as a :class:`SettingsKey`. Before it is reused, the key of the settings asked
for now is compared with the recorded one; :meth:`SettingsKey.differing` names the keys that
differ, so the refusal can say what changed. :meth:`SettingsKey.digest` keys a cache
(:class:`~taskneurons.store.cache.SettingsCache`), :func:`read_keyed` reads a result file that
records its key.

Example:
    >>> key = SettingsKey.of(config={"k": 10}, model={"arch": "a", "weights": "w"})
    >>> key.differing({"config": {"k": 10}, "model": {"arch": "a", "weights": "v"}})
    ['model']
    >>> key.changes({"config": {"k": 5}}, keys=["config"])
    ["config: {'k': 5} vs {'k': 10}"]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskneurons._io import check_record, read_json

#: the fields of a model fingerprint that identify a model (not where it was loaded from)
MODEL_IDENTITY = ("model_type", "arch", "weights", "n_params")


def normal(value: Any) -> Any:
    """``value`` as JSON reads it back: tuples as lists, other objects as their ``str``.

    Example:
        >>> normal({"a": (1, 2), "b": Path("x")})
        {'a': [1, 2], 'b': 'x'}
    """
    return json.loads(json.dumps(value, default=str))


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (tuples as lists).

    Example:
        >>> flatten({"attribution": {"seed": 0, "loss": {"on": "answer"}}}, "detect.")
        {'detect.attribution.seed': 0, 'detect.attribution.loss.on': 'answer'}
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


def model_identity(fingerprint: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of a model fingerprint that say which model it is (:data:`MODEL_IDENTITY`).

    Example:
        >>> model_identity({"arch": "a", "weights": "w", "source": "/tmp/m"})
        {'model_type': None, 'arch': 'a', 'weights': 'w', 'n_params': None}
    """
    fp = fingerprint or {}
    return {k: fp.get(k) for k in MODEL_IDENTITY}


@dataclass(frozen=True)
class SettingsKey:
    """The settings a result depends on, JSON-normal, by name (``config``, ``model``, ...).

    Attributes:
        values: name -> value (as :func:`normal` gives it).
    """

    values: dict[str, Any]

    @classmethod
    def of(cls, **parts: Any) -> SettingsKey:
        """The key of ``parts`` (each made JSON-normal)."""
        return cls(normal(parts))

    def to_dict(self) -> dict[str, Any]:
        """The key as recorded beside a result (a copy)."""
        return normal(self.values)

    def differing(
        self, recorded: Mapping[str, Any] | None, keys: Iterable[str] | None = None,
        ignore: Iterable[str] = (),
    ) -> list[str]:  # fmt: skip
        """The names whose recorded value is not this key's, in ``keys`` order (default: this
        key's names, then those only recorded); ``ignore``: names never compared."""
        saved = recorded if isinstance(recorded, Mapping) else {}
        if keys is None:
            keys = [*self.values, *(k for k in saved if k not in self.values)]
        skip = set(ignore)
        return [k for k in keys if k not in skip and saved.get(k) != self.values.get(k)]

    def changes(
        self, recorded: Mapping[str, Any] | None, keys: Iterable[str] | None = None,
        ignore: Iterable[str] = (), arrow: str = "vs",
    ) -> list[str]:  # fmt: skip
        """``name: recorded <arrow> now`` for each name :meth:`differing` gives."""
        saved = recorded if isinstance(recorded, Mapping) else {}
        return [
            f"{k}: {saved.get(k)!r} {arrow} {self.values.get(k)!r}"
            for k in self.differing(saved, keys, ignore)
        ]

    def check(
        self,
        recorded: Mapping[str, Any] | None,
        refusal: Callable[[list[str]], str],
        error: type[Exception] = ValueError,
    ) -> None:
        """Raise ``error(refusal(names))`` when the recorded key differs in ``names``."""
        names = self.differing(recorded)
        if names:
            raise error(refusal(names))

    def digest(self) -> str:
        """32 hex digits of SHA-256 over the sorted JSON of the key (a cache key)."""
        text = json.dumps(self.values, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def read_keyed(
    path: str | os.PathLike, key: SettingsKey, refusal: Callable[[Path, list[str]], str]
) -> dict[str, Any] | None:
    """A result file that records its key (``{"key": ..., ...}``), checked against ``key``.

    ``None`` when there is no file; ``ValueError(refusal(path, names))`` when it was made with
    other settings (``names``: the keys that differ); ``ChangedFileError`` when it does not
    match the checksum saved in it.

    Example:
        >>> read_keyed("out/evaluations.json", key, lambda p, names: f"{p}: other {names}")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        return None
    saved = check_record(read_json(path), path)
    key.check(saved.get("key"), lambda names: refusal(path, names))
    return saved
