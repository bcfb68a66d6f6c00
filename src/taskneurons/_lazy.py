"""Public names of a package imported on first use (PEP 562), so light modules stay light.

A package ``__init__`` that re-exported its heavy modules would load torch for anyone importing
one of its torch-free modules (a config read by the CLI). Instead it lists its public names:

Example:
    >>> __getattr__, __dir__ = lazy_exports("json", {"json": ["dumps", "loads"]})
    >>> __getattr__("dumps")([1])
    '[1]'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``modules`` maps a module to its public names."""
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
