"""What config fields declare beyond their type: their command-line flag, and shared defaults.

* :func:`flag` (``field(metadata=flag("--k", kind="percent"))``): the knob's flag, declared
  once with the knob; :mod:`taskneurons.cli_flags` builds every command's flags from these.
* :data:`NO_FLAGS`: no flag inside this nested config (a second training's knobs).
* :func:`defaults_of`: which fields of a config take a shared default (a file's top-level
  ``seed`` and ``prompt``).

Only the standard library is imported (the command line reads these without torch).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class Flag:
    """The command-line flag of a config field (its ``metadata["flag"]``; see :func:`flag`).

    Attributes:
        names: the flag and its aliases (``"--n-examples", "--n-detect"``); a ``-x`` short form.
        help: one line for ``--help`` (the field's default is added to it).
        kind: how the value is read and checked on the command line (``count``: a whole number
            >= 1, ``percent``: in (0, 100], ``positive``, ``text``: not empty, ``tasks``: a
            comma-separated list, ``max_length``: >= 8 tokens); ``None``: by the field's type.
        negate: a ``--no-x`` switch that sets the (true by default) field to false.
    """

    names: tuple[str, ...]
    help: str = ""
    kind: str | None = None
    negate: bool = False


def flag(*names: str, help: str = "", kind: str | None = None, negate: bool = False) -> dict:
    """``field(metadata=flag(...))``: the knob has a command-line flag, declared once with it.

    Every command whose settings hold the field offers the flag (``taskneurons detect --k 5``
    sets ``detect.k``); the flags, their checks, choices (from ``Literal`` types and variant
    families), defaults and help are read from the configs, never listed in the CLI.

    Example:
        >>> from dataclasses import dataclass, field, fields
        >>> @dataclass
        ... class Knobs:
        ...     k: float = field(default=10.0, metadata=flag("--k", help="percent", kind="percent"))
        >>> fields(Knobs)[0].metadata["flag"].names
        ('--k',)
    """
    return {"flag": Flag(tuple(names), help, kind, negate)}


def train_examples(default: int | None) -> Any:
    """The ``n_train`` field of a stage: train examples per task (``None``: all), ``--n-train``.

    Example:
        >>> train_examples(512).metadata["flag"].names
        ('--n-train',)
    """
    meta = flag("--n-train", kind="count", help="train examples per task")
    return dataclasses.field(default=default, metadata=meta)


def test_examples(default: int | None) -> Any:
    """The ``n_test`` field of a stage: test examples per task (``None``: all), ``--n-test``."""
    meta = flag("--n-test", kind="count", help="test examples per task")
    return dataclasses.field(default=default, metadata=meta)


#: ``field(metadata=NO_FLAGS)``: the command line offers no flag inside this nested config
NO_FLAGS = {"flags": False}


def defaults_of(
    cls: type,
    by_name: Mapping[str, Any],
    by_type: Mapping[type, Any] | None = None,
    skip: tuple[str, ...] = (),
) -> dict:
    """The keys of config ``cls`` (and of its nested configs) that take a shared default.

    A field named as a key of ``by_name`` (``seed``, ``groups``) takes that value; a field
    holding a config class of ``by_type`` (``PromptConfig``) takes that value. Fields in
    ``skip`` are left alone.

    Example:
        >>> from taskneurons.data.prompt_config import PromptConfig
        >>> from taskneurons.neurons.attribution_config import AttributionConfig
        >>> defaults_of(AttributionConfig, {"seed": 3}, {PromptConfig: {}})
        {'seed': 3, 'prompt': {}}
    """
    by_type = by_type or {}
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        union = typing.get_origin(tp) in (Union, types.UnionType)
        nested = [
            a for a in (typing.get_args(tp) if union else (tp,)) if dataclasses.is_dataclass(a)
        ]
        if nested and nested[0] in by_type:
            out[f.name] = by_type[nested[0]]
        elif f.name in by_name:
            out[f.name] = by_name[f.name]
        elif nested and isinstance(nested[0], type):
            inner = defaults_of(nested[0], by_name, by_type)
            if inner:
                out[f.name] = inner
    return out
