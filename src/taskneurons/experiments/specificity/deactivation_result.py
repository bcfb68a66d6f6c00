"""The result of the deactivation experiment: its tables and statistics, written and read back.

Every evaluation is kept per example in ``evaluations.json`` (with the key of the settings it
depends on); the tables (``table1``, ``matrix``, and by gold-label NLL ``table1_nll``,
``matrix_nll``) are laid out from those evaluations, the specificity statistics are in
``specificity.json`` and the provenance in ``deactivate_config.json``. :meth:`DeactivationResult.load`
reads a folder back into the result the experiment returned.

Example:
    >>> res = DeactivationResult.load("runs/table1/deactivate")  # doctest: +SKIP
    >>> res.table.row("Deactivate-Task")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from taskneurons._io import write_json_atomic, write_json_sealed, write_text_atomic
from taskneurons.experiments.common import GENERAL_FILE
from taskneurons.experiments.specificity.damage_summary import (
    EXTRA_ROWS,
    ROW_NAMES,
    Specificity,
    deactivation_summary,
)
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.report.comparison import Comparison, MatrixSpec
from taskneurons.store.run_folder import RunFolder, read_record
from taskneurons.store.stored_result import StoredResult

#: Every evaluation of a deactivation run, per example, with what they depend on (``key``).
EVALUATIONS_FILE = "evaluations.json"
#: The record of a deactivation run.
RECORD_FILE = "deactivate_config.json"
#: The specificity statistics of its matrices.
SPECIFICITY_FILE = "specificity.json"
CORNER = "deactivated \\ measured"


class Evaluation(NamedTuple):
    """One evaluation: the metric, the gold NLL, and both per example (in input order)."""

    score: float
    nll: float | None
    scores: list[float]
    nlls: list[float] | None


def runs_to_json(runs: dict) -> dict:
    """``{row: {task: Evaluation}}`` (``"matrix": {i: {j: Evaluation}}``) as JSON."""
    return {
        row: {
            i: v._asdict() if row != "matrix" else {j: e._asdict() for j, e in v.items()}
            for i, v in cells.items()
        }
        for row, cells in runs.items()
    }


def runs_from_json(rows: dict) -> dict:
    """The inverse of :func:`runs_to_json`."""
    return {
        row: {
            i: Evaluation(**v) if row != "matrix" else {j: Evaluation(**e) for j, e in v.items()}
            for i, v in cells.items()
        }
        for row, cells in rows.items()
    }


def tables(names: list[str], runs: dict) -> tuple[Comparison, Comparison | None]:
    """The table and matrix by the task metric, and by gold NLL when every task has one."""
    rows = [r for r in (*ROW_NAMES, *EXTRA_ROWS) if r in runs]

    def part(field_name: str) -> Comparison:
        table = {r: {n: getattr(runs[r][n], field_name) for n in names} for r in rows}
        matrix = {
            i: {j: getattr(v, field_name) for j, v in row.items()}
            for i, row in runs["matrix"].items()
        }
        return Comparison(names, table, matrix)

    has_nll = all(v.nll is not None for v in runs["Original"].values())
    return part("score"), part("nll") if has_nll else None


@dataclass
class DeactivationResult(StoredResult):
    """Table 1 rows and the matrix, by the task metric and (label tasks) by gold-label NLL.

    Attributes:
        table: rows ``Original`` / ``Deactivate-Random`` / ``Deactivate-Task`` (accuracy % or
            ROUGE-L), and ``matrix[i][j]``: task j's score with task i's neurons off.
        nll: the same for the gold label's NLL (nats per example), when every task is scored
            by label likelihood; else ``None``.
        metric: task id -> metric name.
        out_dir: where the files are.
        specificity: ``"score"`` (and ``"nll"``) -> the statistics of the matrix: the mean
            double-centred diagonal with its bootstrap interval and permutation p-value, and
            the tasks whose row / column peaks on the diagonal.
        sets: the deactivated task sets.
        original: task id -> the evaluation with nothing off (pass it to a later call with
            the same model, tasks and config to skip those evaluations, as a sweep does).
        general: the general set deactivated as a control (row ``Deactivate-General``).
        meta: ``deactivate_config.json``: config, model, data hashes, sets' records.
        evaluations: ``evaluations.json``: every evaluation per example and its settings key.

    :meth:`load` reads the sets from the folder when it holds them (a sweep's cell), else
    from the run's ``detect/`` folder or its ``neurons:`` folder (empty when none is found).
    """

    RECORD = RECORD_FILE
    table: Comparison
    nll: Comparison | None
    metric: dict[str, str]
    out_dir: Path
    specificity: dict[str, Specificity] = field(default_factory=dict)
    sets: dict[str, NeuronSet] = field(default_factory=dict)
    original: dict[str, Any] = field(default_factory=dict, repr=False)
    general: NeuronSet | None = None
    meta: dict = field(default_factory=dict, repr=False)
    evaluations: dict = field(default_factory=dict, repr=False)

    def summary(self) -> str:
        """How many tasks lose more to their own neurons than to random ones, and diagonals."""
        text = deactivation_summary(self.table)
        if self.nll is not None:
            text += "\nby gold-label NLL:\n" + deactivation_summary(
                self.nll, higher_is_better=False
            )
        return text

    def markdown(self) -> str:
        """The tables and change matrices, each followed by its summary."""
        parts = [
            self.table.markdown(),
            self.table.change_markdown(CORNER),
            deactivation_summary(self.table),
        ]
        if "score" in self.specificity:
            parts.append("specificity: " + self.specificity["score"].summary)
        if self.nll is not None:
            parts += [
                "Gold-label NLL (nats per example, lower is better)",
                self.nll.markdown(),
                self.nll.change_markdown(CORNER),
                deactivation_summary(self.nll, higher_is_better=False),
            ]
            if "nll" in self.specificity:
                parts.append("specificity by gold-label NLL: " + self.specificity["nll"].summary)
        return "\n\n".join(parts)

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``evaluations.json``, the tables, matrices, plots, ``specificity.{json,md}``
        and ``deactivate_config.json`` into ``folder`` (default: :attr:`out_dir`)."""
        out = self.target(folder)
        if self.evaluations:
            write_json_sealed(out / EVALUATIONS_FILE, self.evaluations)
        self.table.write(out, "table1", self.meta, "Deactivation (accuracy % / ROUGE-L)", _spec())
        if self.nll is not None:
            title = "Deactivation: gold label NLL (nats per example, lower is better)"
            self.nll.write(out, "table1_nll", self.meta, title, _spec("nll"))
        stats = {k: v.to_dict() for k, v in self.specificity.items()}
        record = {"names": self.table.names, **stats, "meta": self.meta}
        write_json_atomic(out / SPECIFICITY_FILE, record)
        lines = [f"- {k}: {v.summary}" for k, v in self.specificity.items()]
        write_text_atomic(out / "specificity.md", "# Specificity\n\n" + "\n".join(lines) + "\n")
        return self.write_meta(out)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> DeactivationResult:
        """The deactivation run in ``path`` (tables laid out from its evaluations).

        Raises:
            FinishedRunError: a record is missing or unreadable.
        """
        run = RunFolder(path)
        evaluations = read_record(run.path / EVALUATIONS_FILE)
        runs = runs_from_json(evaluations["runs"])
        names = list(meta["metric"])
        runs["Deactivate-Task"] = {t: runs["matrix"][t][t] for t in names}
        table, nll = tables(names, runs)
        stats = read_record(run.path / SPECIFICITY_FILE)
        specs = {k: Specificity.from_dict(stats[k]) for k in ("score", "nll") if k in stats}
        result = cls(table, nll, dict(meta["metric"]), run.path, specs, meta=meta)
        result.original, result.evaluations = dict(runs["Original"]), evaluations
        sets_dir = run.neuron_sets_dir()
        if sets_dir is not None:
            found = RunFolder(sets_dir)
            paths = {t: found.set_path(t) for t in names}
            result.sets = {t: NeuronSet.load(p) for t, p in paths.items() if p.is_file()}
            if "Deactivate-General" in runs and (sets_dir / GENERAL_FILE).is_file():
                result.general = NeuronSet.load(sets_dir / GENERAL_FILE)
        return result


def _spec(readout: str = "score") -> MatrixSpec:
    """How the change matrix of ``readout`` (``score``, ``nll``) is written."""
    if readout == "nll":
        return MatrixSpec(
            "matrix_nll",
            "Change of task j's gold label NLL (nats) with task i's neurons deactivated",
            "Deactivate task i's neurons: change on task j (gold NLL)",
            corner=CORNER,
            ylabel="deactivated neurons of task i",
            cmap="RdBu_r",
        )
    return MatrixSpec(
        "matrix",
        "Change of task j's score (points) with task i's neurons deactivated",
        "Deactivate task i's neurons: change on task j",
        corner=CORNER,
        ylabel="deactivated neurons of task i",
    )
