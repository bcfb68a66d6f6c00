"""Where specificity lives: deactivation over k x selection, from scores computed once.

Each task is scored once (relevance, and activation probabilities when ``lape`` is swept);
every (selection, k) cell derives its sets from those scores and runs the deactivation
experiment (Table 1 rows, the task x task matrix, the controls and the specificity
statistics). The summary has one row per cell: set sizes, overlap, how many tasks lose more to
their own neurons than to random ones, and the mean double-centred diagonal of the damage
matrix with its bootstrap interval and permutation p-value, by accuracy and by gold NLL.

Example:
    >>> res = selection_sweep(model, tok, tasks, DetectConfig(), DeactivateConfig(),
    ...                       SweepConfig(k=[1, 10]), "runs/sweep")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.config import Config
from taskneurons.data.tasks import Task
from taskneurons.experiments.deactivation import (
    DeactivateConfig,
    DeactivationResult,
    deactivation_experiment,
)
from taskneurons.experiments.detect import DetectConfig, lape_probabilities, select_sets
from taskneurons.neurons.attribution import relevance_scores
from taskneurons.neurons.multitask_selection import METHODS as SELECTION_METHODS
from taskneurons.neurons.selection import check_k, iou
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.plots import line_plot
from taskneurons.report.tables import markdown_table, write_table


@dataclass
class SweepConfig(Config):
    """The grid of a selection sweep (fixed in the experiment file before anything runs).

    Attributes:
        k: percentages of neurons per task.
        selections: selection methods (``topk``, ``specific``, ``contrastive``, ``lape``);
            their options come from the ``detect.selection`` section.
    """

    k: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
    selections: list[str] = field(default_factory=lambda: list(SELECTION_METHODS))

    def validate(self) -> None:
        for k in self.k:
            check_k(k)
        unknown = [s for s in self.selections if s not in SELECTION_METHODS]
        if unknown or not self.selections or not self.k:
            raise ValueError(
                f"selections must be a non-empty list of {SELECTION_METHODS} (got "
                f"{self.selections}) and k a non-empty list"
            )


HEADER = [
    "selection", "k %", "neurons/task", "mean IoU", "own > random",
    "diag (acc)", "95% CI (acc)", "p (acc)", "rows/cols (acc)",
    "diag (NLL)", "95% CI (NLL)", "p (NLL)", "rows/cols (NLL)",
]  # fmt: skip


@dataclass
class SweepResult:
    """One deactivation result per (selection, k), and the summary rows."""

    cells: dict[tuple[str, float], DeactivationResult]
    rows: list[list]
    out_dir: Path

    def markdown(self) -> str:
        return markdown_table(HEADER, self.rows, digits=2)


def score_tasks(model, tokenizer, tasks, detect: DetectConfig, space, folder, progress=True):
    """Each task's relevance scores, once; saved as ``<folder>/<task>/scores.safetensors``."""
    fingerprint = model_fingerprint(model)
    scores = {}
    for task in tasks:
        scores[task.id] = relevance_scores(
            model, task, space, tokenizer=tokenizer, config=detect.attribution, progress=progress
        )
        scores[task.id].meta["model_fingerprint"] = fingerprint
        scores[task.id].save(Path(folder) / task.id / "scores.safetensors")
    return scores


def selection_sweep(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    detect: DetectConfig,
    deactivate: DeactivateConfig,
    config: SweepConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> SweepResult:
    """Deactivation for every (selection, k) of ``config``, from scores computed once.

    Writes ``scores/<task>/`` (scores, activation probabilities), ``<selection>-k<k>/`` (each
    cell's deactivation files), ``sweep.{md,csv,json}``, ``specificity_vs_k.png`` and
    ``specificity_vs_k_nll.png`` (mean double-centred diagonal vs k, one line per
    selection, 95 % bands) and ``sweep_config.json``.
    """
    out = Path(out_dir)
    space = NeuronSpace(model, detect.attribution.definition)
    fingerprint = model_fingerprint(model)
    scores = score_tasks(model, tokenizer, tasks, detect, space, out / "scores", progress)
    probs = None
    if "lape" in config.selections:
        probs = lape_probabilities(model, tokenizer, tasks, detect, space, out / "scores")
    cells = {}
    original = None  # the unmodified model's evaluations: the same in every cell
    for method in config.selections:
        for k in config.k:
            cfg = dataclasses.replace(
                detect, k=k, selection=dataclasses.replace(detect.selection, method=method)
            )
            sets, general = select_sets(model, tokenizer, tasks, scores, cfg, space, out, probs)
            folder = out / f"{method}-k{k:g}"
            cells[(method, k)] = deactivation_experiment(
                model, tokenizer, tasks, sets, deactivate, folder, progress, general, original
            )
            original = cells[(method, k)].original
    result = SweepResult(cells, [_row(m, k, cells[(m, k)]) for m, k in cells], out)
    _write(result, config, detect, deactivate, fingerprint, tasks)
    return result


def _row(method: str, k: float, cell: DeactivationResult) -> list:
    sets = cell.sets
    names = list(sets)
    sizes = [len(sets[n]) for n in names]
    pairs = [iou(sets[a], sets[b]) for i, a in enumerate(names) for b in names[i + 1 :]]
    rand, own = cell.table.row("Deactivate-Random"), cell.table.row("Deactivate-Task")
    hurt = sum(own[n] < rand[n] for n in names)
    row = [
        method,
        k,
        sum(sizes) / len(sizes),
        sum(pairs) / len(pairs) if pairs else float("nan"),
        f"{hurt}/{len(names)}",
    ]
    for readout in ("score", "nll"):
        spec = cell.specificity.get(readout)
        if spec is None:
            row += [float("nan"), "-", float("nan"), "-"]
            continue
        ci = "-" if spec.ci is None else f"{spec.ci[0]:.2f}..{spec.ci[1]:.2f}"
        dom = f"{len(spec.rows)}/{len(spec.columns)} of {len(names)}"
        row += [spec.statistic, ci, spec.p_value, dom]
    return row


def _write(result: SweepResult, config, detect, deactivate, fingerprint, tasks) -> None:
    out = result.out_dir
    meta = provenance(
        sweep=config.to_dict(),
        detect=detect.to_dict(),
        deactivate=deactivate.to_dict(),
        model=fingerprint,
        tasks=[t.id for t in tasks],
    )
    write_table(out / "sweep", HEADER, result.rows, meta=meta, digits=2, title="Selection sweep")
    for readout, suffix, label in (
        ("score", "", "accuracy points"),
        ("nll", "_nll", "gold NLL, nats"),
    ):
        series, bands = {}, {}
        for method in config.selections:
            specs = [result.cells[(method, k)].specificity.get(readout) for k in config.k]
            if any(s is None for s in specs):
                continue
            series[method] = [s.statistic for s in specs]
            bands[method] = [s.ci or (math.nan, math.nan) for s in specs]
        if series:
            line_plot(
                config.k, series, out / f"specificity_vs_k{suffix}.png",
                title=f"Specificity of the damage matrix ({label})",
                xlabel="k (% of neurons per task)", ylabel="mean double-centred diagonal",
                intervals=bands, log_x=True,
            )  # fmt: skip
    write_json_atomic(out / "sweep_config.json", meta)
