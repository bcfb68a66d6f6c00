"""Result tables: Markdown for people, CSV for spreadsheets, JSON for programs."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskneurons._io import write_json_atomic, write_text_atomic


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


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
    return "\n".join(lines)


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
