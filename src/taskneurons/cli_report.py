"""``taskneurons report``: one self-contained HTML page of finished run folders.

``taskneurons report RUN [RUN ...] [--out FILE.html] [--neuron L.U ...] [--cards N]`` reads
each run through its result objects (:mod:`taskneurons.pages`) and writes one page, the runs
side by side (default: ``RUN/report.html`` of the first), with neuron cards of each task's
``N`` top neurons (default 2; 0: none) and of every ``--neuron`` (the run's model is loaded). ``taskneurons run``, ``demo`` and every stage command write
it at the end of a run (:func:`finished`).

Example:
    >>> run_report(argparse.Namespace(runs=[Path("runs/demo")], out=None))  # doctest: +SKIP
    report: runs/demo/report.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

from taskneurons._io import folder_problem
from taskneurons._ranks import console_process
from taskneurons.pages.html_report import REPORT_FILE, write_report
from taskneurons.pages.neuron_cards import CardOptions
from taskneurons.pages.run_cards import with_cards
from taskneurons.pages.run_view import run_view
from taskneurons.store.run_folder import RunFolder


def check_args(args: argparse.Namespace) -> None:
    """Every run is a run folder and ``--out`` an ``.html`` file that can be written, before
    anything is read (one-line errors)."""
    for run in args.runs:
        if not RunFolder(run).config_path.is_file():
            raise ValueError(f"{run}: not a run folder (no config.yaml there)")
    out = args.out
    if out is not None:
        if out.suffix.lower() not in (".html", ".htm"):
            raise ValueError(f"--out {out}: name an .html file")
        problem = folder_problem(out.parent)
        if problem:
            raise ValueError(f"--out: {problem}")


def run_report(args: argparse.Namespace) -> int:
    """Write the page; print its path."""
    check_args(args)
    options = CardOptions(per_task=args.cards, neurons=tuple(args.neuron))
    views = [run_view(run) for run in args.runs]
    if options.per_task > 0 or options.neurons:
        views = [with_cards(view, run, options) for view, run in zip(views, args.runs, strict=True)]
    path = write_report(args.runs, args.out, views)
    print(f"report: {path}")
    return 0


def finished(run, source: str = "") -> int:
    """After a run (a ``RunResult``): print where its results are, write its report into its
    folder (neuron cards when it detected sets) and print the report's path, last; returns
    the exit status 0. ``source`` ``taskneurons demo`` adds the demo's closing line. A run over
    seeds (a ``SeedsRun``): one page of its seed folders side by side, in its folder. Under
    several processes only the main one does this."""
    if not console_process():
        return 0
    print(f"finished in {run.seconds:.0f} s; results in {run.out_dir}")
    runs = list(getattr(run, "runs", {}).values()) or [run]  # a SeedsRun: each seed's run
    views = [_view(one) for one in runs]
    path = write_report([one.out_dir for one in runs], Path(run.out_dir) / REPORT_FILE, views)
    if source == "taskneurons demo":
        print("demo finished; every table above, with its statistics, plots and neuron cards:")
    print(f"report: {path}")
    return 0


def _view(run):
    """The report view of one finished run, with neuron cards when it detected sets."""
    view = run_view(run.out_dir)
    if "detect" in run.results:  # neuron cards of each task's top neurons
        try:
            view = with_cards(view, run.out_dir, CardOptions())
        except (ValueError, OSError) as exc:  # the run's results stand; the page goes without
            print(f"report: no neuron cards ({' '.join(str(exc).split())})")
    return view
