"""The package's shape, checked: layers, no import cycles, short functions with few parameters,
focused modules with unique names.

docs/architecture.md draws the layers; this test holds the code to them. A module may import
modules of its own sub-package or of a lower layer, never one above it; the package's own
modules are imported at module top (``cli.py`` alone imports lazily, to start fast).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "taskneurons"

#: top-level module or sub-package -> layer (lower layers never import higher ones)
LAYERS = {
    "_ranks": -1,  # which process writes: what _io's atomic writes ask first
    "_io": 0,
    "_lazy": 0,
    "config": 1,
    "config_fields": 1,
    "models": 2,
    "data": 2,
    "losses": 2,
    "report": 2,
    "analysis": 2,
    "provenance": 3,
    "store": 4,
    "neurons": 4,
    "evaluation": 5,
    "training": 6,
    "testing": 7,
    "continual": 7,
    "experiments": 8,
    "cli_flags": 9,
    "pages": 9,
    "cli_estimate": 9,
    "cli_analyze": 10,
    "cli_parser": 10,
    "cli_export": 10,
    "cli_report": 10,
    "cli": 11,
}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
#: parameters of a function (``self``/``cls`` aside); more options belong in a config dataclass
MAX_PARAMETERS = 8
DATA_TABLES = {"data/builtin.py", "data/builtin_text.py"}  # modules that are mostly data


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join(["taskneurons", *parts])] = path
    return out


MODULES = _modules()


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported taskneurons module, inside a function?)`` for every import in ``path``."""
    tree = ast.parse(path.read_text())
    inner = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner.update(id(n) for n in ast.walk(fn))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name in MODULES and name.startswith("taskneurons."):
                found.append((name, id(node) in inner))
    return found


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in MODULES if _unit(m)}
    assert units <= set(LAYERS), f"give these a layer in LAYERS: {sorted(units - set(LAYERS))}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m)))
def test_imports_go_down_the_layers(module):
    unit = _unit(module)
    for target, inside in _imports(MODULES[module]):
        other = _unit(target)
        if not other or other == unit:
            continue
        assert LAYERS[other] < LAYERS[unit], f"{module} imports {target} (layer {other} >= {unit})"
        if unit != "cli":
            assert not inside, f"{module} imports {target} inside a function"


def test_no_import_cycle():
    graph = {
        m: {t for t, inside in _imports(p) if not inside and t != m and _unit(t)}
        for m, p in MODULES.items()
        if _unit(m)
    }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_functions_and_modules_are_short():
    long_functions, long_modules = [], []
    for path in MODULES.values():
        text = path.read_text()
        rel = str(path.relative_to(SRC))
        if len(text.splitlines()) > MAX_MODULE_LINES and rel not in DATA_TABLES:
            long_modules.append(f"{rel} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
    return n - (1 if a.args and a.args[0].arg in ("self", "cls") else 0)


def test_functions_take_few_parameters():
    many = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _parameters(node) > MAX_PARAMETERS:
                    many.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert not many, f"more than {MAX_PARAMETERS} parameters (use a config dataclass): {many}"


def test_no_two_modules_share_a_file_name():
    seen: dict[str, list[str]] = {}
    for path in MODULES.values():
        if path.name != "__init__.py":
            seen.setdefault(path.name, []).append(str(path.relative_to(SRC)))
    assert not {n: p for n, p in seen.items() if len(p) > 1}
