"""A continual suite repeated over seeds: per-seed runs, their mean, intervals, paired tests.

With ``seeds`` (:class:`~taskneurons.experiments.continual.continual_stage.ContinualSuiteConfig`)
the suite runs once per seed in ``<out>/seed<s>/`` (:meth:`ContinualSuiteConfig.for_seed`: the
seed sets the training order of examples, LoRA's init and the methods' random subsets; the
train, validation and test examples and the references A(i), b(i) are the same for every seed,
and a ``tune`` choice is made once, before the seeds). Then in ``<out>``:

* ``<method>/`` and ``table5.*``, ``suite.json``, ``forgetting.png`` (and ``held_out.*``,
  ``routing.*``, averaged over seeds too): the suite of the seeds' mean matrices (``a[i, j]`` averaged over seeds; CL, BWT, FWT and FG_j are linear in the
  matrix, so they are the means over seeds), which ``analyze table5`` reads like any run
  (its CL ± there is over test examples only);
* ``seeds.{md,csv,json}``: per method CL, BWT, FWT with their interval over seeds *and* test
  examples (:func:`~taskneurons.analysis.seed_pairs.seed_interval`: between-seed variance of
  the mean plus, once, the binomial test-example variance of each seed's value, because the
  seeds share the test examples; FWT without the test term) and every seed's value;
* ``seed_pairs.{md,csv,json}``: for CL and BWT, every pair of methods compared by a paired
  t-test over seeds, Holm-adjusted across the pairs
  (:func:`~taskneurons.analysis.seed_pairs.paired_tests`);
* ``forgetting_seeds.{md,csv,json}`` and ``forgetting_seeds.png``: FG_j per stage, the mean
  over seeds with its t-interval over seeds as a band.

Example:
    >>> res = run_continual(ctx, ContinualSuiteConfig(methods=["seqft", "ncft"], seeds=[0, 1, 2]),
    ...                     "runs/cl")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from taskneurons.analysis.continual_metrics import bwt_half_width, cl_half_width
from taskneurons.analysis.seed_pairs import paired_tests, seed_interval
from taskneurons.experiments.continual.continual_result import ContinualResult
from taskneurons.experiments.continual.continual_stage import ContinualSuiteConfig
from taskneurons.experiments.continual.lr_choice import tune_methods
from taskneurons.experiments.continual.method_run import continual_metrics
from taskneurons.experiments.continual.suite import (
    PAIRS_TITLE,
    ContinualSuiteResult,
    continual_suite,
    seed_tables,
    seeds_title,
)
from taskneurons.experiments.continual.tune_config import candidate_folder, tuning_label
from taskneurons.experiments.run_context import RunContext
from taskneurons.provenance import provenance
from taskneurons.report.plots import line_plot
from taskneurons.report.tables import write_table
from taskneurons.training.snapshot import ModelSnapshot

Z95 = 1.959963984540054


def run_continual(
    ctx: RunContext, config: ContinualSuiteConfig, out_dir: str | os.PathLike
) -> ContinualSuiteResult:
    """The ``continual`` stage: one suite, or (with ``seeds``) :func:`continual_seeds`, or
    (``tune.only``) :func:`tuned_suite`."""
    if config.tune is not None and config.tune.only:
        return tuned_suite(ctx, config, out_dir)
    if config.seeds:
        return continual_seeds(ctx, config, out_dir)
    return continual_suite(ctx, config, out_dir)


def continual_seeds(
    ctx: RunContext, config: ContinualSuiteConfig, out_dir: str | os.PathLike
) -> ContinualSuiteResult:
    """Run the suite once per seed; write the mean suite and the tables over seeds.

    Returns the suite of the mean matrices (see the module docstring).
    """
    out = Path(out_dir)
    chosen = tune_methods(ctx, config, out) if config.tune is not None else {}
    initial = ModelSnapshot.take(ctx.model)
    per_seed: dict[int, ContinualSuiteResult] = {}
    for n, seed in enumerate(config.seeds or []):
        if n:
            initial.restore(ctx.model)
        per_seed[seed] = continual_suite(ctx, config.for_seed(seed), out / f"seed{seed}", chosen)
    meta = provenance(config=config.to_dict(), chosen_train=chosen, seeds=list(per_seed))
    mean = ContinualSuiteResult(out_dir=out, meta=meta)
    first = next(iter(per_seed.values()))
    for label in first.results:
        mean.results[label] = _mean_result([s.results[label] for s in per_seed.values()], out)
    mean.save()
    write_seed_tables(per_seed, config.n_test, out)
    mean.over_seeds = seed_tables(out)
    return mean


def tuned_suite(
    ctx: RunContext, config: ContinualSuiteConfig, out_dir: str | os.PathLike
) -> ContinualSuiteResult:
    """``tune.only``: run the grid and write the choice; the suite of each tuned method's
    chosen candidate (its run on the validation split, read back from its folder), no run on
    the test split.

    Example:
        >>> suite = tuned_suite(ctx, config, "runs/grid")  # doctest: +SKIP
        >>> suite.results["seqlora"].metrics["cl"]  # its mean validation score  # doctest: +SKIP
        59.0
    """
    out = Path(out_dir)
    chosen = tune_methods(ctx, config, out)
    labels = config.labels()
    meta = provenance(config=config.to_dict(), chosen_train=chosen, scored_on="validation")
    suite = ContinualSuiteResult(out_dir=out, meta=meta)
    for label in dict.fromkeys(tuning_label(lab, labels) for lab in labels):
        folder = candidate_folder(config.tune, out, label, chosen[label])
        suite.results[label] = ContinualResult.load(folder)
    suite.save()
    return suite


def _mean_result(runs: list[ContinualResult], out: Path) -> ContinualResult:
    """One method's result with the matrix averaged over seeds (same order and references);
    written by the suite into ``out/<label>``."""
    first = runs[0]
    matrix = np.mean(np.stack([r.matrix for r in runs]), axis=0)  # [tasks, stages]
    order = first.order
    metrics = continual_metrics(
        matrix, [first.single[t] for t in order], [first.zero_shot[t] for t in order]
    )
    # what the seeds share (model, order, data); the config of the first seed is left out
    record = {
        k: first.meta[k] for k in ("model", "order", "train_hash", "test_hash") if k in first.meta
    }
    held = {}
    for t, h in first.held_out.items():
        score = float(np.mean([r.held_out[t]["score"] for r in runs]))
        held[t] = {"score": score, "zero_shot": h["zero_shot"], "change": score - h["zero_shot"]}
    return ContinualResult(
        first.method, first.mode, order, matrix, first.single, first.zero_shot, metrics, [],
        first.stored_bytes_per_task, None, out,
        meta=provenance(**record, mean_over_seeds=len(runs), method=first.label),
        routing=_mean_routing(runs), held_out=held,
    )  # fmt: skip


def _mean_routing(runs: list[ContinualResult]) -> list[dict]:
    """The routing records averaged over seeds (weights and accuracy; same inputs each seed)."""
    out = []
    for j, stage in enumerate(runs[0].routing):
        mean = {}
        for task, rec in stage.items():
            recs = [r.routing[j][task] for r in runs]
            acc = [r["routing_accuracy"] for r in recs]
            weights = {t: float(np.mean([r["weights"][t] for r in recs])) for t in rec["weights"]}
            mean[task] = {
                "n": rec["n"],
                "weights": weights,
                "routing_accuracy": None if acc[0] is None else float(np.mean(acc)),
            }
        out.append(mean)
    return out


def _ses(res: ContinualResult, n_test: int | None) -> dict[str, float | None]:
    """Each metric's standard error over the test examples (``None`` when not known)."""
    if n_test is None:
        return {"cl": None, "bwt": None, "fwt": None}
    n = [n_test] * len(res.order)
    return {
        "cl": cl_half_width(res.matrix[:, -1], n) / 1.96,
        "bwt": bwt_half_width(res.matrix, n) / 1.96,
        "fwt": None,
    }


