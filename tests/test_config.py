"""The config base: typed round trips, and variant families (one config per method)."""

from __future__ import annotations

import doctest
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

import taskneurons.config
import taskneurons.config_fields
from taskneurons.config import Config, ConfigError, Variant, build


@dataclass
class Pick(Variant):
    tag: ClassVar[str] = "method"
    default: ClassVar[str] = "first"
    family: ClassVar[str] = "pick"
    method: str = ""
    normalize: str | None = None


@dataclass
class First(Pick, name="first"):
    method: str = "first"


@dataclass
class Threshold(Pick, name="threshold"):
    method: str = "threshold"
    level: float = 0.5


@dataclass
class Holder(Config):
    k: float = 10.0
    pick: Pick = field(default_factory=First)


def test_doctests_pass():
    assert doctest.testmod(taskneurons.config).failed == 0
    assert doctest.testmod(taskneurons.config_fields).failed == 0


def test_a_variant_is_chosen_by_its_tag_and_holds_only_its_own_options():
    assert Pick.names() == ["first", "threshold"]
    held = Holder.from_dict({"pick": {"method": "threshold", "level": 0.9}})
    assert held.pick == Threshold(level=0.9)
    assert Holder.from_dict(held.to_dict()) == held  # round trip
    assert Holder.from_dict({"pick": {"normalize": "layer"}}).pick == First(normalize="layer")
    assert Holder.from_dict({}).pick == First()
    with pytest.raises(ConfigError, match=r"x.yaml: unknown key 'pick.level'; known: method"):
        Holder.from_dict({"pick": {"level": 0.9}}, where="x.yaml")  # an option of another
    with pytest.raises(ConfigError, match=r"pick.method: unknown pick 'last'; known: first, th"):
        Holder.from_dict({"pick": {"method": "last"}})
    with pytest.raises(ConfigError, match=r"pick.level: expected a number"):
        Holder.from_dict({"pick": {"method": "threshold", "level": "high"}})
    with pytest.raises(ValueError, match="method must be 'threshold'"):
        Threshold(method="first")
    assert Pick.make("threshold", level=0.1) == Threshold(level=0.1)
    assert build(Pick, {}) == First()
