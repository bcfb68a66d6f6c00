"""What a report page shows of one run folder, read through its result objects.

:func:`run_view` loads the run (:func:`~taskneurons.experiments.finished_run.load_run`: its
``config.yaml`` and every stage's ``Result.load``) and lays out, per stage, the blocks of its
``markdown()`` — each table as the values :func:`~taskneurons.report.tables.markdown_table`
received (:func:`~taskneurons.report.tables.captured_tables`), the text between them as it is
— its matrices as heatmaps with their statistics, a sweep's cells as small multiples, a
continual suite's methods as sub-sections with their FG_j curves, and the PNG plots the stage
wrote, as data URIs.

Example:
    >>> view = run_view("runs/demo")  # doctest: +SKIP
    >>> [s.title for s in view.sections]  # doctest: +SKIP
    ['detect', 'deactivate', 'table2']
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taskneurons.experiments.finished_run import load_run
from taskneurons.experiments.stage import stage as stage_named
from taskneurons.pages.heatmaps import Heatmap, heatmaps_of
from taskneurons.report.plots import forgetting_plot
from taskneurons.report.tables import TableData, captured_tables, format_cell
from taskneurons.store.run_folder import RunFolder

#: the FG_j plot a continual suite writes (drawn here for a result without it)
FORGETTING_PNG = "forgetting.png"
#: provenance keys shown from a stage's record
PROVENANCE_KEYS = ("created", "command", "versions", "model", "data_hash", "tuned_overlap")


@dataclass
class Block:
    """A piece of a stage's output: a table (``table``) or a paragraph of text (``text``)."""

    text: str = ""
    table: TableData | None = None

    def cell_rows(self) -> list[list[str]]:
        """The table's rows as the text of each cell (its own digits)."""
        assert self.table is not None
        return [[format_cell(v, self.table.digits) for v in r] for r in self.table.rows]


@dataclass
class Section:
    """One stage (or a nested result): blocks, heatmaps, small multiples, pictures."""

    title: str
    subtitle: str = ""
    blocks: list[Block] = field(default_factory=list)
    heatmaps: list[Heatmap] = field(default_factory=list)
    small: list[Heatmap] = field(default_factory=list)
    pictures: list[tuple[str, str]] = field(default_factory=list)
    provenance: list[tuple[str, str]] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)
    folded: bool = False


@dataclass
class RunView:
    """One run: its folder, resolved config (YAML text), settings record, stage sections."""

    name: str
    path: str
    config_text: str
    settings: list[tuple[str, str]]
    sections: list[Section]
    cards: list[Any] = field(default_factory=list)
    charts: list[tuple[str, str]] = field(default_factory=list)


def blocks_of(result: Any, method: str = "markdown") -> list[Block]:
    """``result.markdown()`` as blocks: each table from its values, the text between as is."""
    with captured_tables() as tables:
        text = getattr(result, method)()
    out: list[Block] = []
    pos = 0
    for table in tables:
        at = text.find(table.text, pos)
        if at < 0:  # laid out but not printed as is: show the values anyway
            out.append(Block(table=table))
            continue
        out.extend(_paragraphs(text[pos:at]))
        out.append(Block(table=table))
        pos = at + len(table.text)
    out.extend(_paragraphs(text[pos:]))
    return out


def _paragraphs(text: str) -> list[Block]:
    return [Block(text=p.strip()) for p in text.split("\n\n") if p.strip()]


def data_uri(path: Path) -> str:
    """``path`` (a PNG) as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def pictures_in(folder: Path) -> list[tuple[str, str]]:
    """``(file name, data URI)`` of the PNG plots directly in ``folder``."""
    return [(p.name, data_uri(p)) for p in sorted(folder.glob("*.png")) if p.is_file()]


def _is_result(value: Any) -> bool:
    return hasattr(value, "markdown") and hasattr(value, "out_dir")


def _provenance(meta: dict) -> list[tuple[str, str]]:
    items = [(k, meta[k]) for k in PROVENANCE_KEYS if k in meta]
    return [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in items]


def section_of(title: str, result: Any, subtitle: str = "") -> Section:
    """The section of one result: blocks, heatmaps, the small multiples of a dict of
    deactivation-like results (a sweep's cells, each cell's tables folded below), sub-sections
    of other nested results whose tables the result does not print itself."""
    section = Section(title, subtitle, blocks_of(result), heatmaps_of(result))
    section.pictures = pictures_in(Path(result.out_dir)) if result.out_dir else []
    section.provenance = _provenance(getattr(result, "meta", None) or {})
    shown = {b.table.text for b in section.blocks if b.table is not None}
    for name, value in vars(result).items():
        if _is_result(value):  # a nested result (a multitask run's detection)
            section.pictures += pictures_in(Path(value.out_dir)) if value.out_dir else []
            child = section_of(name, value)
            if any(b.table.text not in shown for b in child.blocks if b.table is not None):
                child.heatmaps, child.pictures = [], []  # shown above
                section.children.append(child)
        elif isinstance(value, dict) and value and all(map(_is_result, value.values())):
            _add_nested(section, value)
    if not any(name == FORGETTING_PNG for name, _ in section.pictures):
        section.pictures += _forgetting_curves(result)
    blocks = blocks_of(result, "details_markdown") if hasattr(result, "details_markdown") else []
    if blocks:  # long tables a result prints only here
        section.children.append(Section("details", "every value", blocks, folded=True))
    return section


def _add_nested(section: Section, results: dict) -> None:
    for key, child in results.items():
        label = " ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        if hasattr(child, "table"):  # a sweep cell: its first matrix, small; its tables folded
            section.small.extend(_titled(heatmaps_of(child)[:1], label))
            folded = Section(label, "tables of this cell", blocks_of(child), folded=True)
            section.children.append(folded)
        else:
            section.children.append(section_of(label, child))


def _titled(maps: list[Heatmap], label: str) -> list[Heatmap]:
    for h in maps:
        h.title = label
    return maps


def _forgetting_curves(result: Any) -> list[tuple[str, str]]:
    """FG_j per stage of every method a continual suite ran, as one line plot."""
    nested = getattr(result, "results", None)
    if not isinstance(nested, dict):
        return []
    curves = {
        getattr(r, "label", name): [float(v) for v in r.metrics["forgetting"]]
        for name, r in nested.items()
        if isinstance(getattr(r, "metrics", None), dict) and "forgetting" in r.metrics
    }
    if not curves:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        path = forgetting_plot(curves, Path(tmp) / "fg.png", "FG_j per stage (100: no forgetting)")
        return [("FG_j curves", data_uri(path))]


def run_view(folder: str | os.PathLike) -> RunView:
    """Everything a report shows of the run in ``folder`` (read, never run).

    Raises:
        FinishedRunError: ``folder`` is not a run folder.
    """
    run = load_run(folder)
    held = RunFolder(folder).held_settings() or {}
    settings = [(k, json.dumps(v, default=str)) for k, v in sorted(held.items())]
    config_text = yaml.safe_dump(RunFolder(folder).settings(), sort_keys=False)
    sections = [
        section_of(name, result, stage_named(name).title) for name, result in run.results.items()
    ]
    return RunView(Path(folder).name, str(folder), config_text, settings, sections)
