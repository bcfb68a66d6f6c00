"""An experiment repeated over seeds: ``seeds: [0, 1, 2]`` at the top of an experiment file.

Each seed runs the whole file with ``seed: <s>`` (the default of every seed of the stages: the
fine-tuning data order, the scoring subset, the random control sets, the test subsets; a
section that sets its own seed keeps it) into ``<out>/seed-<s>/``, a run folder of its own
(resumable, and the same as a run of the file with ``seed: <s>`` and that ``out``). Then
``<out>/seeds.{md,csv,json}`` reads every specificity statistic of the runs (deactivation
matrices: ``deactivate``, ``multitask``, each ``sweep`` cell) across the seeds:

* the per-seed statistics, their mean and an interval over seeds *and* test examples
  (:func:`~taskneurons.analysis.seed_intervals.combine_seeds`: the between-seed variance of the
  mean, plus the test examples' variance once when the seeds share their test examples);
* one joint permutation test over the seeds' matrices (one relabelling of the tasks for every
  seed, :func:`~taskneurons.analysis.grid_test.joint_permutation_test`), with its floor
  ``1/T!``: the seeds repeat one design on the same tasks, so they are one test, not several.

Example:
    >>> run = run_seeds("exp.yaml", {"experiment": "deactivate", "seeds": [0, 1, 2]})  # doctest: +SKIP
    >>> run.rows[0][:3]  # doctest: +SKIP
    ['deactivate', '', 'score']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskneurons.analysis.grid_test import joint_permutation_test
from taskneurons.analysis.seed_intervals import combine_seeds
from taskneurons.config import ConfigError
from taskneurons.provenance import provenance
from taskneurons.report.tables import markdown_table, write_table

#: The top-level key that repeats a file over seeds.
SEEDS_KEY = "seeds"
HEADER = [
    "stage", "cell", "readout", "seeds", "per seed", "mean", "95% CI (seeds x examples)",
    "sd over seeds", "same test examples", "joint p", "floor",
]  # fmt: skip
READOUTS = {"score": "acc", "nll": "NLL"}


def seed_settings(data: Mapping[str, Any], where: str) -> list[tuple[int, dict]]:
    """``(seed, settings)`` of each run: ``data`` without ``seeds``, with ``seed`` and ``out``
    (``<out>/seed-<s>``) set.

    Raises:
        ConfigError: ``seeds`` is not a list of at least 2 distinct integers, or the file also
            sets ``seed`` (naming ``where``).
    """
    seeds = data[SEEDS_KEY]
    ok = isinstance(seeds, list) and all(type(s) is int for s in seeds)
    if not ok or len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(
            f"{where}: {SEEDS_KEY}: expected a list of at least 2 distinct integers, got {seeds!r}"
        )
    if "seed" in data:
        raise ConfigError(f"{where}: give either seed or {SEEDS_KEY} (each run's seed), not both")
    rest = {k: v for k, v in data.items() if k != SEEDS_KEY}
    out = Path(str(rest.get("out", "runs/experiment")))
    return [(s, {**rest, "seed": s, "out": str(out / f"seed-{s}")}) for s in seeds]


def file_configs(data: Mapping[str, Any], where: str) -> list[Any]:
    """The :class:`~taskneurons.experiments.experiment_file.ExperimentFile` of each run the
    settings ``data`` ask for: one per seed of ``seeds``, else one (checked, nothing run).

    Example:
        >>> [c.seed for c in file_configs({"experiment": "detect", "tasks": ["sentiment"], "seeds": [0, 1]}, "x")]
        [0, 1]
    """
    from taskneurons.experiments.experiment_file import ExperimentFile, with_defaults

    runs = seed_settings(data, where) if SEEDS_KEY in data else [(None, dict(data))]
    return [ExperimentFile.from_dict(with_defaults(one), where=where) for _, one in runs]


def specificities(result: Any, prefix: str = "") -> dict[str, dict]:
    """``cell -> {readout: Specificity}`` of a stage's result: its own matrices, those of its
    ``deactivation`` (multitask) and of its ``cells`` (sweep: ``<selection>-k<k>``)."""
    found: dict[str, dict] = {}
    if getattr(result, "specificity", None):
        found[prefix] = dict(result.specificity)
    if getattr(result, "deactivation", None) is not None:
        found.update(specificities(result.deactivation, prefix))
    if getattr(result, "sweep", None) is not None:  # multitask: its sweep's cells
        found.update(specificities(result.sweep, f"{prefix}{'/' if prefix else ''}sweep"))
    for key, cell in (getattr(result, "cells", None) or {}).items():
        name = f"{key[0]}-k{key[1]:g}" if isinstance(key, tuple) else str(key)
        found.update(specificities(cell, f"{prefix}{'/' if prefix else ''}{name}"))
    return found


def _test_hashes(result: Any) -> Any:
    """The test examples' hashes a deactivation result records (``None``: none)."""
    for part in (result, getattr(result, "deactivation", None)):
        meta = getattr(part, "meta", None) or {}
        if "data_hash" in meta:
            return meta["data_hash"]
    return None


