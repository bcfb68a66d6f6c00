"""Result tables: Markdown for people, CSV for spreadsheets, JSON for programs.

Every table a result lays out goes through :func:`markdown_table`; inside
:func:`captured_tables` each call is also recorded as a :class:`TableData` (its header, rows
and digits), so an HTML page renders a result's tables from the values themselves.

Example:
    >>> with captured_tables() as tables:
    ...     _ = markdown_table(["task", "acc"], [["sst2", 81.234]])
    >>> tables[0].rows, format_cell(81.234, tables[0].digits)
    ([['sst2', 81.234]], '81.2')
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskneurons._io import write_json_atomic, write_text_atomic


def format_cell(value: Any, digits: int) -> str:
    """A table cell as text: floats with ``digits`` decimals, anything else by ``str``."""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_fmt = format_cell


@dataclass(frozen=True)
class TableData:
    """One table :func:`markdown_table` laid out: ``header``, ``rows``, ``digits``, ``text``."""

    header: list[str]
    rows: list[list[Any]]
    digits: int
    text: str


_CAPTURED: ContextVar[list[TableData] | None] = ContextVar("captured_tables", default=None)


@contextmanager
def captured_tables() -> Iterator[list[TableData]]:
    """Record every :func:`markdown_table` call made inside (in call order)."""
    token = _CAPTURED.set([])
    try:
        yield _CAPTURED.get()  # type: ignore[misc]
    finally:
        _CAPTURED.reset(token)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> str:
    """A GitHub-flavoured Markdown table; floats printed with ``digits`` decimals.

    Example:
        >>> print(markdown_table(["task", "acc"], [["sst2", 81.234]]))
        | task | acc |
        |---|---|
        | sst2 | 81.2 |
    """
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v, digits) for v in row) + " |")
    text = "\n".join(lines)
    captured = _CAPTURED.get()
    if captured is not None:
        captured.append(TableData([str(h) for h in header], [list(r) for r in rows], digits, text))
    return text


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_table(
    stem: str | os.PathLike,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    meta: dict | None = None,
    digits: int = 1,
    title: str | None = None,
) -> dict[str, Path]:
    """Write ``stem.md``, ``stem.csv`` and ``stem.json`` (with ``meta``) atomically."""
    stem = Path(stem)
    md = (f"# {title}\n\n" if title else "") + markdown_table(header, rows, digits) + "\n"
    paths = {
        "md": write_text_atomic(stem.with_suffix(".md"), md),
        "csv": write_text_atomic(stem.with_suffix(".csv"), csv_text(header, rows)),
        "json": write_json_atomic(
            stem.with_suffix(".json"),
            {"header": list(header), "rows": [list(r) for r in rows], "meta": meta or {}},
        ),
    }
    return paths
