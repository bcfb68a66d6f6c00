"""The result of one continual-learning method on one task order: tables, files, read back.

Files in a method's folder: ``matrix.{md,csv,json}`` (``a[i, j]``), ``heatmap.png``,
``metrics.{md,csv,json}`` (CL, BWT, FWT, FG_j; the final routing accuracy of a method that
weighs tasks), ``tasks.{md,csv,json}`` (per task: b(i), A(i), a(i,i), final score),
``routing.{md,csv,json}`` (W-NCFT, EPI: per stage and task, the mean weight of every trained
task on the task's test inputs and the routing accuracy), ``continual_config.json`` (the run's record + provenance) and
``result.json`` (everything, ``nan`` as ``null``), which :meth:`ContinualResult.load` reads.

Example:
    >>> res = ContinualResult.load("runs/cl/wncft")  # doctest: +SKIP
    >>> res.metrics["cl"], res.matrix.shape  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskneurons._io import write_json_atomic
from taskneurons.report.plots import heatmap
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult

#: The record of a method's run, and its whole result as JSON.
RECORD_FILE = "continual_config.json"
RESULT_FILE = "result.json"


@dataclass
class ContinualResult(StoredResult):
    """The accuracy matrix of one method on one task order, and its metrics.

    Attributes:
        method: the method's name (``mode`` adds W-NCFT's ``given``/``inferred``).
        mode: W-NCFT's mode, else ``None``.
        order: task ids in training order.
        matrix: ``[tasks, stages]`` scores, ``a[i, j]`` on task ``i`` after stage ``j`` (``nan``
            where not measured).
        single: A(i) by task id; zero_shot: b(i) by task id.
        metrics: ``cl``, ``bwt``, ``fwt`` (points; ``nan`` when not computable) and
            ``forgetting`` (FG_j per stage, %; ``nan`` at the first stage).
        stages: each stage's training summary.
        stored_bytes_per_task: the method's extra bytes per task at inference.
        resumed_from: the stage a resumed run continued with (``None``: not resumed).
        out_dir: where the files are.
        held_out: task none trained on -> ``score`` after the last task, its ``zero_shot``
            score and the ``change`` (general ability kept).
        routing: per stage, task id -> ``n``, ``weights`` and ``routing_accuracy``
            (:func:`~taskneurons.continual.base.routing_record`; empty: no task weights).
        meta: ``continual_config.json``: the run's record (config, model, order, data hashes)
            and provenance.

    :meth:`save` writes the tables, the heatmap, ``continual_config.json`` and
    ``result.json``; the stage checkpoints (``checkpoint/``) and the reference cache are
    written as the run goes. :meth:`load` reads ``result.json`` back.

    Example:
        >>> ContinualResult.load("runs/cl/ncft").metrics["cl"]  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    method: str
    mode: str | None
    order: list[str]
    matrix: np.ndarray
    single: dict[str, float]
    zero_shot: dict[str, float]
    metrics: dict[str, Any]
    stages: list[dict]
    stored_bytes_per_task: int
    resumed_from: int | None
    out_dir: Path
    meta: dict = field(default_factory=dict, repr=False)
    routing: list[dict] = field(default_factory=list)
    held_out: dict[str, dict] = field(default_factory=dict)

    def routing_accuracy(self) -> float | None:
        """After the last stage: the share (%) of test inputs of the trained tasks whose own
        task weighs most (``None`` without routing records)."""
        last = self.routing[-1] if self.routing else {}
        parts = [r for r in last.values() if r.get("routing_accuracy") is not None]
        if not parts:
            return None
        return sum(r["routing_accuracy"] * r["n"] for r in parts) / sum(r["n"] for r in parts)

    def routing_rows(self) -> tuple[list[str], list[list[Any]]]:
        """Header and rows of the routing table: stage, task, n, accuracy, weight per task."""
        header = ["after stage", "task", "n", "routing accuracy %", *[f"w {t}" for t in self.order]]
        rows = []
        for j, stage in enumerate(self.routing):
            for task, rec in stage.items():
                weights = [rec["weights"].get(t) for t in self.order]
                rows.append([j + 1, task, rec["n"], rec["routing_accuracy"], *weights])
        return header, rows

    @property
    def label(self) -> str:
        """``method`` or ``method (mode)``."""
        return f"{self.method} ({self.mode})" if self.mode else self.method

    def matrix_rows(self) -> tuple[list[str], list[list[Any]]]:
        """Header and rows of the matrix table (``None`` where not measured)."""
        header = ["task \\ after", *[f"{j + 1}:{t}" for j, t in enumerate(self.order)]]
        rows = [[t, *_plain(list(self.matrix[i]))] for i, t in enumerate(self.order)]
        return header, rows

    def metric_rows(self) -> list[list[Any]]:
        """``[name, value]`` rows: CL, BWT, FWT, then FG_j of every stage."""
        m = self.metrics
        rows = [["CL", m["cl"]], ["BWT", m["bwt"]], ["FWT", m["fwt"]]]
        rows += [[f"FG_{j + 1} (%)", v] for j, v in enumerate(m["forgetting"])]
        if self.routing_accuracy() is not None:
            rows.append(["routing accuracy (final, %)", self.routing_accuracy()])
        return [[k, _plain(v)] for k, v in rows]

    def task_rows(self) -> tuple[list[str], list[list[Any]]]:
        """Per task: zero-shot b(i), single-task A(i), right after its stage, final."""
        header = ["task", "zero-shot b(i)", "single-task A(i)", "a(i,i)", "final a(i,N)"]
        rows = [
            [t, self.zero_shot[t], self.single[t], *_plain([self.matrix[i, i], self.matrix[i, -1]])]
            for i, t in enumerate(self.order)
        ]
        return header, rows

    def markdown(self) -> str:
        """The matrix, the metrics, the per-task table (and the routing table) as Markdown."""
        header, rows = self.matrix_rows()
        t_header, t_rows = self.task_rows()
        parts = [
            f"continual learning: {self.label}, order {' -> '.join(self.order)}",
            markdown_table(header, _dashes(rows)),
            markdown_table(["metric", "value"], _dashes(self.metric_rows())),
            markdown_table(t_header, _dashes(t_rows)),
            f"stored per task: {self.stored_bytes_per_task} bytes",
        ]
        if any(self.routing):  # how often each input's own task weighs most, and the mean weights
            r_header, r_rows = self.routing_rows()
            parts.append(markdown_table(r_header, _dashes(r_rows)))
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``nan`` as ``None``)."""
        return {
            "method": self.method,
            "mode": self.mode,
            "order": self.order,
            "matrix": [_plain(list(r)) for r in self.matrix],
            "single": self.single,
            "zero_shot": self.zero_shot,
            "metrics": {k: _plain(v) for k, v in self.metrics.items()},
            "stages": self.stages,
            "stored_bytes_per_task": self.stored_bytes_per_task,
            "resumed_from": self.resumed_from,
            "routing": self.routing,
            "held_out": self.held_out,
        }

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``matrix.*``, ``metrics.*``, ``tasks.*``, ``heatmap.png``,
        ``continual_config.json`` and ``result.json`` into ``folder`` (default: :attr:`out_dir`)."""
        out = self.target(folder)
        meta = {"method": self.label, "order": self.order}
        header, rows = self.matrix_rows()
        write_table(out / "matrix", header, rows, meta, title=f"a(i, j): {self.label}")
        write_table(out / "metrics", ["metric", "value"], self.metric_rows(), meta, digits=2)
        t_header, t_rows = self.task_rows()
        write_table(out / "tasks", t_header, t_rows, meta)
        if self.held_out:
            rows = [[t, h["score"], h["zero_shot"], h["change"]] for t, h in self.held_out.items()]
            h_header = ["held-out task", "after the last task", "zero-shot", "change"]
            write_table(out / "held_out", h_header, rows, meta, title="tasks none trained on")
        if self.routing:
            r_header, r_rows = self.routing_rows()
            title = f"task weights and routing accuracy: {self.label}"
            write_table(out / "routing", r_header, r_rows, meta, title=title)
        heatmap(
            self.matrix,
            self.order,
            [f"{j + 1}:{t}" for j, t in enumerate(self.order)],
            out / "heatmap.png",
            title=f"score on task i after stage j ({self.label})",
            xlabel="after stage j",
            ylabel="task i",
        )
        write_json_atomic(out / RECORD_FILE, self.meta)
        write_json_atomic(out / RESULT_FILE, self.to_dict())
        return out

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> ContinualResult:
        """The continual run of one method in ``path`` (``nan`` where ``result.json`` has
        ``null``).

        Raises:
            FinishedRunError: ``result.json`` is missing or unreadable.
        """
        data = read_record(path / RESULT_FILE)
        metrics = {k: _nan(v) for k, v in data["metrics"].items()}
        return cls(
            data["method"], data["mode"], list(data["order"]),
            np.array([_nan(row) for row in data["matrix"]], dtype=float),
            dict(data["single"]), dict(data["zero_shot"]), metrics, list(data["stages"]),
            data["stored_bytes_per_task"], data["resumed_from"], path, meta,
            list(data.get("routing", [])), dict(data.get("held_out", {})),
        )  # fmt: skip


def _plain(value: Any) -> Any:
    """Floats with ``nan`` as ``None`` (lists element-wise)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    return value


def _nan(value: Any) -> Any:
    """The inverse of :func:`_plain`: ``None`` as ``nan`` (lists element-wise)."""
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return math.nan if value is None else value


def _dashes(rows: list[list[Any]]) -> list[list[Any]]:
    """``None`` (not measured / not defined) shown as ``-``."""
    return [["-" if v is None else v for v in row] for row in rows]
