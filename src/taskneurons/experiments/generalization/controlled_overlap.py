"""PAPER.md Tables 9–11: at a fixed number of trained neurons, vary their overlap with the test tasks.

Per group and proportion ``p`` the number of trained neurons is fixed at ``N = |Nx|``, ``Nx``
the union of the training tasks' top-``p`` % sets (from scores computed once per task). The
*target* is the union of the out-of-domain test tasks' top-``q`` % (``q = target_proportion``;
by default their whole sets at the detect ``k``). For every requested overlap ``o`` and
seed ``s``, :func:`~taskneurons.analysis.set_overlap.controlled_overlap` draws exactly
``round(o N)`` neurons from the target and the other ``N - round(o N)`` from all the other
neurons (a ``torch.Generator`` seeded with ``s``, so the draws of one seed are nested across
overlaps); that set is trained jointly on the training tasks (train subsets pooled) and scored
on the test tasks (and the training tasks with ``in_domain``). Every set is drawn before any
training, so an impossible cell (more target neurons asked than exist) fails at once. Each
cell is reported as the mean and sample standard deviation over the seeds; the *natural*
overlap (the share of ``Nx`` itself that lies in the target) is given for reference.

Files: ``controlled_overlap.{md,csv,json}`` (a row per group, proportion and overlap),
``controlled_contrast.{md,csv,json}`` (per group and proportion: OOD at the highest minus the
lowest overlap, paired over test examples, interval over seeds and examples, Holm-adjusted p;
:mod:`.controlled_contrast`),
``controlled_scores.{md,csv,json}`` (every evaluation), ``controlled_overlap_<group>.png`` (OOD
mean vs overlap, one line per proportion, ± one standard deviation) and
``controlled_overlap_config.json`` (settings, sets, scores files, training summaries).

Example:
    >>> cfg = ControlledOverlapConfig(proportions=[30], overlaps=[0, 100], seeds=[0, 1])
    >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig())  # doctest: +SKIP
    >>> res = controlled_overlap_experiment(ctx, cfg, "out")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from taskneurons._io import write_json_atomic
from taskneurons.analysis.set_overlap import controlled_overlap
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.experiments.common import eval_examples, limited
from taskneurons.experiments.generalization.controlled_contrast import overlap_contrast
from taskneurons.experiments.generalization.controlled_overlap_stage import ControlledOverlapConfig
from taskneurons.experiments.generalization.groups import TaskGroup
from taskneurons.experiments.generalization.proportion_sweep import Timings
from taskneurons.experiments.generalization.task_groups import (
    GroupSets,
    ScoredTasks,
    joined,
    prepare_sets,
    split_like,
    stage_record,
)
from taskneurons.experiments.run_context import RunContext
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.report.plots import line_plot
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult
from taskneurons.training.trained import trained

#: The record of a controlled-overlap stage.
RECORD_FILE = "controlled_overlap_config.json"


@dataclass
class _Cell:
    """One drawn set: group, proportion, requested overlap (%), seed."""

    group: TaskGroup
    proportion: float
    overlap: float
    seed: int
    neurons: NeuronSet
    natural: float  # % of the union Nx that lies in the target
    achieved: float  # % of the drawn set that lies in the target


def draw_cells(sets: GroupSets, config: ControlledOverlapConfig) -> list[_Cell]:
    """Every (group, proportion, overlap, seed) set, drawn before any training.

    Raises:
        ValueError: a cell asks for more target (or non-target) neurons than exist (the
            message names the group, proportion and overlap).
    """
    cells = []
    for g in config.groups:
        for p in config.proportions:
            nx = sets.union(g.train, p)
            target_set = sets.union(g.test, config.target_proportion)
            target, n = joined(target_set), len(nx)
            natural = 100.0 * int((joined(nx) & target).sum()) / max(n, 1)
            for o in config.overlaps:
                for s in config.seeds:
                    gen = torch.Generator().manual_seed(int(s))
                    try:
                        mask = controlled_overlap(target, n, o / 100.0, gen)
                    except ValueError as exc:
                        raise ValueError(
                            f"controlled_overlap: group {g.name!r}, proportion {p:g} %, "
                            f"overlap {o:g} %: {exc}; lower the overlap or raise "
                            "target_proportion"
                        ) from None
                    achieved = 100.0 * int((mask & target).sum()) / max(n, 1)
                    meta = {**nx.meta, "kind": "controlled_overlap", "overlap": o, "seed": s}
                    ns = split_like(mask, nx, meta)
                    cells.append(_Cell(g, float(p), float(o), int(s), ns, natural, achieved))
    return cells


@dataclass
class ControlledOverlapResult(StoredResult):
    """The ablation's rows (mean and std over seeds), every evaluation, and the time split.

    Attributes:
        header, rows: a row per (group, proportion, overlap): neurons, natural and achieved
            overlap (%), each test task's mean score, the OOD mean over seeds and its sample
            standard deviation (``nan`` with one seed), and the ID mean/std with ``in_domain``.
        records: one dict per evaluation (group, proportion, overlap, seed, task, domain,
            score, ...).
        timings: the time split; runs: training summaries; out_dir: where the files are.
        scored: the scores used (for later stages of the run; ``None`` after :meth:`load`).
        contrast: ``(header, rows)`` of the highest-minus-lowest-overlap contrast (``None`` in
            a run folder written before it existed).
        meta: ``controlled_overlap_config.json``: settings, sets, scores files, summaries.

    :meth:`save` writes the tables, plots and the record (each training run's files under
    ``runs/`` are written as it trains, with ``save_runs``); :meth:`load` reads them back (the
    time split as recorded, to the millisecond).

    Example:
        >>> ControlledOverlapResult.load("runs/x/controlled_overlap").rows[0]  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    header: list[str]
    rows: list[list]
    records: list[dict]
    timings: Timings
    runs: dict[str, dict]
    out_dir: Path
    scored: ScoredTasks | None = None
    meta: dict = field(default_factory=dict, repr=False)
    contrast: tuple[list[str], list[list]] | None = None

    def markdown(self) -> str:
        text = markdown_table(self.header, self.rows)
        if self.contrast is not None:
            text += "\n\nOOD at the highest minus the lowest overlap:\n\n"
            text += markdown_table(*self.contrast, 3)
        return text + "\n\n" + self.timings.line()

    def details_markdown(self) -> str:
        """What a report shows folded: every evaluation (``controlled_scores``)."""
        keys = list(self.records[0]) if self.records else []
        return markdown_table(keys, [[r[k] for k in keys] for r in self.records])

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``controlled_overlap.*``, ``controlled_scores.*``, the plots and the record
        into ``folder`` (default: :attr:`out_dir`)."""
        out = self.target(folder)
        config = ControlledOverlapConfig.from_dict(self.meta["config"], where=RECORD_FILE)
        _write(self, config, self.meta, out)
        return out

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> ControlledOverlapResult:
        """The controlled-overlap run in ``path``.

        Raises:
            FinishedRunError: a table or the record is missing or unreadable.
        """
        table = read_record(path / "controlled_overlap.json")
        scores = read_record(path / "controlled_scores.json")
        records = [dict(zip(scores["header"], row, strict=True)) for row in scores["rows"]]
        timings = Timings.from_dict(meta["timings"])
        runs = dict(meta["runs"])
        contrast = None
        if (path / "controlled_contrast.json").is_file():
            found = read_record(path / "controlled_contrast.json")
            contrast = (found["header"], found["rows"])
        return cls(
            table["header"], table["rows"], records, timings, runs, path, None, meta, contrast
        )


def controlled_overlap_experiment(
    ctx: RunContext, config: ControlledOverlapConfig, out_dir: str | os.PathLike
) -> ControlledOverlapResult:
    """Train each drawn set on its group's training tasks and score the test tasks.

    The ``controlled_overlap`` stage itself (:data:`run_controlled_overlap`): model,
    tokenizer, tasks, the detect settings and the scores to reuse come from ``ctx``.

    Raises:
        ValueError: a group names a task the run does not have; a cell cannot be drawn.

    Example:
        >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig(k=10))  # doctest: +SKIP
        >>> controlled_overlap_experiment(ctx, ControlledOverlapConfig(), "out").rows  # doctest: +SKIP
    """
    start, out = time.perf_counter(), Path(out_dir)
    model, tokenizer, progress = ctx.model, ctx.tokenizer, ctx.progress
    chosen, scored, sets = prepare_sets(
        ctx, config.groups, out, "controlled_overlap.groups", config.proportion_of
    )
    timings = Timings(scoring=scored.seconds)
    cells = draw_cells(sets, config)
    timings.selection = time.perf_counter() - start - timings.scoring
    by_id = {t.id: t for t in chosen}
    test = {t.id: eval_examples(t, config.n_test, config.seed) for t in chosen}
    train_sets = {t.id: limited(t, config.n_train, config.seed) for t in chosen}
    records, runs, examples = [], {}, {}
    for c in cells:
        key = f"{c.group.name}/p{c.proportion:g}/o{c.overlap:g}/s{c.seed}"
        t0 = time.perf_counter()
        with trained(
            model, tokenizer, [train_sets[t] for t in c.group.train], config.train,
            neurons=c.neurons, out_dir=out / "runs" / key if config.save_runs else None,
            progress=progress,
        ) as res:  # fmt: skip
            timings.training += time.perf_counter() - t0
            t0 = time.perf_counter()
            tests = [*c.group.test, *(c.group.train if config.in_domain else [])]
            for t in tests:
                scored_t = evaluate(
                    model, tokenizer, by_id[t], test[t], config=config.eval, progress=False
                )
                examples[(c.group.name, c.proportion, c.overlap, c.seed, t)] = (
                    scored_t.example_scores()
                )
                records.append(_record(c, t, "out" if t in c.group.test else "in", scored_t.score))
        timings.evaluation += time.perf_counter() - t0
        runs[key] = {**res.summary(), "neurons": len(c.neurons), "achieved": c.achieved}
    header, rows = summary_rows(config, cells, records)
    timings.total = time.perf_counter() - start
    result = ControlledOverlapResult(header, rows, records, timings, runs, out, scored)
    result.contrast = _contrast(config, examples)
    result.meta = stage_record(
        "controlled_overlap", config, ctx.config.detect, sets, scored, out, model,
        timings=timings.to_dict(), runs=runs,
        definition="overlap = share of the trained neurons drawn from the test tasks' union",
    )  # fmt: skip
    result.save()
    return result


def _contrast(config: ControlledOverlapConfig, examples: dict) -> tuple | None:
    """The highest-minus-lowest-overlap contrast, or ``None`` with a single overlap."""
    if len(set(config.overlaps)) < 2:
        return None
    groups = [(g.name, g.test) for g in config.groups]
    proportions = [float(p) for p in config.proportions]
    overlaps = [float(o) for o in config.overlaps]
    return overlap_contrast(examples, groups, proportions, overlaps, config.seeds)


def _record(c: _Cell, task: str, domain: str, score: float) -> dict:
    return {
        "group": c.group.name, "proportion": c.proportion, "overlap": c.overlap,
        "seed": c.seed, "neurons": len(c.neurons), "achieved": c.achieved, "task": task,
        "domain": domain, "score": float(score),
    }  # fmt: skip


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``nan`` for fewer than two values)."""
    if not values:
        return math.nan, math.nan
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), std


