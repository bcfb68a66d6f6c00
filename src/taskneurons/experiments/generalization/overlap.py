"""PAPER.md Table 8: overlap of training-task and test-task neurons at each proportion.

For every ordered pair of groups (training tasks of group ``g``, out-of-domain test tasks of
group ``h``) and every proportion ``p``: ``Nx`` = the union of the training tasks' top-``p`` %
sets, ``Ny`` = the union of the test tasks' top-``p`` % sets, and the overlap rate
``|Nx ∩ Ny| / |Nx ∪ Ny|`` (in %), once with every neuron and once with the general neurons
(in the top-k of at least ``m`` tasks) removed from both. The pairwise rates of all the
tasks' top-``p`` % sets come along as matrices. Only scores are needed: no training.

Files: ``overlap.{md,csv,json}`` (one row per pair and proportion), ``overlap_vs_proportion.png``
(one line per pair, with and without the general neurons), ``pairwise/iou_p<p>[_without_general]
.{md,csv,json,png}`` and ``overlap_config.json`` (settings, groups, scores files, provenance).

Example:
    >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig())  # doctest: +SKIP
    >>> res = overlap_experiment(ctx, OverlapConfig(), "out")  # doctest: +SKIP
    >>> res.rate("a", "a", 50.0)  # overlap rate in %  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taskneurons._io import write_json_atomic
from taskneurons.analysis.set_overlap import (
    chance_overlap_rate,
    overlap_matrix,
    overlap_rate,
)
from taskneurons.experiments.generalization.groups import TaskGroup
from taskneurons.experiments.generalization.overlap_stage import OverlapConfig
from taskneurons.experiments.generalization.task_groups import (
    GroupSets,
    joined,
    prepare_sets,
    stage_record,
)
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.neurons.scoring import MissingProbabilitiesError, ScoredTasks, load_scored
from taskneurons.report.plots import heatmap, line_plot
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import FinishedRunError, read_record
from taskneurons.store.stored_result import StoredResult

#: The record of an overlap stage.
RECORD_FILE = "overlap_config.json"

HEADER = [
    "train group", "test group", "proportion %", "train neurons", "test neurons",
    "shared", "overlap %", "overlap % without general", "overlap % by chance",
]  # fmt: skip


@dataclass
class OverlapResult(StoredResult):
    """Table 8 rows and the pairwise overlap matrices.

    Attributes:
        rows: one per (train group, test group, proportion), laid out as :data:`HEADER`
            (rates in %; ``by chance``: random sets of the two unions' sizes,
            :func:`~taskneurons.analysis.set_overlap.chance_overlap_rate`).
        matrices: ``(proportion, without_general)`` -> ``(task ids, R [T, T])``, ``R`` the
            pairwise overlap rates of the tasks' top-``p`` % sets in ``[0, 1]``.
        general: size of the general set.
        out_dir: where the files are.
        scored: the scores used (for later stages of the run; ``None`` after :meth:`load`).
        meta: the stage's record (``overlap_config.json``), written beside every table.
        title: the title of ``overlap.md``.

    :meth:`save` writes the tables, plots and the record; :meth:`load` recomputes the rows and
    matrices from the scores the record names (the files hold the matrices rounded).

    Example:
        >>> OverlapResult.load("runs/x/overlap").rate("a", "a", 50.0)  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    rows: list[list]
    matrices: dict[tuple[float, bool], tuple[list[str], np.ndarray]]
    general: int
    out_dir: Path
    scored: ScoredTasks | None = None
    meta: dict = field(default_factory=dict, repr=False)
    title: str = "Overlap rates"

    def rate(self, train: str, test: str, proportion: float, without_general: bool = False):
        """The overlap rate (%) of group ``train``'s training and ``test``'s test tasks."""
        for r in self.rows:
            if r[0] == train and r[1] == test and r[2] == proportion:
                return r[7] if without_general else r[6]
        raise KeyError(f"no row for {train} -> {test} at {proportion} %")

    def markdown(self) -> str:
        note = f"general neurons (removed in the last column): {self.general:,}"
        return markdown_table(HEADER, self.rows, digits=1) + "\n\n" + note

    def save(self, folder: str | os.PathLike | None = None, record: str = RECORD_FILE) -> Path:
        """Write the tables and plots (:func:`write_overlap`) and :attr:`meta` as ``record``
        into ``folder`` (default: :attr:`out_dir`)."""
        out = self.target(folder)
        write_overlap(self, self.meta, self.title, out)
        write_json_atomic(out / record, self.meta)
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike, record: str = RECORD_FILE) -> OverlapResult:
        """The overlap rates of the stage in ``folder`` whose record is ``record``, recomputed
        from the scores it names (and ``lape``'s saved activation probabilities).

        Raises:
            FinishedRunError: the record, its tables or the scores it names are missing.
        """
        path = Path(folder) / record
        meta = read_record(path)
        detect = DetectConfig.from_dict(meta["detect"], where=str(path))
        result, _ = recompute_overlap(path, meta, detect, meta["config"]["proportions"])
        result.out_dir, result.meta = Path(folder), meta
        title = (Path(folder) / "overlap.md").read_text(encoding="utf-8").splitlines()[0]
        result.title = title.removeprefix("# ")
        return result