def seed_rows(per_seed: dict[int, ContinualSuiteResult], n_test: int | None) -> list[list]:
    """A row per method and metric: mean, ± (95 %), low, high, between-seed sd, within-seed
    se, and the value of every seed."""
    seeds = list(per_seed)
    rows = []
    for label in next(iter(per_seed.values())).results:
        runs = [per_seed[s].results[label] for s in seeds]
        for metric in ("cl", "bwt", "fwt"):
            values = [float(r.metrics[metric]) for r in runs]
            ses = [_ses(r, n_test)[metric] for r in runs]
            ses = None if any(se is None or math.isnan(se) for se in ses) else ses
            if any(math.isnan(v) for v in values):
                rows.append([label, metric.upper(), *[math.nan] * 6, *values])
                continue
            c = seed_interval(values, ses)
            stats = [c["mean"], c["half_width"], c["lo"], c["hi"], c["between_sd"], c["within_se"]]
            rows.append([label, metric.upper(), *stats, *values])
    return rows


def write_seed_tables(
    per_seed: dict[int, ContinualSuiteResult], n_test: int | None, out: Path
) -> None:
    """``seeds.*``, ``seed_pairs.*``, ``forgetting_seeds.*`` and ``forgetting_seeds.png``."""
    seeds = list(per_seed)
    meta = {"seeds": seeds, "n_test": n_test}
    header = ["method", "metric", "mean", "±", "low", "high", "between-seed sd",
              "within-seed se", *[f"seed {s}" for s in seeds]]  # fmt: skip
    rows = seed_rows(per_seed, n_test)
    write_table(out / "seeds", header, rows, meta, digits=2, title=seeds_title(len(seeds)))
    pair_rows = []
    labels = list(next(iter(per_seed.values())).results)
    for metric in ("cl", "bwt"):
        values = {m: [float(per_seed[s].results[m].metrics[metric]) for s in seeds] for m in labels}
        for r in paired_tests(values):
            pair_rows.append([metric.upper(), r["pair"], r["mean_difference"], r["t"], r["p"],
                              r["p_holm"]])  # fmt: skip
    header = ["metric", "pair", "mean difference", "t", "p", "p (Holm)"]
    write_table(out / "seed_pairs", header, pair_rows, meta, digits=4, title=PAIRS_TITLE)
    _write_forgetting(per_seed, labels, out, meta)


