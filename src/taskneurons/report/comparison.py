"""Condition tables and task x task change matrices: the layout of PAPER.md Tables 1 and 2.

A :class:`Comparison` holds one value per (condition, task) — e.g. Original / Deactivate-Random /
Deactivate-Task, or Zero-shot / Train-Random / Train-Task — and optionally a task x task matrix
``matrix[i][j]`` (task j measured after an intervention on task i's neurons). It renders the
condition table with an ``Avg`` column and the matrix as changes against a baseline row, and
writes both as Markdown/CSV/JSON plus a heatmap. Both experiments that produce such tables use
this one class.

Example:
    >>> c = Comparison(["a", "b"], {"Original": {"a": 80.0, "b": 60.0},
    ...                              "Task": {"a": 50.0, "b": 55.0}})
    >>> print(c.markdown())
    |  | a | b | Avg |
    |---|---|---|---|
    | Original | 80.0 | 60.0 | 70.0 |
    | Task | 50.0 | 55.0 | 52.5 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskneurons.report.plots import heatmap
from taskneurons.report.tables import markdown_table, write_table


@dataclass
class Comparison:
    """Values per condition and task, and an optional task x task matrix.

    Attributes:
        names: task ids, in column order.
        rows: condition label -> task id -> value (accuracy % / ROUGE-L, or NLL in nats).
        matrix: ``matrix[i][j]``: task j's value after the intervention on task i's neurons.
        baseline: the row the matrix's changes are taken against (default: the first row).
    """

    names: list[str]
    rows: dict[str, dict[str, float]]
    matrix: dict[str, dict[str, float]] | None = None
    baseline: str | None = None

    def row(self, label: str) -> dict[str, float]:
        """One condition's values, task id -> value."""
        return self.rows[label]

    def table_rows(self) -> list[list[Any]]:
        """``[label, value per task..., mean]`` per condition."""
        out = []
        for label, values in self.rows.items():
            vals = [values[n] for n in self.names]
            out.append([label, *vals, sum(vals) / len(vals)])
        return out

    @property
    def header(self) -> list[str]:
        return ["", *self.names, "Avg"]

    def change(self) -> list[list[float]]:
        """``[i][j]``: matrix value minus the baseline row's value of task j."""
        if self.matrix is None:
            raise ValueError("this comparison has no task x task matrix")
        base = self.rows[self.baseline or next(iter(self.rows))]
        return [[self.matrix[i][j] - base[j] for j in self.names] for i in self.names]

    def markdown(self) -> str:
        """The condition table as Markdown."""
        return markdown_table(self.header, self.table_rows())

    def change_markdown(self, corner: str) -> str:
        """The change matrix as Markdown (rows: intervened task i; columns: measured task j)."""
        rows = [[i, *r] for i, r in zip(self.names, self.change(), strict=True)]
        return markdown_table([corner, *self.names], rows)

    def write(
        self,
        out: str | os.PathLike,
        table: str,
        meta: dict,
        title: str,
        matrix: MatrixSpec | None = None,
    ) -> dict[str, Path]:
        """Write ``table.{md,csv,json}`` and, with ``matrix``, the change matrix and heatmap."""
        out = Path(out)
        paths = write_table(out / table, self.header, self.table_rows(), meta=meta, title=title)
        if matrix is not None and self.matrix is not None:
            rows = [[i, *r] for i, r in zip(self.names, self.change(), strict=True)]
            header = [matrix.corner, *self.names]
            write_table(out / matrix.stem, header, rows, meta=meta, title=matrix.title)
            paths["png"] = heatmap(
                self.change(),
                self.names,
                self.names,
                out / f"{matrix.stem}.png",
                title=matrix.plot_title,
                xlabel="measured task j",
                ylabel=matrix.ylabel,
                cmap=matrix.cmap,
            )
        return paths


@dataclass(frozen=True)
class MatrixSpec:
    """How a change matrix is written: file stem, titles, axis label and colour map."""

    stem: str
    title: str
    plot_title: str
    corner: str = "intervened \\ measured"
    ylabel: str = "neurons of task i"
    cmap: str = "RdBu"


__all__ = ["Comparison", "MatrixSpec"]