def _row(stage: str, cell: str, readout: str, seeds: list[int], specs: list, shared: bool):
    combined = combine_seeds([s.statistic for s in specs], [s.ci for s in specs], shared)
    joint = joint_permutation_test([s.effects for s in specs])
    per_seed = " / ".join(f"{s.statistic:.3g}" for s in specs)
    ci = f"{combined.lo:.3g}..{combined.hi:.3g}"
    return [stage, cell, READOUTS.get(readout, readout), len(seeds), per_seed, combined.mean, ci,
            combined.between_sd, "yes" if shared else "no", joint.p_value, joint.floor]  # fmt: skip


def seed_rows(runs: Mapping[int, Any]) -> list[list]:
    """Rows of :data:`HEADER`, one per stage, cell and readout that every seed's run holds."""
    seeds = list(runs)
    first = runs[seeds[0]].results
    rows = []
    for stage in first:
        per_seed = [specificities(runs[s].results.get(stage)) for s in seeds]
        hashes = [_test_hashes(runs[s].results.get(stage)) for s in seeds]
        shared = hashes[0] is not None and all(h == hashes[0] for h in hashes)
        for cell, readouts in per_seed[0].items():
            for readout in readouts:
                specs = [found.get(cell, {}).get(readout) for found in per_seed]
                if all(spec is not None for spec in specs):
                    rows.append(_row(stage, cell, readout, seeds, specs, shared))
    return rows


@dataclass
class SeedsRun:
    """Runs of one experiment file over seeds, and their combined statistics.

    Attributes:
        runs: seed -> that seed's :class:`~taskneurons.experiments.run_context.RunResult`.
        rows: the combined statistics (:data:`HEADER`).
        out_dir: the folder holding ``seed-<s>/`` and ``seeds.*``.
        seconds: wall time of all runs.
    """

    runs: dict[int, Any]
    rows: list[list]
    out_dir: Path
    seconds: float = 0.0
    meta: dict = field(default_factory=dict, repr=False)

    def markdown(self) -> str:
        return markdown_table(HEADER, self.rows, digits=3)


def run_seeds(
    where: str,
    data: Mapping[str, Any],
    run_one: Callable[[dict], Any],
    echo: Callable[[str], None] | None = print,
) -> SeedsRun:
    """Run ``data`` once per seed of its ``seeds`` (``run_one(settings)`` runs one file's
    settings) and write ``seeds.{md,csv,json}`` beside the seed folders.

    Raises:
        ConfigError: a bad ``seeds`` (see :func:`seed_settings`), before anything runs.
    """
    start = time.perf_counter()
    settings = seed_settings(data, where)
    runs = {}
    for n, (seed, one) in enumerate(settings, start=1):
        if echo:
            echo(f"=== seed {seed} ({n}/{len(settings)}) -> {one['out']}")
        runs[seed] = run_one(one)
    out = Path(settings[0][1]["out"]).parent
    rows = seed_rows(runs)
    meta = provenance(source=where, seeds=list(runs), runs=[str(r.out_dir) for r in runs.values()])
    write_table(out / "seeds", HEADER, rows, meta=meta, digits=4,
                title="Specificity over seeds (mean, interval over seeds and test examples, "
                "one joint test over the seeds)")  # fmt: skip
    result = SeedsRun(runs, rows, out, time.perf_counter() - start, meta)
    if echo:
        echo(result.markdown())
    return result