def summary_rows(
    config: ControlledOverlapConfig, cells: Sequence[_Cell], records: Sequence[dict]
) -> tuple[list[str], list[list]]:
    """A row per (group, proportion, overlap): sizes, overlaps, scores (mean and std over seeds)."""
    tests = list(dict.fromkeys(t for g in config.groups for t in g.test))
    header = ["group", "proportion %", "overlap %", "neurons", "natural overlap %"]
    header += ["achieved overlap %", *tests, "OOD mean", "OOD std"]
    if config.in_domain:
        header += ["ID mean", "ID std"]
    rows = []
    for c in [c for c in cells if c.seed == config.seeds[0]]:
        mine = [
            r for r in records
            if (r["group"], r["proportion"], r["overlap"]) == (c.group.name, c.proportion, c.overlap)
        ]  # fmt: skip
        per_task = [
            _mean_std([r["score"] for r in mine if r["task"] == t])[0] if t in c.group.test else ""
            for t in tests
        ]
        row = [c.group.name, c.proportion, c.overlap, len(c.neurons), c.natural]
        row += [statistics.fmean(r["achieved"] for r in mine) if mine else math.nan, *per_task]
        for domain in ("out", "in") if config.in_domain else ("out",):
            by_seed = [
                statistics.fmean(
                    r["score"] for r in mine if r["seed"] == s and r["domain"] == domain
                )
                for s in config.seeds
            ]
            row += list(_mean_std(by_seed))
        rows.append(row)
    return header, rows


