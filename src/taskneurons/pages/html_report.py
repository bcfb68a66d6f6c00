"""One self-contained HTML page of one or more run folders (Jinja2, shipped templates).

The page inlines its CSS and every image (``data:`` URIs) and loads nothing from anywhere, so it
opens offline and can be mailed as one file. Several runs are laid out side by side, one column
each.

Example:
    >>> write_report(["runs/demo"], "runs/demo/report.html")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from taskneurons._io import write_text_atomic
from taskneurons.pages.run_view import RunView, run_view

#: the report's file name in a run folder
REPORT_FILE = "report.html"


def environment() -> Environment:
    """The Jinja2 environment of the shipped templates (HTML escaped, undefined names refused)."""
    return Environment(
        loader=PackageLoader("taskneurons.pages", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(views: Sequence[RunView], title: str | None = None) -> str:
    """The page of ``views`` (one column per run) as HTML text."""
    template = environment().get_template("report.html.j2")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = title or "taskneurons report: " + ", ".join(v.name for v in views)
    return template.render(runs=list(views), title=name, created=when)


def write_report(
    folders: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    views: Sequence[RunView] | None = None,
) -> Path:
    """Write the report of ``folders`` to ``out`` (default: ``<first folder>/report.html``).

    ``views``: the runs already read (with neuron cards, say); read from ``folders`` when
    ``None``.

    Raises:
        FinishedRunError: a folder that is not a run folder.
    """
    views = list(views) if views is not None else [run_view(f) for f in folders]
    path = Path(out) if out is not None else Path(folders[0]) / REPORT_FILE
    return write_text_atomic(path, render(views))
