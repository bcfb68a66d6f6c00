"""Where specificity lives: deactivation over k x selection, from scores computed once.

Each task is scored once (relevance, and activation probabilities when ``lape`` is swept);
every (selection, k) cell derives its sets from those scores and runs the deactivation
experiment (Table 1 rows, the task x task matrix, the controls and the specificity
statistics). The summary has one row per cell: set sizes, overlap, how many tasks lose more to
their own neurons than to random ones, and the mean double-centred diagonal of the damage
matrix with its bootstrap interval and permutation p-value, by accuracy and by gold NLL.

Example:
    >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig(),
    ...                     deactivate=DeactivateConfig())  # doctest: +SKIP
    >>> res = selection_sweep(ctx, SweepConfig(k=[1, 10]), "runs/sweep")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from taskneurons._io import write_json_atomic
from taskneurons.experiments.common import DETECT_CONFIG, GENERAL_FILE
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.deactivation import (
    DeactivationInputs,
    deactivation_experiment,
)
from taskneurons.experiments.specificity.deactivation_result import DeactivationResult
from taskneurons.experiments.specificity.detect import save_sets, select_sets
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.experiments.specificity.sweep_grid import (
    HEADER,
    cell_name,
    cell_row,
    cell_specs,
    mean_iou,
    write_summary,
)
from taskneurons.experiments.specificity.sweep_joint import (
    HOLM_HEADER,
    JOINT_HEADER,
    holm_rows,
    joint_rows,
)
from taskneurons.experiments.specificity.sweep_stage import SweepConfig
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scoring import ScoredTasks, ScoreReuse, score_tasks
from taskneurons.neurons.selection.selection_config import SelectionConfig
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.tables import markdown_table
from taskneurons.store.run_folder import read_record
from taskneurons.store.settings import SettingsKey
from taskneurons.store.stored_result import StoredResult

#: The record of a sweep.
RECORD_FILE = "sweep_config.json"


@dataclass
class SweepResult(StoredResult):
    """One deactivation result per (selection, k), and the summary rows.

    Attributes:
        cells: ``(selection, k)`` -> the cell's deactivation result (its sets included).
        rows: the summary, a row per cell (:data:`~.sweep_grid.HEADER`).
        out_dir: where the files are.
        meta: ``sweep_config.json``: the grid, detect and deactivate settings, model, scores.
        records: ``(selection, k)`` -> the cell's ``detect_config.json``.
        generals: ``(selection, k)`` -> the cell's general set (``specific``), else ``None``.

    :meth:`save` writes every cell folder (its sets as a detect folder, and its deactivation
    files), the summary and the record; the relevance scores under ``scores/`` are written as
    they are made. :meth:`load` reads them back (the rows recomputed from the cells).

    Example:
        >>> SweepResult.load("runs/sweep").cells[("topk", 1.0)].specificity  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    cells: dict[tuple[str, float], DeactivationResult]
    rows: list[list]
    out_dir: Path
    meta: dict = field(default_factory=dict, repr=False)
    records: dict[tuple[str, float], dict] = field(default_factory=dict, repr=False)
    generals: dict[tuple[str, float], NeuronSet | None] = field(default_factory=dict, repr=False)

    def markdown(self) -> str:
        specs = {c: cell_specs(cell) for c, cell in self.cells.items()}
        joint = markdown_table(JOINT_HEADER, joint_rows(specs), digits=4)
        return (
            f"{markdown_table(HEADER, self.rows, digits=2)}\n\nOne joint test per scope (the "
            f"tasks relabelled once for all its cells):\n\n{joint}"
        )

    def details_markdown(self) -> str:
        """What a report shows folded: each cell's p-value, Holm-adjusted over the cells."""
        specs = {c: cell_specs(cell) for c, cell in self.cells.items()}
        return markdown_table(HOLM_HEADER, holm_rows(specs), digits=4)

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write every cell, ``sweep.*``, the plots and ``sweep_config.json`` into ``folder``
        (default: :attr:`out_dir`)."""
        out = self.target(folder)
        for (method, k), cell in self.cells.items():
            where = out / cell_name(method, k)
            save_sets(where, cell.sets, self.generals.get((method, k)), self.records[(method, k)])
            cell.save(where)
        self.save_summary(out)
        return out

    def save_summary(self, folder: str | os.PathLike | None = None) -> None:
        """``sweep.{md,csv,json}``, ``specificity_vs_k{,_nll}.png`` and ``sweep_config.json``."""
        out = self.target(folder)
        specs = {c: cell_specs(cell) for c, cell in self.cells.items()}
        write_summary(out, self.rows, specs, self.meta)
        write_json_atomic(out / RECORD_FILE, self.meta)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> SweepResult:
        """The sweep in ``path``: every cell of its grid.

        Raises:
            FinishedRunError: the record or a cell's files are missing or unreadable.
        """
        where = str(path / RECORD_FILE)
        grid = SweepConfig.from_dict(meta["sweep"], where=where)
        detect = DetectConfig.from_dict(meta["detect"], where=where)
        result = cls({}, [], path, meta)
        for method in (s.method for s in grid.cells(detect.selection)):
            for k in grid.k:
                where = path / cell_name(method, k)
                cell = result.cells[(method, k)] = DeactivationResult.load(where)
                result.records[(method, k)] = read_record(where / DETECT_CONFIG)
                general = where / GENERAL_FILE
                result.generals[(method, k)] = (
                    NeuronSet.load(general) if general.is_file() else None
                )
                result.rows.append(_row(method, k, cell))
        return result


def selection_sweep(
    ctx: RunContext, config: SweepConfig, out_dir: str | os.PathLike
) -> SweepResult:
    """Deactivation for every (selection, k) of ``config``, from scores computed once.

    The ``sweep`` stage itself (:data:`run_sweep`): model, tokenizer and tasks come from
    ``ctx``, the attribution and selection settings from ``ctx.config.detect``, the
    deactivation settings from ``ctx.config.deactivate``. Writes ``scores/<task>/`` (scores,
    activation probabilities) and the files of a :class:`SweepResult`
    (``specificity_vs_k{,_nll}.png``: the mean double-centred diagonal vs k, one line per
    selection, 95 % bands).

    ``ctx.scores_source()`` (``neurons:``, a run or detect folder): its scores (and activation
    probabilities) of these tasks on this model are used instead of scoring again.
    ``ctx.config.resume``: continue an interrupted sweep in ``out_dir``: its saved scores are
    used (they must have been made with ``detect.attribution``) and every cell whose
    evaluations were saved is not evaluated again (see :func:`deactivation_experiment`), so a
    grid can also be extended cell by cell.

    Raises:
        ValueError: ``resume`` and the saved scores or evaluations were made with other settings.

    Example:
        >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig(),
        ...                     deactivate=DeactivateConfig())  # doctest: +SKIP
        >>> selection_sweep(ctx, SweepConfig(k=[1, 10]), "runs/sweep").rows  # doctest: +SKIP
    """
    out, detect, resume = Path(out_dir), ctx.config.detect, ctx.config.resume
    fingerprint = model_fingerprint(ctx.model)
    selections = config.cells(detect.selection)
    scored = _scores(ctx, selections, out)
    result, ids = SweepResult({}, [], out), [t.id for t in ctx.tasks]
    original = None  # the unmodified model's evaluations: the same in every cell
    for selection in selections:
        method = selection.method
        for k in config.k:
            cfg = dataclasses.replace(detect, k=k, selection=selection)
            sets, general = select_sets(scored, cfg)
            folder = out / cell_name(method, k)
            record = provenance(config=cfg.to_dict(), tasks=ids, model=fingerprint)
            save_sets(folder, sets, general, record)
            inputs = DeactivationInputs(sets, general, original, resume)
            cell = deactivation_experiment(ctx, ctx.config.deactivate, folder, inputs)
            result.cells[(method, k)], original = cell, cell.original
            result.records[(method, k)], result.generals[(method, k)] = record, general
    result.rows = [_row(m, k, result.cells[(m, k)]) for m, k in result.cells]
    result.meta = provenance(
        sweep=config.to_dict(), detect=detect.to_dict(), deactivate=ctx.config.deactivate.to_dict(),
        model=fingerprint, tasks=ids, scores=scored.record(out),
    )  # fmt: skip
    result.save_summary()
    return result


def _scores(ctx: RunContext, selections: list[SelectionConfig], out: Path) -> ScoredTasks:
    """Each task's scores (and the probabilities ``selections`` rank), scored once into
    ``out/scores``: from ``ctx.scores_source()``, else, resuming, from ``out`` (checked)."""
    detect, resume, scores_from = ctx.config.detect, ctx.config.resume, ctx.scores_source()
    source = scores_from if scores_from is not None else (out if resume else None)
    scored = score_tasks(
        ctx.model, ctx.tokenizer, ctx.tasks, detect.attribution, selections, out / "scores",
        ctx.progress, ScoreReuse(source=source),
    )  # fmt: skip
    if resume and scores_from is None:
        _check_resumed_scores(scored, detect)
    return scored


def _check_resumed_scores(scored: ScoredTasks, detect: DetectConfig) -> None:
    """Scores a resumed sweep found in its folder must be of ``detect.attribution``."""
    want = SettingsKey.of(config=detect.attribution.to_dict())
    for task, s in scored.scores.items():
        if scored.origin[task] == "loaded" and want.differing({"config": s.meta.get("config")}):
            raise ValueError(
                f"cannot resume: {scored.paths[task]} was scored with other attribution "
                "settings than detect.attribution; resume with the same settings or use "
                "another folder"
            )


def _row(method: str, k: float, cell: DeactivationResult) -> list:
    sizes = [len(ns) for ns in cell.sets.values()]
    return cell_row(method, k, cell, sizes, mean_iou(cell.sets))


#: The ``sweep`` stage (``Stage.run`` names it), with the file's ``detect`` and ``deactivate``
#: sections.
run_sweep = selection_sweep
