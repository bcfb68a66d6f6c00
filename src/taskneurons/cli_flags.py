"""Command-line flags read from the configs: each field's ``flag(...)`` metadata, its checks.

A config field declares its flag once (``field(metadata=flag("--k", kind="percent"))``, see
:func:`taskneurons.config.flag`); :func:`flags_of` collects the flags of a command's settings
(the file-level keys and each stage section it reads) and :func:`add_flags` adds them to an
``argparse`` parser. A flag sets every field that declares it there. Values are checked by their
kind (sizes >= 1, ``--k`` a percentage, ...), choices come from ``Literal`` types and variant
families, defaults and help from the fields. Only the standard library and torch-free configs
are imported.

Example:
    >>> from taskneurons.experiments.specificity.detect_stage import DetectConfig
    >>> [u.flag.names[0] for u in flags_of({"detect": DetectConfig}, top=None)][:2]
    ['--k', '--scope']
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from taskneurons.config import Variant
from taskneurons.config_fields import Flag
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.experiments.experiment_file import ExperimentFile


# -- value kinds ----------------------------------------------------------------------------------
def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None


def read_count(value: str) -> int:
    """A whole number >= 1 (examples, batch size, epochs)."""
    n = _integer(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _max_length(value: str) -> int:
    n = read_count(value)
    if n < 8:
        raise argparse.ArgumentTypeError(f"must be at least 8 tokens, got {n}")
    return n


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None


def _percent(value: str) -> float:
    k = _number(value)
    if not 0 < k <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage in (0, 100], got {value}")
    return k


def _positive(value: str) -> float:
    x = _number(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def read_text(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _tasks_arg(value: str) -> list[str]:
    tasks = [v.strip() for v in value.split(",") if v.strip()]
    if not tasks:
        raise argparse.ArgumentTypeError(
            f"no task in {value!r}; give comma-separated task folders, built-in names or spec files"
        )
    return tasks


def _names(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no value in {value!r}; give a comma-separated list")
    return names


def read_percents(value: str) -> list[float]:
    """Comma-separated percentages in (0, 100]: ``10,30,50``."""
    out = [_percent(v) for v in value.split(",") if v.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"no percentage in {value!r}; e.g. 10,30,50,70,100")
    return out


def read_layers(value: str) -> list[int]:
    """Layer indices: ``10,12`` or ranges ``10-20`` (inclusive), >= 0, each once."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in value.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected layers like 10,12 or 10-20, got {value!r}"
        ) from None
    if not out or min(out) < 0 or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"give distinct layers >= 0, got {value!r}")
    return out


#: a flag's ``kind`` -> how its value is read and checked
KINDS: dict[str, Callable[[str], Any]] = {
    "count": read_count,
    "max_length": _max_length,
    "percent": _percent,
    "positive": _positive,
    "text": read_text,
    "tasks": _tasks_arg,
}


# -- flags from the configs -----------------------------------------------------------------------
@dataclass
class FlagUse:
    """One flag of a command and the settings it sets (dotted keys of the experiment file)."""

    flag: Flag
    keys: list[str]
    read: Callable[[str], Any] | None
    choices: tuple | None
    default: Any
    boolean: bool

    @property
    def dest(self) -> str:
        return self.flag.names[0].lstrip("-").replace("-", "_")


def _plain_type(tp: Any) -> Any:
    """``X`` of ``X | None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _config_type(tp: Any) -> type | None:
    """The config dataclass a field holds (``None`` for a plain value)."""
    tp = _plain_type(tp)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _walk(cls: type, prefix: str, top: bool) -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, field, type)`` of every field of ``cls`` that declares a flag.

    Nested configs are walked too, except a prompt inside a section (the file-level prompt
    has the prompt flags) and fields marked :data:`~taskneurons.config.NO_FLAGS`.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "flag" in f.metadata:
            yield prefix + f.name, f, hints[f.name]
        family = f.metadata.get("options_of")  # a mapping of options of a family's members
        inner = family or _config_type(hints[f.name])
        if inner is None or f.metadata.get("flags") is False or (inner is PromptConfig and not top):
            continue
        classes = [inner]
        if issubclass(inner, Variant) and "variants" in inner.__dict__:
            classes = [inner.variant(n) for n in inner.names()]
        for c in classes:
            yield from _walk(c, f"{prefix}{f.name}.", False)


def _use(f: dataclasses.Field, tp: Any, key: str) -> FlagUse:
    spec: Flag = f.metadata["flag"]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    tp = _plain_type(tp)
    choices = None
    inner = _config_type(tp)
    if inner is not None and issubclass(inner, Variant):  # the flag names the variant
        choices, key, default = tuple(inner.names()), f"{key}.{inner.tag}", inner.default
    elif typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
    if tp is bool:
        return FlagUse(spec, [key], None, None, default, True)
    read = KINDS.get(spec.kind) if spec.kind else None
    if read is None:
        origin = typing.get_origin(tp)
        read = {int: _integer, float: _number}.get(tp, _names if origin is list else None)
    return FlagUse(spec, [key], read, choices, default, False)


def flags_of(sections: Mapping[str, type], top: type | None = ExperimentFile) -> list[FlagUse]:
    """Every flag of the settings: ``top``'s fields (file level) and each section's.

    A flag declared by several fields is one :class:`FlagUse` that sets them all.

    Raises:
        ValueError: one flag is declared with different kinds or choices (a clash in the
            configs, found when the command is built).
    """
    found: dict[str, FlagUse] = {}
    places = ([("", top, True)] if top is not None else []) + [
        (f"{name}.", cls, False) for name, cls in sections.items()
    ]
    for prefix, cls, is_top in places:
        for key, f, tp in _walk(cls, prefix, is_top):
            use = _use(f, tp, key)
            have = found.get(use.flag.names[0])
            if have is None:
                found[use.flag.names[0]] = use
                continue
            if (have.read, have.choices, have.boolean) != (use.read, use.choices, use.boolean):
                raise ValueError(f"flag {use.flag.names[0]} is declared unlike by {have.keys[0]} "
                                 f"and {use.keys[0]}")  # fmt: skip
            have.keys.extend(k for k in use.keys if k not in have.keys)
    return list(found.values())


def add_flags(parser: argparse.ArgumentParser, uses: list[FlagUse], out_default: str) -> None:
    """One argument per flag (default ``None``: a flag not given sets nothing); a long alias is
    an argument of its own (hidden), so a message names the flag as it was typed."""
    for use in uses:
        shown = out_default if use.dest == "out" else use.default
        text = use.flag.help if use.boolean else f"{use.flag.help} (default: {shown})".strip()
        main = [n for n in use.flag.names if not n.startswith("--")]
        aliases = [n for n in use.flag.names if n.startswith("--")]
        for i, name in enumerate(aliases):
            names = [name, *main] if i == 0 else [name]
            shown_help = text.replace("%", "%%") if i == 0 else argparse.SUPPRESS
            _add_one(parser, use, names, shown_help)


def _add_one(parser: argparse.ArgumentParser, use: FlagUse, names: list[str], text: str) -> None:
    if use.boolean:
        parser.add_argument(*names, dest=use.dest, action="store_const",
                            const=not use.flag.negate, default=None, help=text)  # fmt: skip
        return
    parser.add_argument(*names, dest=use.dest, type=use.read, choices=use.choices,
                        default=None, help=text)  # fmt: skip
