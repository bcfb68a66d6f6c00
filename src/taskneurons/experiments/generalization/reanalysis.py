"""``taskneurons analyze overlap|figure2|similarity|correlate``: generalization analyses of finished runs.

No model is loaded and nothing is scored or trained again:

* ``overlap RUN`` — Table 8 again from the scores a generalization stage of ``RUN`` used (any of
  ``overlap``, ``generalization``, ``controlled_overlap``, ``similarity``; their
  ``<stage>_config.json`` names the scores files, the groups and the detect settings), with
  another selection (``topk``, ``specific``, ``contrastive``; ``lape`` when the activation
  probabilities were saved) or other proportions.
* ``figure2 RUN`` — Figure 2's tables again from ``evaluation_examples.json`` of a
  generalization stage: the scores and each cell's change from zero-shot with other bootstrap
  settings.
* ``similarity RUN`` — Figure 3 again from ``similarity_records.json``, with the mean taken over
  other layers.
* ``correlate RUN`` — Table 4 again from the same records: other layers, ``raw`` scores or
  ``gain`` over zero-shot, other bootstrap settings.

Each writes its tables and plots, with a record of how they were made (``analysis_config.json``
and the ``meta`` of every JSON table), into ``--out`` (default ``RUN/analyze-<analysis>/``) and
returns an object with ``markdown()``.

Example:
    >>> res = analyze_run("overlap", {"run": "runs/generalization", "selection": "specific"})  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskneurons._io import write_json_atomic
from taskneurons.experiments.generalization.figure2 import (
    EXAMPLES_FILE,
    change_rows,
    figure_rows,
    write_figure,
)
from taskneurons.experiments.generalization.groups import TaskGroup, check_percents
from taskneurons.experiments.generalization.overlap import recompute_overlap
from taskneurons.experiments.generalization.overlap_stage import PAPER_PROPORTIONS
from taskneurons.experiments.generalization.similarity_report import (
    RECORDS_FILE,
    correlation_rows,
    layers_label,
    write_correlation,
    write_similarity,
)
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.neurons.selection.selection_config import own_keys
from taskneurons.provenance import provenance
from taskneurons.report.tables import markdown_table
from taskneurons.store.run_folder import FinishedRunError, RunFolder, read_record

__all__ = ["ANALYSES", "Analysis", "FinishedRunError", "analyze_run", "read_record"]

#: The stages whose records name scores files and groups, in the order they are looked for.
SCORED_STAGES: tuple[str, ...] = ("overlap", "generalization", "controlled_overlap", "similarity")


#: The record an analysis writes beside its tables.
ANALYSIS_RECORD = "analysis_config.json"


def scored_record(run: str | os.PathLike) -> tuple[Path, dict]:
    """The record of a generalization stage of ``run`` that names its scores files."""
    folder = RunFolder(run)
    if not folder.path.is_dir():
        raise FinishedRunError(f"no run folder at {folder.path}")
    for stage in SCORED_STAGES:
        path = folder.find(folder.record_name(stage))
        if path is not None:
            record = read_record(path)
            if isinstance(record.get("scores"), dict) and isinstance(record.get("groups"), list):
                return path, record
    names = ", ".join(RunFolder.record_name(s) for s in SCORED_STAGES)
    raise FinishedRunError(f"{folder.path}: no finished generalization stage (none of {names})")


def _recorded_detect(path: Path, record: dict) -> DetectConfig:
    """The record's detect settings (a selection section of an older record, which held every
    method's options, keeps only its method's)."""
    detect = dict(record["detect"])
    if isinstance(detect.get("selection"), dict):
        detect["selection"] = own_keys(detect["selection"])
    return DetectConfig.from_dict(detect, where=str(path))


@dataclass
class Analysis:
    """What an ``analyze`` subcommand made: its text and where its files are."""

    text: str
    out_dir: Path

    def markdown(self) -> str:
        return f"{self.text}\n\nwritten to {self.out_dir}"


def analyze_overlap(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    selection: str | None = None,
    proportions: Sequence[float] | None = None,
) -> Analysis:
    """Table 8 from the scores of a finished run (see the module docstring)."""
    path, record = scored_record(run)
    detect = _recorded_detect(path, record)
    if selection is not None:
        detect = detect.replace(selection=detect.selection.with_method(selection))
    stage_cfg = record.get("config") or {}
    proportions = list(proportions or stage_cfg.get("proportions") or PAPER_PROPORTIONS)
    check_percents(proportions, "proportions")
    result, sets = recompute_overlap(path, record, detect, proportions)
    result.out_dir = Path(out) if out is not None else Path(run) / "analyze-overlap"
    result.meta = provenance(
        analysis="overlap", run=str(run), record=str(path), detect=detect.to_dict(),
        groups=record["groups"], proportions=proportions, selection=sets.selection,
        n_general=len(sets.general), scores=record["scores"], model=record.get("model"),
    )  # fmt: skip
    result.title = f"Overlap rates (Table 8), selection {detect.selection.method}"
    result.save(record=ANALYSIS_RECORD)
    return Analysis(result.markdown(), result.out_dir)


def analyze_figure2(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Analysis:
    """Figure 2's tables and plots from a finished generalization stage (no retraining)."""
    run = Path(run)
    path = RunFolder(run).find(EXAMPLES_FILE) if run.is_dir() else None
    if path is None:
        raise FinishedRunError(
            f"{run}: no {EXAMPLES_FILE} (run an `experiment: generalization` first; runs "
            "before per-example scores were kept have none)"
        )
    data = read_record(path)
    records, meta = data.get("records"), data.get("meta") or {}
    config = meta.get("config") or {}
    if not isinstance(records, list) or not records or not config.get("groups"):
        raise FinishedRunError(f"{path}: holds no evaluation records or groups")
    groups = [TaskGroup.from_dict(g) for g in config["groups"]]
    modes, proportions = config["modes"], [float(p) for p in config["proportions"]]
    out_dir = Path(out) if out is not None else run / "analyze-figure2"
    info = provenance(analysis="figure2", run=str(run), records=str(path), n_boot=n_boot, seed=seed)
    info["run_meta"] = meta
    parts = []
    for g in groups:
        table = figure_rows(g, records, modes, proportions)
        change = change_rows(g, records, modes, proportions, n_boot, seed)
        write_figure(out_dir, g, table, change, modes, info)
        parts += [f"group {g.name}\n\n" + markdown_table(*table, digits=1)]
        if change[1]:
            parts += [
                f"group {g.name}, change from zero-shot\n\n" + markdown_table(*change, digits=3)
            ]
    write_json_atomic(out_dir / ANALYSIS_RECORD, info)
    return Analysis("\n\n".join(parts), out_dir)


