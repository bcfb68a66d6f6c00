"""Public names of a package imported on first use (PEP 562), so light modules stay light.

A package ``__init__`` that re-exported its heavy modules would load torch for anyone importing
one of its torch-free modules (a config read by the CLI). Instead it lists its public names:

Example:
    >>> __getattr__, __dir__ = lazy_exports("json", {"dumps": "json"})
    >>> __getattr__("dumps")([1])
    '[1]'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a name to its module."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
