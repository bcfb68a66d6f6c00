"""Forgetting against the learning rate: each lr-grid candidate's validation CL and BWT.

The choice file (``lr_choice.json``) keeps each candidate's mean validation score (CL), the
rule's input. A method that forgets more than another may do so because its chosen learning
rate is larger; the candidates' own runs (``tune/<method>/<values>/``) hold the matrix that
says how BWT moves with the rate, at the rates two methods share too.

    python scripts/lr_grid_forgetting.py results/continual-fair-lr-smollm2-cpu/lr_choice.json \\
        [results/continual-fair-lr-edge-smollm2-cpu/lr_choice.json ...] [--methods seqft,ncft]
        [--task dbpedia]

Prints a Markdown table: method, the grid (the choice file's folder), candidate, validation CL,
BWT with its conservative 95 % half-width over the validation examples
(:func:`~taskneurons.analysis.continual_metrics.bwt_half_width`; one seed), and whether that
file chose it. With ``--task``, one more column: that task's validation score after each
stage, ``a(task, 1) → ... → a(task, N)`` from the stage it is learned (forgetting that a later
stage undoes leaves no trace in BWT; this row shows it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from taskneurons.analysis.continual_metrics import bwt, bwt_half_width, cl
from taskneurons.experiments.continual.continual_result import ContinualResult
from taskneurons.experiments.continual.lr_choice import read_choices
from taskneurons.experiments.continual.tune_config import (
    TuneConfig,
    candidate_folder,
    candidate_tag,
)
from taskneurons.report.tables import markdown_table

HEADER = ["method", "grid", "candidate", "validation CL", "BWT", "BWT ± (95 %)", "chosen"]


def candidate_row(folder: Path, label: str, values: dict, chosen: bool) -> list:
    """One candidate's row, read from its run folder ``<grid>/tune/<label>/<values>``."""
    result = ContinualResult.load(folder)
    n_val = result.meta["config"]["n_val"]
    half = bwt_half_width(result.matrix, [n_val] * len(result.order))
    grid = folder.parents[2].name
    return [label, grid, candidate_tag(values), cl(result.matrix), bwt(result.matrix), half,
            "yes" if chosen else ""]  # fmt: skip


def task_scores(folder: Path, task: str) -> str:
    """``task``'s scores from the stage that learns it to the last, ``"88.0 → 48.0 → 80.0"``."""
    result = ContinualResult.load(folder)
    if task not in result.order:
        raise ValueError(f"task {task!r} is not in {folder}'s order {result.order}")
    i = result.order.index(task)
    return " → ".join(f"{v:.1f}" for v in result.matrix[i, i:])


def rows(choice_file: Path, task: str | None = None) -> list[list]:
    """Every candidate of ``choice_file`` with a finished run beside it (and, with ``task``,
    that task's scores by stage: :func:`task_scores`)."""
    tune = TuneConfig(choice_file=str(choice_file))
    out = []
    for label, method in read_choices(choice_file).items():
        for row in method["rows"]:
            folder = candidate_folder(tune, choice_file.parent, label, row["values"])
            chosen = row["values"] == method["choice"]
            out.append(candidate_row(folder, label, row["values"], chosen))
            if task is not None:
                out[-1].append(task_scores(folder, task))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("choice_files", nargs="+", type=Path, help="lr_choice.json files")
    parser.add_argument("--methods", help="comma-separated run labels to show (default: all)")
    parser.add_argument("--task", help="add this task's validation score after each stage")
    args = parser.parse_args(argv)
    keep = set(args.methods.split(",")) if args.methods else None
    table = [r for path in args.choice_files for r in rows(path, args.task)
             if keep is None or r[0] in keep]  # fmt: skip
    table.sort(key=lambda r: r[0])  # stable: each method's candidates in grid order
    header = HEADER + ([f"{args.task} by stage"] if args.task else [])
    print(markdown_table(header, table, digits=1))


if __name__ == "__main__":
    main()