def similarity_records(run: str | os.PathLike) -> tuple[Path, list[dict], dict]:
    """The records and meta of a finished similarity stage of ``run``."""
    run = Path(run)
    path = RunFolder(run).find(RECORDS_FILE) if run.is_dir() else None
    if path is None:
        raise FinishedRunError(f"{run}: no {RECORDS_FILE} (run an `experiment: similarity` first)")
    data = read_record(path)
    records = data.get("records")
    if not isinstance(records, list) or not records:
        raise FinishedRunError(f"{path}: holds no similarity records")
    return path, records, data.get("meta") or {}


def analyze_similarity(
    run: str | os.PathLike, out: str | os.PathLike | None = None, layers: list[int] | None = None
) -> Analysis:
    """Figure 3 from a finished similarity stage, averaged over ``layers`` (``None``: all)."""
    path, records, meta = similarity_records(run)
    out_dir = Path(out) if out is not None else Path(run) / "analyze-similarity"
    info = provenance(analysis="similarity", run=str(run), records=str(path), layers=layers)
    info["run_meta"] = meta
    tables = write_similarity(records, out_dir, info, layers)
    write_json_atomic(out_dir / ANALYSIS_RECORD, info)
    text = "\n\n".join(
        f"group {g}: similarity (mean over layers {layers_label(layers)})\n\n"
        + markdown_table(h[:3], [r[:3] for r in rows], digits=3)
        for g, (h, rows) in tables.items()
    )
    return Analysis(text, out_dir)


def analyze_correlate(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    layers: list[int] | None = None,
    score: str = "raw",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Analysis:
    """Table 4 from a finished similarity stage (see the module docstring)."""
    path, records, meta = similarity_records(run)
    out_dir = Path(out) if out is not None else Path(run) / "analyze-correlate"
    rows = correlation_rows(records, layers, score, n_boot, seed, confidence)
    info = provenance(
        analysis="correlate", run=str(run), records=str(path), layers=layers, score=score,
        n_boot=n_boot, seed=seed, confidence=confidence,
    )  # fmt: skip
    info["run_meta"] = meta
    write_correlation(rows, records, out_dir, info, layers, score)
    write_json_atomic(out_dir / ANALYSIS_RECORD, info)
    header = ["group", "variant", "n", "pearson r", "p", "CI", "spearman rho", "p", "CI"]
    short = [[r[0], r[1], r[4], r[5], r[6], r[7], r[8], r[9], r[10]] for r in rows]
    return Analysis(markdown_table(header, short, digits=3), out_dir)


#: analysis name -> (function, the option names it takes besides ``run``)
ANALYSES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "overlap": (analyze_overlap, ("out", "selection", "proportions")),
    "figure2": (analyze_figure2, ("out", "n_boot", "seed")),
    "similarity": (analyze_similarity, ("out", "layers")),
    "correlate": (analyze_correlate, ("out", "layers", "score", "n_boot", "seed", "confidence")),
}


def analyze_run(analysis: str, options: Mapping[str, Any]) -> Analysis:
    """Run ``analysis`` on ``options["run"]`` with the options it takes (``None``: default).

    Example:
        >>> analyze_run("correlate", {"run": "runs/sim", "layers": [10, 11]})  # doctest: +SKIP
    """
    fn, names = ANALYSES[analysis]
    kwargs = {k: options[k] for k in names if options.get(k) is not None}
    return fn(options["run"], **kwargs)