def _write(
    result: ControlledOverlapResult, config: ControlledOverlapConfig, meta: dict, out: Path
) -> None:
    title = "Controlled overlap: scores at a fixed number of trained neurons (Tables 9-11)"
    write_table(out / "controlled_overlap", result.header, result.rows, meta=meta, title=title)
    keys = list(result.records[0]) if result.records else []
    rows = [[r[k] for k in keys] for r in result.records]
    write_table(out / "controlled_scores", keys, rows, meta=meta, title="Every evaluation")
    if result.contrast is not None:
        title = "OOD score at the highest minus the lowest overlap (paired over test examples)"
        write_table(out / "controlled_contrast", *result.contrast, meta=meta, digits=3, title=title)
    col = {name: i for i, name in enumerate(result.header)}
    for g in config.groups:
        series, bands = {}, {}
        for p in config.proportions:
            mine = [r for r in result.rows if r[0] == g.name and r[1] == p]
            mean = [r[col["OOD mean"]] for r in mine]
            std = [r[col["OOD std"]] for r in mine]
            series[f"{p:g} % of the training sets"] = mean
            bands[f"{p:g} % of the training sets"] = [
                (m - s, m + s) if not math.isnan(s) else (m, m)
                for m, s in zip(mean, std, strict=True)
            ]
        line_plot(
            config.overlaps, series, out / f"controlled_overlap_{g.name}.png",
            title=f"Group {g.name}: OOD score vs overlap with the test tasks' neurons",
            xlabel="trained neurons drawn from the test tasks' neurons (%)",
            ylabel="OOD accuracy % / ROUGE-L (mean ± std over seeds)",
            intervals=bands, zero_line=False,
        )  # fmt: skip
    write_json_atomic(out / RECORD_FILE, meta)


#: The ``controlled_overlap`` stage (``Stage.run`` names it): scores from earlier stages,
#: ``neurons:`` or this run's detect.
run_controlled_overlap = controlled_overlap_experiment