def _write_forgetting(per_seed, labels: list[str], out: Path, meta: dict) -> None:
    """FG_j per stage: mean over seeds and its t-interval (a band in the plot)."""
    seeds = list(per_seed)
    n = len(per_seed[seeds[0]].results[labels[0]].order)
    rows, means, bands = [], {}, {}
    for label in labels:
        curves = np.array([per_seed[s].results[label].metrics["forgetting"] for s in seeds])
        means[label], bands[label] = [], []
        for j in range(n):
            col = curves[:, j].astype(float)  # [seeds]
            c = seed_interval(col) if np.all(np.isfinite(col)) else None
            lo, hi = (c["lo"], c["hi"]) if c else (math.nan, math.nan)
            means[label].append(c["mean"] if c else math.nan)
            bands[label].append((lo, hi))
            rows.append([label, j + 1, means[label][-1], lo, hi])
    header = ["method", "stage j", "FG_j mean (%)", "low", "high"]
    write_table(out / "forgetting_seeds", header, rows, meta, title="FG_j over seeds (95 % t)")
    line_plot(
        list(range(1, n + 1)), means, out / "forgetting_seeds.png", intervals=bands,
        zero_line=False, title=f"FG_j, mean over {len(seeds)} seeds (band: 95 % t-interval)",
        xlabel="stage j", ylabel="FG_j (%)",
    )  # fmt: skip