def overlap_rows(
    sets: GroupSets, groups: Sequence[TaskGroup], proportions: Sequence[float]
) -> OverlapResult:
    """Table 8 from the sets of a stage (pure: no model, no files).

    Example:
        >>> res = overlap_rows(sets, [TaskGroup("a", ["x"], ["y"])], [50.0])  # doctest: +SKIP
    """
    rows = []
    for g in groups:
        for h in groups:
            for p in proportions:
                nx, ny = sets.union(g.train, p), sets.union(h.test, p)
                mx, my = joined(nx), joined(ny)
                bare = [joined(sets.union(ts, p, drop_general=True)) for ts in (g.train, h.test)]
                a, b = int(mx.sum()), int(my.sum())
                rows.append([
                    g.name, h.name, float(p), a, b, int((mx & my).sum()),
                    100.0 * overlap_rate(mx, my), 100.0 * overlap_rate(*bare),
                    100.0 * chance_overlap_rate(a, b, mx.numel()),
                ])  # fmt: skip
    ids = list(dict.fromkeys(t for g in groups for t in [*g.train, *g.test]))
    matrices = {}
    for p in proportions:
        for bare in (False, True):
            masks = {t: joined(sets.at(p, t, drop_general=bare)) for t in ids}
            matrices[(float(p), bare)] = overlap_matrix(masks)
    return OverlapResult(rows, matrices, len(sets.general), Path("."))


def saved_inputs(path: Path, record: dict, detect: DetectConfig) -> ScoredTasks:
    """The scores a stage's record (at ``path``) names, and the activation probabilities a
    selection that ranks them needs, measured as ``detect`` asks, from the stage's own
    ``scores/`` folder or beside those scores.

    Raises:
        FinishedRunError: a scores file is missing, or the selection's probabilities are.
    """
    paths = {}
    for task, entry in record["scores"].items():
        paths[task] = path.parent / entry["path"]
        if not paths[task].is_file():
            raise FinishedRunError(f"{path}: the scores of {task!r} are missing ({paths[task]})")
    sel = detect.selection
    try:
        return load_scored(paths, sel, path.parent / "scores", record.get("model"))
    except MissingProbabilitiesError as exc:
        raise FinishedRunError(
            f"{path}: {exc} (run the stage with detect.selection.method: {sel.method})"
        ) from None


def recompute_overlap(
    path: Path, record: dict, detect: DetectConfig, proportions: Sequence[float]
) -> tuple[OverlapResult, GroupSets]:
    """Table 8 again from the scores the record at ``path`` names, with ``detect``'s selection
    and ``proportions``; and the sets it was computed from."""
    groups = [TaskGroup.from_dict(g, where=str(path)) for g in record["groups"]]
    scored = saved_inputs(path, record, detect)
    reading = (record.get("config") or {}).get("proportion_of", "set")  # older runs: "set"
    sets = GroupSets.select(scored.scores, detect, scored.probabilities, reading)
    return overlap_rows(sets, groups, proportions), sets


def write_overlap(
    result: OverlapResult, meta: dict, title: str = "Overlap rates", out: Path | None = None
) -> None:
    """``overlap.{md,csv,json}``, ``overlap_vs_proportion.png`` and ``pairwise/`` files in
    ``out`` (default: ``result.out_dir``)."""
    out = out if out is not None else result.out_dir
    write_table(out / "overlap", HEADER, result.rows, meta=meta, digits=1, title=title)
    pairs = list(dict.fromkeys((r[0], r[1]) for r in result.rows))
    xs = sorted({r[2] for r in result.rows})
    chance = {(r[0], r[1], r[2]): r[8] for r in result.rows}
    series = {}
    for g, h in pairs:
        for bare, suffix in ((False, ""), (True, " without general")):
            series[f"{g} -> {h}{suffix}"] = [result.rate(g, h, p, bare) for p in xs]
        series[f"{g} -> {h} by chance"] = [chance[(g, h, p)] for p in xs]
    line_plot(
        xs, series, out / "overlap_vs_proportion.png",
        title="Overlap of training and test tasks' neurons (train group -> test group)",
        xlabel="proportion of each task's neurons (%)", ylabel="overlap rate (%)",
    )  # fmt: skip
    for (p, bare), (names, R) in result.matrices.items():
        stem = f"iou_p{p:g}" + ("_without_general" if bare else "")
        label = f"top {p:g} % of each task's set" + (", general neurons removed" if bare else "")
        rows = [[a, *(round(float(v), 4) for v in R[i])] for i, a in enumerate(names)]
        write_table(
            out / "pairwise" / stem, ["task", *names], rows, meta=meta, digits=3,
            title=f"Pairwise overlap rates, {label}",
        )  # fmt: skip
        heatmap(R, names, names, out / "pairwise" / f"{stem}.png", title=label, fmt="{:.2f}")


def overlap_experiment(
    ctx: RunContext, config: OverlapConfig, out_dir: str | os.PathLike
) -> OverlapResult:
    """Score the groups' tasks once (or reuse ``ctx``'s scores or its source), write Table 8.

    The ``overlap`` stage itself (:data:`run_overlap`): model, tokenizer, tasks, the detect
    settings and the scores to reuse come from ``ctx`` (:func:`.task_groups.prepare_sets`).

    Raises:
        ValueError: a group names a task the run does not have.

    Example:
        >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig(k=10))  # doctest: +SKIP
        >>> overlap_experiment(ctx, OverlapConfig(proportions=[50]), "out").rate("a", "a", 50.0)  # doctest: +SKIP
    """
    out, detect = Path(out_dir), ctx.config.detect
    _, scored, sets = prepare_sets(ctx, config.groups, out, "overlap.groups", config.proportion_of)
    result = overlap_rows(sets, config.groups, config.proportions)
    result.out_dir, result.scored = out, scored
    result.meta = stage_record("overlap", config, detect, sets, scored, out, ctx.model)
    result.title = "Overlap rates of training and test tasks' neurons (Table 8)"
    result.save()
    return result


#: The ``overlap`` stage (``Stage.run`` names it): scores from earlier stages, ``neurons:`` or
#: this run's detect.
run_overlap = overlap_experiment
