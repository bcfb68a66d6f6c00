"""PAPER.md Figure 2 (and Table 8): train the groups' neurons at each proportion, test ID and OOD.

Every task of the groups is scored once; each proportion ``p`` derives from those scores the
top ``p`` % of each training task's set (the selection is ``detect.selection``, ``topk`` by
default). Per group and proportion:

* ``joint`` — one model: the union of the training tasks' top-``p`` % sets is trained on the
  training tasks together (their train subsets pooled), then scored on every training task
  (in-domain, ID) and every out-of-domain test task (OOD).
* ``single`` — one model per training task ``i``, trained on task ``i`` alone through the
  union (``single_neurons: union``, the default) or through task ``i``'s own top-``p`` % set
  (``own``). Task ``i``'s ID score is its own model's; an OOD task's score is the mean over
  the models of the group.

Every run starts from the base weights (the trained :class:`NeuronDelta` is detached after
scoring). The overlap rates of Table 8 come from the same sets (:mod:`.overlap`).

Files: ``evaluations.{md,csv,json}`` (every evaluation), ``evaluation_examples.json`` (the same
with each test example's score), ``figure2_<group>.{md,csv,json}`` (a row per mode and
proportion: ID tasks, ID mean, OOD tasks, OOD mean, average), ``figure2_<group>_change.*`` (the
ID mean's, OOD mean's and average's change from zero-shot, paired over the test examples, with
a bootstrap 95 % interval and a sign-flip p-value),
``figure2_<group>_<mode>.png`` (ID mean, OOD mean and their average vs the proportion),
``figure2_<group>_<mode>_tasks.png`` (one line per test task), the overlap files of
:func:`~taskneurons.experiments.generalization.overlap.write_overlap`, ``generalization_config.json``
(settings, groups, selection, scores files, training summaries, time split, provenance) and,
with ``save_runs``, each training run's files under ``runs/``.

Example:
    >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig())  # doctest: +SKIP
    >>> res = generalization_experiment(ctx, GeneralizationConfig(proportions=[10, 100]),
    ...                                 "out")  # doctest: +SKIP
    >>> res.timings  # seconds: scoring, selection, training, evaluation, total  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from taskneurons._io import write_json_sealed
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.result import EvalResult
from taskneurons.experiments.common import eval_examples, limited
from taskneurons.experiments.generalization.figure2 import (
    EXAMPLES_FILE,
    change_rows,
    figure_rows,
    write_figure,
)
from taskneurons.experiments.generalization.generalization_stage import GeneralizationConfig
from taskneurons.experiments.generalization.groups import TaskGroup
from taskneurons.experiments.generalization.overlap import (
    OverlapResult,
    overlap_rows,
    write_overlap,
)
from taskneurons.experiments.generalization.task_groups import (
    GroupSets,
    ScoredTasks,
    prepare_sets,
    stage_record,
)
from taskneurons.experiments.run_context import RunContext
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult
from taskneurons.training.trained import trained

#: The record of a generalization stage.
RECORD_FILE = "generalization_config.json"


#: the columns of ``evaluations.*``
EVALUATION_KEYS = ["group", "mode", "proportion", "model", "neurons", "task", "domain", "score"]


@dataclass
class Timings:
    """Seconds spent per kind of work (a stage's time split).

    Attributes:
        scoring: relevance scores (0 when taken from an earlier stage or a detect folder).
        selection: deriving the sets (proportions, unions, random draws) from the scores.
        training, evaluation: fine-tuning runs and test-set scoring.
        reading: the similarity pass (reading weights, no forward pass).
        total: the whole stage.
    """

    scoring: float = 0.0
    selection: float = 0.0
    training: float = 0.0
    evaluation: float = 0.0
    reading: float = 0.0
    total: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {f"{k}_s": round(v, 3) for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Timings:
        """The inverse of :meth:`to_dict` (seconds as recorded: to the millisecond)."""
        return cls(**{k.removesuffix("_s"): v for k, v in data.items()})

    def line(self) -> str:
        """``time: scoring 1.0 s, ... (total 9.0 s)`` (the similarity pass only when it ran)."""
        parts = [
            f"{k} {v:.1f} s"
            for k, v in vars(self).items()
            if k != "total" and (v or k != "reading")
        ]
        return f"time: {', '.join(parts)} (total {self.total:.1f} s)"


@dataclass
class GeneralizationResult(StoredResult):
    """The sweep's evaluations, its per-group tables, the overlap rates and the time split.

    Attributes:
        records: one dict per evaluation: ``group``, ``mode`` (``joint``, ``single`` or
            ``zero-shot``), ``proportion`` (% of each set; 0 for zero-shot), ``model`` (what
            was trained: ``joint`` or the task id), ``neurons`` (trained), ``task``,
            ``domain`` (``in`` or ``out``), ``score`` (accuracy % / ROUGE-L), ``examples``
            (each test example's share of the score, ``[n_test]``).
        tables: group -> ``(header, rows)`` of ``figure2_<group>``.
        changes: group -> ``(header, rows)`` of ``figure2_<group>_change`` (the ID/OOD means'
            change from zero-shot with paired bootstrap CIs; no rows without zero-shot).
        overlap: Table 8 from the same sets.
        timings: the time split.
        runs: ``"<group>/<mode>/p<p>/<model>"`` -> training summary.
        out_dir: where the files are.
        scored: the scores used (for later stages of the run; ``None`` after :meth:`load`).
        meta: ``generalization_config.json``: settings, groups, scores files, time split.

    :meth:`save` writes the tables, plots, records and the overlap files (each training run's
    files under ``runs/`` are written as it trains, with ``save_runs``); :meth:`load` reads the
    evaluation records back and recomputes the tables from them (the overlap rates from the
    scores the record names; the time split as recorded, to the millisecond).

    Example:
        >>> GeneralizationResult.load("runs/x/generalization").tables["a"]  # doctest: +SKIP
    """

    RECORD = RECORD_FILE
    records: list[dict]
    tables: dict[str, tuple[list[str], list[list]]]
    changes: dict[str, tuple[list[str], list[list]]]
    overlap: OverlapResult
    timings: Timings
    runs: dict[str, dict]
    out_dir: Path
    scored: ScoredTasks | None = None
    meta: dict = field(default_factory=dict, repr=False)

    def markdown(self) -> str:
        parts = [f"group {g}\n\n{markdown_table(h, r)}" for g, (h, r) in self.tables.items()]
        parts += [
            f"group {g}, change from zero-shot\n\n{markdown_table(h, r, digits=3)}"
            for g, (h, r) in self.changes.items()
            if r
        ]
        parts += ["overlap rates (%)\n\n" + self.overlap.markdown(), self.timings.line()]
        return "\n\n".join(parts)

    def details_markdown(self) -> str:
        """What a report shows folded: every evaluation (``evaluations``)."""
        return markdown_table(
            EVALUATION_KEYS, [[r[k] for k in EVALUATION_KEYS] for r in self.records]
        )

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write ``evaluations.*``, ``evaluation_examples.json``, the Figure 2 tables and plots,
        the overlap files and ``generalization_config.json`` into ``folder`` (default:
        :attr:`out_dir`)."""
        out = self.target(folder)
        config = GeneralizationConfig.from_dict(self.meta["config"], where=RECORD_FILE)
        rows = [[r[k] for k in EVALUATION_KEYS] for r in self.records]
        title = "Every evaluation of the sweep"
        write_table(out / "evaluations", EVALUATION_KEYS, rows, meta=self.meta, title=title)
        write_json_sealed(out / EXAMPLES_FILE, {"records": self.records, "meta": self.meta})
        for g in config.groups:
            write_figure(out, g, self.tables[g.name], self.changes[g.name], config.modes, self.meta)
        write_overlap(self.overlap, self.meta, self.overlap.title, out)
        return self.write_meta(out)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> GeneralizationResult:
        """The proportion sweep in ``path``.

        Raises:
            FinishedRunError: the record, the evaluation records or the scores are missing.
        """
        config = GeneralizationConfig.from_dict(meta["config"], where=str(path / RECORD_FILE))
        records = read_record(path / EXAMPLES_FILE)["records"]
        tables, changes = _figures(config, records)
        overlap = OverlapResult.load(path, RECORD_FILE)
        timings = Timings.from_dict(meta["timings"])
        return cls(records, tables, changes, overlap, timings, dict(meta["runs"]), path, None, meta)


@dataclass
class _Run:
    """One model to train and score."""

    key: str
    model: str
    train: list[str]
    neurons: NeuronSet
    tests: list[str]


def _plan(g: TaskGroup, mode: str, p: float, sets: GroupSets, single_neurons: str) -> list[_Run]:
    """The models to train for group ``g``, ``mode`` and proportion ``p``."""
    union = sets.union(g.train, p)
    if mode == "joint":
        return [_Run(f"{g.name}/joint/p{p:g}/joint", "joint", g.train, union, [*g.train, *g.test])]
    out = []
    for t in g.train:
        ns = union if single_neurons == "union" else sets.at(p, t)
        out.append(_Run(f"{g.name}/single/p{p:g}/{t}", t, [t], ns, [t, *g.test]))
    return out


def generalization_experiment(
    ctx: RunContext, config: GeneralizationConfig, out_dir: str | os.PathLike
) -> GeneralizationResult:
    """The proportion sweep of PAPER.md Figure 2 and the overlap rates of Table 8.

    The ``generalization`` stage itself (:data:`run_generalization`): model, tokenizer, tasks,
    the detect settings and the scores to reuse come from ``ctx``.

    Raises:
        ValueError: a group names a task the run does not have; a planned set is empty
            (raised before any training).

    Example:
        >>> ctx = RunContext.of(model, tok, tasks, detect=DetectConfig(k=10))  # doctest: +SKIP
        >>> generalization_experiment(ctx, GeneralizationConfig(), "out").timings  # doctest: +SKIP
    """
    start, out, model = time.perf_counter(), Path(out_dir), ctx.model
    chosen, scored, sets = prepare_sets(
        ctx, config.groups, out, "generalization.groups", config.proportion_of
    )
    timings = Timings(scoring=scored.seconds)
    plans = {
        (g.name, mode, p): _plan(g, mode, p, sets, config.single_neurons)
        for g in config.groups for mode in config.modes for p in config.proportions
    }  # fmt: skip
    for (group, mode, p), runs in plans.items():
        for r in runs:
            if len(r.neurons) == 0:
                raise ValueError(
                    f"group {group!r}, {mode}, {p:g} %: no neurons to train for {r.model!r}; "
                    "raise detect.k or the proportion"
                )
    timings.selection = time.perf_counter() - start - timings.scoring
    sweep = _Sweep(model, ctx.tokenizer, chosen, config, out, ctx.progress, timings)
    sweep.zero_shot()
    in_domain = {g.name: set(g.train) for g in config.groups}
    for (group, mode, p), runs in plans.items():
        for r in runs:
            sweep.run(group, mode, p, r, in_domain[group])
    tables, changes = _figures(config, sweep.records)
    overlap = overlap_rows(sets, config.groups, config.proportions)
    overlap.out_dir, overlap.title = out, "Overlap rates at each proportion (Table 8)"
    timings.total = time.perf_counter() - start
    result = GeneralizationResult(
        sweep.records, tables, changes, overlap, timings, sweep.runs, out, scored
    )
    result.meta = stage_record(
        "generalization", config, ctx.config.detect, sets, scored, out, model,
        timings=timings.to_dict(), runs=sweep.runs,
    )  # fmt: skip
    overlap.meta = result.meta
    result.save()
    return result


def _figures(config: GeneralizationConfig, records: list[dict]) -> tuple[dict, dict]:
    """Per group: Figure 2's table, and its change from zero-shot, from the records."""
    modes, proportions = config.modes, config.proportions
    tables = {g.name: figure_rows(g, records, modes, proportions) for g in config.groups}
    changes = {
        g.name: change_rows(g, records, modes, proportions, config.n_boot, config.seed)
        for g in config.groups
    }
    return tables, changes


class _Sweep:
    """Trains and scores the planned runs; keeps the records, summaries and time split."""

    def __init__(self, model, tokenizer, tasks, config, out, progress, timings):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.tasks = {t.id: t for t in tasks}
        self.test = {t.id: eval_examples(t, config.n_test, config.seed) for t in tasks}
        self.train = {t.id: limited(t, config.n_train, config.seed) for t in tasks}
        self.out, self.progress, self.timings = out, progress, timings
        self.records: list[dict] = []
        self.runs: dict[str, dict] = {}

    def score(self, task_id: str) -> EvalResult:
        t0 = time.perf_counter()
        task = self.tasks[task_id]
        res = evaluate(
            self.model, self.tokenizer, task, self.test[task_id], config=self.config.eval,
            progress=False,
        )  # fmt: skip
        self.timings.evaluation += time.perf_counter() - t0
        return res

    def zero_shot(self) -> None:
        if not self.config.zero_shot:
            return
        base = {t: self.score(t) for t in self.tasks}
        for g in self.config.groups:
            for t in [*g.train, *g.test]:
                domain = "in" if t in g.train else "out"
                self.records.append(
                    _record(g.name, "zero-shot", 0.0, "base", 0, t, domain, base[t])
                )

    def run(self, group: str, mode: str, p: float, r: _Run, in_domain: set[str]) -> None:
        t0 = time.perf_counter()
        with trained(
            self.model, self.tokenizer, [self.train[t] for t in r.train], self.config.train,
            neurons=r.neurons, out_dir=self.out / "runs" / r.key if self.config.save_runs else None,
            progress=self.progress,
        ) as res:  # fmt: skip
            self.timings.training += time.perf_counter() - t0
            for t in r.tests:
                domain = "in" if t in in_domain else "out"
                rec = _record(group, mode, p, r.model, len(r.neurons), t, domain, self.score(t))
                self.records.append(rec)
        self.runs[r.key] = {**res.summary(), "neurons": len(r.neurons), "tasks": r.train}


def _record(group, mode, p, model, neurons, task, domain, res) -> dict:
    return {
        "group": group, "mode": mode, "proportion": float(p), "model": model,
        "neurons": int(neurons), "task": task, "domain": domain, "score": float(res.score),
        "examples": res.example_scores(),
    }  # fmt: skip


#: The ``generalization`` stage (``Stage.run`` names it): scores from earlier stages,
#: ``neurons:`` or this run's detect.
run_generalization = generalization_experiment
