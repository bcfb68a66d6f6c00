"""``taskneurons analyze KIND RUN ...``: tables and figures again from finished runs.

``table5`` (continual orders), ``reuse`` (NCFT's neurons that later tasks train again),
``temperature`` (W-NCFT's final scores at other softmax temperatures, no training),
``sweep`` (a k x selection grid), ``overlap`` / ``figure2`` / ``similarity`` / ``correlate``
(generalization runs) and ``losses`` (every training run's loss, early and late). ``--out`` is checked before any run is read.

Example::

    taskneurons analyze losses runs/table2-six-tasks-sgd-smollm2-cpu
"""

from __future__ import annotations

from pathlib import Path

from taskneurons._io import folder_problem
from taskneurons.experiments.continual import order_means as om
from taskneurons.experiments.continual import temperature_choice as tc
from taskneurons.experiments.continual import temperature_sweep as ts
from taskneurons.experiments.continual.claims import SEEDS_FILE, order_claims, write_claims
from taskneurons.experiments.continual.reuse_tables import reuse_markdown, reuse_rows, write_reuse
from taskneurons.experiments.continual.table5 import continual_orders_table
from taskneurons.experiments.generalization.reanalysis import analyze_run
from taskneurons.experiments.specificity.sweep_grid import sweep_summary
from taskneurons.provenance import provenance
from taskneurons.training.loss_curves import write_loss_summary


def cmd_analyze(args) -> int:
    """Run ``taskneurons analyze`` (the parsed ``args``); 0 on success."""
    _check_analyze_out(args.out)

    if args.analysis == "losses":
        print(write_loss_summary(args.run, args.out))
        return 0
    if args.analysis == "reuse":
        rows, layers = reuse_rows(args.runs)
        print(reuse_markdown(rows))
        if args.out is not None:
            write_reuse(rows, layers, args.out, args.runs)
            print(f"written to {args.out}: neuron_reuse and neuron_reuse_layers (.md, .csv, .json)")
        return 0
    if args.analysis == "temperature":
        return _temperatures(args)
    if args.analysis == "sweep":
        print(sweep_summary(args.runs, args.out, args.mixed).markdown())
        return 0
    if args.analysis != "table5":  # overlap, figure2, similarity, correlate
        print(analyze_run(args.analysis, vars(args)).markdown())
        return 0

    result = continual_orders_table(args.runs, args.out, args.mixed)
    print(result.markdown())
    print("\nFG_j per stage (%):\n")
    print(result.forgetting_markdown())
    if args.out is not None:
        print(f"written to {args.out}: table5_orders and forgetting_orders (.md, .csv, .json)")
        print("and forgetting_<run>.png per run")
    _over_seeds(args.runs, args.out)
    return 0


def _temperatures(args) -> int:
    """``analyze temperature``: the sweep (or the choice on validation) printed, and written
    with ``--out``."""
    if args.choose_on_validation is not None:
        return _temperature_choice(args)
    sweep = ts.TemperatureSweep(args.temperatures, args.modes, progress=True)
    rows = ts.sweep_runs(args.runs, sweep)
    summary = ts.summary_rows(rows)
    print(ts.temperature_markdown(rows, summary))
    if args.out is not None:
        meta = provenance(runs=[str(r) for r in args.runs], temperatures=args.temperatures,
                          modes=args.modes)  # fmt: skip
        ts.write_temperatures(rows, summary, args.out, meta)
        print(f"written to {args.out}: wncft_temperature{{,_tasks}} (.md, .csv, .json)")
    return 0


def _temperature_choice(args) -> int:
    """``analyze temperature --choose-on-validation N``: T chosen per run and mode on the
    validation split, then scored on the test split."""
    choice = tc.TemperatureChoice(
        args.choose_on_validation, args.temperatures, args.modes, args.ties, progress=True
    )
    rows, val = tc.chosen_rows(args.runs, choice)
    summary = tc.difference_summary(rows)
    print(tc.choice_markdown(rows, summary))
    if args.out is not None:
        meta = provenance(runs=[str(r) for r in args.runs], temperatures=args.temperatures,
                          modes=args.modes, n_val=args.choose_on_validation, ties=args.ties)  # fmt: skip
        tc.write_choice(rows, val, summary, args.out, meta)
        print(f"written to {args.out}: wncft_temperature_choice{{,_summary}}, "
              "wncft_temperature_validation (.md, .csv, .json)")  # fmt: skip
    return 0


def _over_seeds(runs: list[str], out: str | None) -> None:
    """Runs with seeds (``seeds.json``) only: the means over (order, seed) units with their
    intervals, and the paper's claims."""
    if not all((Path(r) / SEEDS_FILE).is_file() for r in runs):
        print("\nclaims: not decided (they need runs with seeds: seeds.json)")
        return
    means, fg = om.order_mean_rows(runs), om.forgetting_rows(runs)
    print("\n" + om.order_means_markdown(means, fg) + "\n")
    if out is not None:
        om.write_order_means(means, fg, out, provenance(runs=[str(r) for r in runs]))
        print(f"written to {out}: order_means and forgetting_over_orders (.md, .csv, .json, .png)")
    rows = order_claims(runs)
    for r in rows:
        c = r["claim"]
        print(
            f"{c.text}: {c.metric} {c.a} - {c.b} = {r['mean']:.2f} ({r['lo']:.2f}..{r['hi']:.2f}),"
            f" {r['n_units']} units, p {r['p']:.4f}, Holm {r['p_holm']:.4f};"
            f" {r['n_clusters']} clusters, ± {r['half_width_clusters']:.2f},"
            f" p {r['p_clusters']:.4f},"
            f" Holm {r['p_holm_clusters']:.4f}: {r['verdict']}"
        )
    if out is not None:
        write_claims(rows, out, runs)
        print(f"written to {out}: claims (.md, .csv, .json)")


def _check_analyze_out(out: Path | None) -> None:
    """``analyze --out`` must be a folder that can be written, before any run is read."""
    problem = folder_problem(out) if out is not None else None
    if problem:
        raise ValueError(f"--out: {problem}")
