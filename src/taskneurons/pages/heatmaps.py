"""Task x task matrices of results as coloured HTML tables, with the statistics beside them.

A deactivation or training result's :class:`~taskneurons.report.comparison.Comparison` with a
matrix gives the change matrix (row: the intervened task i, column: the measured task j) and
its specificity summaries; a continual result gives its accuracy matrix ``a(i, j)``.

Example:
    >>> h = Heatmap("change", ["a", "b"], ["a", "b"], [[-10.0, 1.0], [0.0, -5.0]])
    >>> h.cells()[0][0][0], h.cells()[0][0][1][:16]
    ('-10.0', 'background:rgb(')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from taskneurons.report.comparison import Comparison

#: which specificity record belongs to which table of a result
READOUTS = {"table": "score", "nll": "nll"}


@dataclass
class Heatmap:
    """A matrix to colour: ``values[i][j]`` (``None``/``nan``: not measured), its row and
    column labels, and the lines of statistics shown beside it."""

    title: str
    rows: list[str]
    cols: list[str]
    values: list[list[float | None]]
    notes: list[str] = field(default_factory=list)
    higher_is_worse: bool = False

    def _finite(self) -> list[float]:
        return [v for r in self.values for v in r if v is not None and math.isfinite(v)]

    def cells(self) -> list[list[tuple[str, str]]]:
        """``(text, inline style)`` per cell: diverging colours (red for a loss: below 0, or
        above 0 when ``higher_is_worse``; blue for a gain) when the matrix has negative
        values, else one blue scale."""
        finite = self._finite()
        scale = max((abs(v) for v in finite), default=1.0) or 1.0
        diverging = any(v < 0 for v in finite)
        digits = 2 if scale < 10 else 1
        out = []
        for row in self.values:
            line = []
            for v in row:
                if v is None or not math.isfinite(v):
                    line.append(("-", "background:#eee"))
                    continue
                shade = -v if self.higher_is_worse else v
                line.append((f"{v:.{digits}f}", _colour(shade / scale, diverging)))
            out.append(line)
        return out


def _colour(t: float, diverging: bool) -> str:
    """An inline background for ``t`` in [-1, 1] (diverging) or [0, 1]."""
    a = abs(t)
    if diverging and t < 0:
        rgb = (255, round(255 - 150 * a), round(255 - 150 * a))
    else:
        rgb = (round(255 - 150 * a), round(255 - 100 * a), 255)
    return f"background:rgb{rgb}"


def comparison_heatmap(name: str, table: Comparison, notes: list[str]) -> Heatmap:
    """The change matrix of ``table`` (against its baseline row); ``nll``: a rise is a loss."""
    title = f"{name}: change of task j (column) with task i's neurons (row)"
    names = list(table.names)
    return Heatmap(title, names, names, table.change(), notes, higher_is_worse=name == "nll")


def _summaries(result: Any, readout: str) -> list[str]:
    spec = getattr(result, "specificity", None)
    if isinstance(spec, dict):
        spec = spec.get(readout)
    summary = getattr(spec, "summary", None)
    return [f"specificity ({readout}): {summary}"] if summary else []


def heatmaps_of(result: Any) -> list[Heatmap]:
    """Every matrix ``result`` holds (its nested results' too, e.g. a multitask run's
    deactivation), with the specificity statistics that go with it."""
    out: list[Heatmap] = []
    for name, value in vars(result).items():
        if isinstance(value, Comparison) and value.matrix is not None:
            readout = READOUTS.get(name, "score")
            out.append(comparison_heatmap(name, value, _summaries(result, readout)))
        elif hasattr(value, "markdown") and hasattr(value, "out_dir"):  # a nested result
            out.extend(heatmaps_of(value))
    matrix = getattr(result, "matrix", None)
    if isinstance(matrix, np.ndarray) and hasattr(result, "order"):
        order = list(result.order)
        cols = [f"{j + 1}:{t}" for j, t in enumerate(order)]
        values = [[float(v) for v in row] for row in matrix]
        out.append(Heatmap("a(i, j): score on task i (row) after stage j", order, cols, values))
    return out
