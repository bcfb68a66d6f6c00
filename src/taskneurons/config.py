"""One base for every config dataclass: dict/JSON/YAML round trips and type checks in one place.

Each stage's knobs live in a dataclass that subclasses :class:`Config` (``PromptConfig``,
``EvalConfig``, ``AttributionConfig``, ``TrainConfig``, the experiment configs). The base gives
them, as PEFT's configs do, ``to_dict`` / ``from_dict`` / ``save`` / ``load``; ``from_dict``
checks every key and value against the field types and names the key at fault (and the file,
when given), so an experiment file with ``lr: "fast"`` or ``learning_rate: 1`` fails at once
with one line instead of deep inside a run. A subclass validates its values in ``validate()``,
called after construction.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Knobs(Config):
    ...     lr: float = 1e-3
    ...     steps: int = 10
    >>> Knobs.from_dict({"lr": 0.1}).steps
    10
    >>> Knobs.from_dict({"lr": "fast"}, where="exp.yaml")
    Traceback (most recent call last):
    ...
    taskneurons.config.ConfigError: exp.yaml: lr: expected a number, got 'fast'
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

import yaml

from taskneurons._io import write_json_atomic

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the key (and the file)."""


class Config:
    """Mixin of the config dataclasses: conversion to and from plain dicts, with type checks."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the values (subclasses raise ``ValueError`` naming the field)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready dict (nested configs as dicts, tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
        """Build from a dict, checking keys and value types; ``where`` prefixes messages.

        Raises:
            ConfigError: an unknown key, a value of the wrong type, or a value ``validate``
                rejects; the message names the file (``where``) and the dotted key.
        """
        return _build(cls, data, where, prefix="")

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON atomically."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls: type[C], path: str | os.PathLike) -> C:
        """Read a JSON file written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        return cls.from_dict(data, where=str(path))


class Variant(Config):
    """Base of a family of configs chosen by one key, as PEFT keeps one config per tuner.

    A family base (e.g. the neuron selections) subclasses ``Variant`` and names its key
    (``tag``, e.g. ``"method"``), the variant taken when a section names none (``default``),
    what it is called in messages (``family``) and the package whose modules define the variants
    (``package``: imported on the first lookup, so a new variant is one new module there). Each
    variant subclasses the base with ``name=...`` and declares the tag field with that name as
    its default; it holds only its own options, so a key of another variant is refused instead
    of ignored.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Shape(Variant):
        ...     tag: ClassVar[str] = "kind"
        ...     default: ClassVar[str] = "square"
        ...     kind: str = ""
        >>> @dataclass
        ... class Square(Shape, name="square"):
        ...     kind: str = "square"
        ...     side: float = 1.0
        >>> build(Shape, {"kind": "square", "side": 2}).side
        2.0
        >>> build(Shape, {"kind": "circle"})
        Traceback (most recent call last):
        ...
        taskneurons.config.ConfigError: kind: unknown shape 'circle'; known: square
    """

    tag: ClassVar[str] = "method"
    default: ClassVar[str] = ""
    family: ClassVar[str] = ""
    package: ClassVar[str | None] = None
    #: the message for a name no variant has
    unknown: ClassVar[str] = "unknown {family} {name!r}; known: {known}"
    variants: ClassVar[dict[str, type]]

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None and Variant in cls.__bases__:
            cls.variants = {}  # a family base: its own registry
        if name is not None:
            cls.variant_name = name
            cls.variants[name] = cls

    def validate(self) -> None:
        name = getattr(type(self), "variant_name", None)
        if name is None:  # the family base itself: only its variants hold options
            type(self).variant(getattr(self, self.tag))  # refuses an unknown name
            raise ValueError(f"build a {self.family or type(self).__name__} with .make(name, ...)")
        if getattr(self, self.tag) != name:
            raise ValueError(f"{self.tag} must be {name!r}, got {getattr(self, self.tag)!r}")

    @classmethod
    def names(cls) -> list[str]:
        """The registered variant names (after importing :attr:`package`)."""
        _import_package(cls.package)
        return list(cls.variants)

    @classmethod
    def variant(cls, name: str) -> type:
        """The variant class registered as ``name`` (``ValueError`` naming the known ones)."""
        if name not in cls.variants:
            _import_package(cls.package)
        if name not in cls.variants:
            family = cls.family or cls.__name__.lower()
            known = ", ".join(cls.variants)
            raise ValueError(cls.unknown.format(family=family, name=name, known=known))
        return cls.variants[name]

    @classmethod
    def make(cls, name: str | None = None, **options: Any) -> Variant:
        """The variant ``name`` (default :attr:`default`) with ``options``, checked as a file's
        section is (``ConfigError`` naming a key the variant does not have)."""
        return build(cls.variant(name or cls.default), {cls.tag: name or cls.default, **options})


