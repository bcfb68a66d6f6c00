"""PAPER.md Table 5 and Figure 4: several continual-learning methods on one task order.

Each method of ``methods`` runs :func:`~taskneurons.experiments.continual.method_run.continual_experiment`
on the same order, data and training knobs, in ``<out>/<method>/`` (W-NCFT with ``mode:
inferred`` is ``wncft-inferred``), sharing one cache of single-task scores A(i) and zero-shot
scores. The summary is the Table 5 layout (a row per method: each task's final score, CL, BWT,
FWT) and the forgetting curves FG_j of every method in one figure (Figure 4).

Example:
    >>> res = continual_suite(RunContext.of(model, tok, tasks), ContinualSuiteConfig(methods=["seqft", "ncft"]),
    ...                       "runs/cl")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from taskneurons._io import write_json_sealed
from taskneurons.continual.stage_checkpoint import checkpoint_stage, has_checkpoint
from taskneurons.experiments.continual.continual_result import ContinualResult
from taskneurons.experiments.continual.continual_stage import ContinualConfig, ContinualSuiteConfig
from taskneurons.experiments.continual.lr_choice import tune_methods
from taskneurons.experiments.continual.method_run import continual_experiments, shares_training
from taskneurons.experiments.run_context import RunContext
from taskneurons.provenance import provenance
from taskneurons.report.plots import forgetting_plot
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import read_record
from taskneurons.store.stored_result import StoredResult
from taskneurons.training.snapshot import ModelSnapshot

#: the suite's routing table (methods that weigh tasks)
ROUTING_HEADER = ["method", "routing accuracy (final, %)", "mean weight of the input's own task"]
#: the suite's held-out table (tasks none of the methods trained on)
HELD_HEADER = ["method", "held-out task", "after the last task", "zero-shot", "change"]
#: the titles of the suite's tables (its files and its Markdown)
TABLE5_TITLE = "Continual learning: final score per task, CL, BWT, FWT (Table 5 layout)"
HELD_TITLE = "General ability kept: tasks none of the methods trained on"
ROUTING_TITLE = "Task weights after the last task (W-NCFT, EPI): routing accuracy"
#: the tables over seeds a run with ``seeds`` writes beside its mean suite
#: (:func:`~taskneurons.experiments.continual.seeds.write_seed_tables`)
SEED_TABLES = ("seeds", "seed_pairs")
PAIRS_TITLE = "Methods compared over seeds: paired t-test, Holm-adjusted across the pairs"


def seeds_title(n_seeds: int) -> str:
    """The title of the ``seeds`` table of a run over ``n_seeds`` seeds."""
    return (
        f"CL, BWT, FWT over {n_seeds} seeds: mean ± t(S-1) sqrt(s^2/S + se^2) "
        "(se: test examples, shared by the seeds; none for FWT)"
    )


#: The Table 5 rows and FG_j curves of a suite, as JSON.
SUITE_FILE = "suite.json"


@dataclass
class ContinualSuiteResult(StoredResult):
    """Each method's :class:`ContinualResult`, and the Table 5 rows.

    ``meta`` is the provenance written beside the tables (the suite's config). :meth:`save`
    writes each method's folder, ``table5.*``, ``forgetting.png`` and ``suite.json`` (the
    shared reference cache is written as the runs go); :meth:`load` reads every method's
    folder named in ``suite.json`` back.

    Example:
        >>> ContinualSuiteResult.load("runs/cl").rows()  # doctest: +SKIP
    """

    results: dict[str, ContinualResult] = field(default_factory=dict)
    out_dir: Path = Path(".")
    meta: dict = field(default_factory=dict, repr=False)
    #: a run with seeds: its ``seeds`` and ``seed_pairs`` tables (``{"header", "rows",
    #: "meta"}``), read back from their files; shown by :meth:`markdown` and
    #: :meth:`details_markdown`, written by the seeds' code, not by :meth:`save`
    over_seeds: dict[str, dict] = field(default_factory=dict, repr=False)

    def header(self) -> list[str]:
        order = next(iter(self.results.values())).order
        return ["method", *order, "CL", "BWT", "FWT", "stored MB/task"]

    def rows(self) -> list[list]:
        out = []
        for label, res in self.results.items():
            final = [float(res.matrix[i, -1]) for i in range(len(res.order))]
            m = res.metrics
            mb = res.stored_bytes_per_task / 2**20
            out.append([label, *final, m["cl"], m["bwt"], m["fwt"], mb])
        return out

    def routing_rows(self) -> list[list]:
        """A row per method that weighs tasks: after the last task, the share (%) of test
        inputs whose own task weighs most, and the mean weight of their own task."""
        rows = []
        for label, res in self.results.items():
            last = res.routing[-1] if res.routing else {}
            if not last:
                continue
            n = sum(r["n"] for r in last.values())
            own = sum(r["weights"].get(t, 0.0) * r["n"] for t, r in last.items()) / max(n, 1)
            rows.append([label, res.routing_accuracy(), own])
        return rows

    def held_out_rows(self) -> list[list]:
        """A row per method and held-out task: score after the last task, zero-shot, change."""
        return [
            [label, t, h["score"], h["zero_shot"], h["change"]]
            for label, res in self.results.items()
            for t, h in res.held_out.items()
        ]

    def markdown(self) -> str:
        """Table 5 (of the seeds' mean matrices in a run with seeds), the held-out and routing
        tables, and the intervals over seeds, each under its title."""
        mean = f" (mean over {len(self.meta['seeds'])} seeds)" if self.meta.get("seeds") else ""
        text = f"{TABLE5_TITLE}{mean}\n\n" + markdown_table(self.header(), self.rows())
        if self.held_out_rows():
            text += f"\n\n{HELD_TITLE}\n\n" + markdown_table(HELD_HEADER, self.held_out_rows())
        if self.routing_rows():
            text += f"\n\n{ROUTING_TITLE}\n\n" + markdown_table(ROUTING_HEADER, self.routing_rows())
        seeds = self.over_seeds.get("seeds")
        if seeds:
            text += f"\n\n{seeds_title(len(seeds['meta']['seeds']))}\n\n"
            text += markdown_table(seeds["header"], seeds["rows"], digits=2)
        return text

    def details_markdown(self) -> str:
        """A run with seeds: every pair of methods compared over seeds (paired t, Holm);
        ``""`` otherwise."""
        pairs = self.over_seeds.get("seed_pairs")
        if not pairs:
            return ""
        return f"{PAIRS_TITLE}\n\n" + markdown_table(pairs["header"], pairs["rows"], digits=4)

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write each method's folder and the suite's tables into ``folder`` (default:
        :attr:`out_dir`)."""
        out = self.target(folder)
        for label, res in self.results.items():
            res.save(out / label)
        self.save_summary(out)
        return out

    def save_summary(self, folder: str | os.PathLike | None = None) -> None:
        """``table5.{md,csv,json}``, ``forgetting.png`` and ``suite.json``."""
        out = self.target(folder)
        title = TABLE5_TITLE
        if self.meta.get("scored_on") == "validation":  # tune.only: the chosen candidates
            title += ", scored on the validation split (tune.only: the grid's chosen values)"
        write_table(out / "table5", self.header(), self.rows(), meta=self.meta, title=title)
        series = {
            label: [float(v) for v in res.metrics["forgetting"]]
            for label, res in self.results.items()
        }
        forgetting_plot(
            series,
            out / "forgetting.png",
            "FG_j: share of earlier tasks' single-task score kept (Figure 4)",
        )
        held = self.held_out_rows()
        if held:
            write_table(out / "held_out", HELD_HEADER, held, meta=self.meta, title=HELD_TITLE)
        routing = self.routing_rows()
        if routing:
            write_table(out / "routing", ROUTING_HEADER, routing, self.meta, title=ROUTING_TITLE)
        curves = {k: [None if math.isnan(x) else x for x in v] for k, v in series.items()}
        suite = {"rows": self.rows(), "header": self.header(), "forgetting": curves}
        write_json_sealed(out / SUITE_FILE, {**suite, "meta": self.meta})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ContinualSuiteResult:
        """The suite in ``folder``: every method its ``suite.json`` lists.

        Raises:
            FinishedRunError: ``suite.json`` or a method's files are missing or unreadable.
        """
        path = Path(folder)
        suite = read_record(path / SUITE_FILE)
        results = {row[0]: ContinualResult.load(path / row[0]) for row in suite["rows"]}
        return cls(results, path, suite["meta"], seed_tables(path))


def seed_tables(folder: Path) -> dict[str, dict]:
    """The :data:`SEED_TABLES` in ``folder`` (``{}`` for a run without seeds)."""
    files = {name: folder / f"{name}.json" for name in SEED_TABLES}
    return {name: read_record(path) for name, path in files.items() if path.is_file()}


def continual_suite(
    ctx: RunContext,
    config: ContinualSuiteConfig,
    out_dir: str | os.PathLike,
    chosen: dict[str, dict] | None = None,
) -> ContinualSuiteResult:
    """Run every method of ``config`` on the same order; write Table 5 and Figure 4.

    Each method starts from the same model: a
    :class:`~taskneurons.training.snapshot.ModelSnapshot` taken before the first method is
    restored before each next one (the LoRA layers an earlier method injected removed, the
    weights and ``requires_grad`` flags put back). Methods sharing one training (``wncft`` and
    ``wncft-inferred``: :func:`_jobs`) run together, at the first one's place; the rows keep
    the order of ``methods``. ``chosen``: each label's tuned training values when already
    known (else tuned here when ``config.tune`` is set; :mod:`.lr_choice`).
    """
    model, tokenizer, tasks, progress = ctx.model, ctx.tokenizer, ctx.tasks, ctx.progress
    resume = ctx.config.resume
    out = Path(out_dir)
    if chosen is None:
        chosen = tune_methods(ctx, config, out) if config.tune is not None else {}
    initial = ModelSnapshot.take(model)
    done: dict[str, ContinualResult] = {}
    for n, job in enumerate(_jobs(config, out, resume, chosen)):
        if n:
            initial.restore(model)
        runs = [(cfg, out / label) for label, cfg in job]
        results = continual_experiments(
            model, tokenizer, tasks, runs, resume=resume, progress=progress
        )
        done.update({label: res for (label, _), res in zip(job, results, strict=True)})
    meta = provenance(config=config.to_dict(), chosen_train=chosen)
    result = ContinualSuiteResult(out_dir=out, meta=meta)
    result.results = {label: done[label] for label, _ in config.runs()}
    result.save_summary()
    return result


def _jobs(
    config: ContinualSuiteConfig, out: Path, resume: bool, chosen: dict[str, dict] | None = None
) -> list[list[tuple[str, ContinualConfig]]]:
    """The runs in groups that train once: a run joins the first earlier one it shares its
    training with (:func:`~taskneurons.experiments.continual.method_run.shares_training`; another label);
    when resuming, a group whose folders' checkpoints are at different stages is split up.
    ``chosen``: run label -> its tuned training values (:func:`tune_methods`)."""
    groups: list[list[tuple[str, ContinualConfig]]] = []
    for label, cfg in config.runs():
        if chosen and chosen.get(label):
            cfg = cfg.replace(train=cfg.train.replace(**chosen[label]))
        if cfg.reference_cache is None:
            cfg = dataclasses.replace(cfg, reference_cache=str(out / "reference_cache.json"))
        group = next(
            (
                g
                for g in groups
                if shares_training(g[0][1], cfg) and label not in [lab for lab, _ in g]
            ),
            None,
        )
        if group is None:
            groups.append([(label, cfg)])
        else:
            group.append((label, cfg))
    if not resume:
        return groups
    jobs: list[list[tuple[str, ContinualConfig]]] = []
    for group in groups:
        stages = {checkpoint_stage(out / label / "checkpoint") for label, _ in group}
        jobs += [group] if len(stages) == 1 else [[run] for run in group]
    return jobs


def check_checkpoints(config: ContinualSuiteConfig, folder: Path, resume: bool) -> None:
    """Before the model loads: without ``resume``, a method's folder that holds a checkpoint of
    an earlier run is refused (the run would start it afresh over it).

    Example:
        >>> check_checkpoints(config, Path("runs/cl"), resume=False)  # doctest: +SKIP
        Traceback (most recent call last):
        ValueError: runs/cl/seqft holds a checkpoint of an earlier run; pass resume=True or ...
    """
    roots = [Path(folder)] + [Path(folder) / f"seed{s}" for s in config.seeds or []]
    for root in roots:
        for label, _ in config.runs():
            if not resume and has_checkpoint(root / label / "checkpoint"):
                raise ValueError(
                    f"{root / label} holds a checkpoint of an earlier run; pass resume=True "
                    "or another folder"
                )