def _import_package(package: str | None) -> None:
    """Import every module of ``package`` once (they register their variants)."""
    if package is None:
        return
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, package + "."):
        importlib.import_module(info.name)


def build(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Any config dataclass ``cls`` from a dict, checked as :meth:`Config.from_dict` does.

    Example:
        >>> from taskneurons.data.prompts import PromptConfig
        >>> build(PromptConfig, {"max_length": 256}).max_length
        256
    """
    if _is_family(cls):
        return _build_variant(cls, data, where, "")
    return _build(cls, data, where, prefix="")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    here = f"{where}: " if where else ""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{here}{prefix or cls.__name__}: expected a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        keys = ", ".join(repr(prefix + str(k)) for k in unknown)
        owner = "" if where or prefix else f"{cls.__name__}: "
        raise ConfigError(f"{here}{owner}unknown key {keys}; known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for k, v in data.items():
        values[k] = _field_value(hints[k], fields[k].default_factory, v, where, f"{prefix}{k}")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        owner = prefix.rstrip(".") or ("" if where else cls.__name__)
        raise ConfigError(f"{here}{owner + ': ' if owner else ''}{exc}") from None


def build_section(cls: type, value: Any, where: str, key: str) -> Any:
    """``cls`` from ``value`` laid over ``cls()``'s defaults, as a nested section is built.

    Messages name the file (``where``) and ``key``, e.g. ``exp.yaml: detect.k: ...``.

    Example:
        >>> from taskneurons.data.prompt_config import PromptConfig
        >>> build_section(PromptConfig, {"max_length": 64}, "exp.yaml", "prompt").max_length
        64
    """
    return _field_value(cls, cls, value, where, key)


def _field_value(tp: Any, default: Any, value: Any, where: str, key: str) -> Any:
    """A field's value checked against its type ``tp``; a partial section is laid over the
    field's ``default`` factory (of the same variant), so unset keys keep their defaults."""
    if isinstance(value, Mapping) and default is not dataclasses.MISSING:
        base = default()
        same = not isinstance(base, Variant) or value.get(base.tag, getattr(base, base.tag)) == (
            getattr(base, base.tag)
        )
        if same:
            value = deep_merge(_plain(base), value)
    return _coerce(tp, value, where, key)


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` laid over ``base``: mappings merge key by key, anything else replaces.

    Example:
        >>> deep_merge({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 9}})
        {'a': 1, 'b': {'c': 9, 'd': 3}}
    """
    if not isinstance(base, Mapping) or not isinstance(over, Mapping):
        return over
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(base[key], value) if key in base else value
    return out


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    """``value`` checked against the type hint ``tp`` (nested configs built)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if _is_family(tp):
        return _build_variant(tp, value, where, key)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, where, prefix=key + ".")
    return _check_leaf(tp, origin, args, value, where, key)


def _is_family(tp: Any) -> bool:
    """Whether ``tp`` is the base of a :class:`Variant` family (not one variant)."""
    return isinstance(tp, type) and issubclass(tp, Variant) and "variants" in tp.__dict__


def _build_variant(base: type, value: Any, where: str, key: str) -> Any:
    """The variant of family ``base`` that ``value`` names by its tag (default: ``base.default``)."""
    here = f"{where}: " if where else ""
    prefix = f"{key}." if key else ""
    if isinstance(value, base):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{here}{key or base.__name__}: expected a mapping of settings")
    name = value.get(base.tag, base.default)
    try:
        cls = base.variant(name)
    except ValueError as exc:
        raise ConfigError(f"{here}{prefix}{base.tag}: {exc}") from None
    return _build(cls, {**value, base.tag: name}, where, prefix=prefix)


def _check_leaf(tp: Any, origin: Any, args: tuple, value: Any, where: str, key: str) -> Any:
    def fail(expected: str) -> ConfigError:
        here = f"{where}: " if where else ""
        return ConfigError(f"{here}{key}: expected {expected}, got {value!r}")

    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise fail("one of " + ", ".join(repr(a) for a in args))
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("a whole number")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise fail("a list")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        return dict(value)
    return value


class DuplicateKeyError(ValueError):
    """A YAML mapping gives ``key`` twice, on ``line`` and first on ``first`` (1-based)."""

    def __init__(self, key: Any, line: int, first: int) -> None:
        self.key, self.line, self.first = key, line, first
        super().__init__(
            f"duplicate key {key!r} (first on line {first}); only one of its values would be "
            "used: give each key once"
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that gives a key twice (merge keys aside)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in seen:
                    raise DuplicateKeyError(key, line, seen[key])
                seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, but a key given twice in a mapping is a :class:`DuplicateKeyError`
    (YAML itself keeps the last value silently)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


__all__ = [
    "Config",
    "ConfigError",
    "DuplicateKeyError",
    "Variant",
    "build",
    "build_section",
    "deep_merge",
    "load_yaml",
]
