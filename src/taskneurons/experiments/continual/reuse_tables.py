"""Which earlier neurons later tasks train again, beside what each task forgot: ``neuron_reuse.*``.

For every finished run of a neuron-training method (NCFT, W-NCFT: a method that trains each
task's neuron set) in the run folders given (with seeds: ``seed<s>/<method>/``; else
``<method>/``), the task sets are read from the run's ``neurons/``
(:mod:`~taskneurons.experiments.continual.task_neurons`), or for a run written before runs kept
them there, from its last stage checkpoint, and
:func:`~taskneurons.analysis.neuron_reuse.reuse_counts` gives, per task but the last, the share
of its neurons a later task's set holds too, the share random sets matched in size and layer
would give, and what the task forgot (``a(i, i) − a(i, N)``, points). ``neuron_reuse_layers``
pools the tasks per layer: where in the model the reuse sits. The checkpoints stay on the
machine that ran (``results/**/checkpoint/`` is not tracked); ``neurons/`` travels with the
result files.

Example:
    >>> rows, layers = reuse_rows(["results/continual-fair-order1-smollm2-cpu"])  # doctest: +SKIP
    >>> rows[0][:4]  # doctest: +SKIP
    ['continual-fair-order1-smollm2-cpu', '0', 'ncft', 'dbpedia']
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from taskneurons.analysis.neuron_reuse import reuse_counts
from taskneurons.continual.base import ContinualMethod
from taskneurons.continual.registry import METHODS
from taskneurons.continual.stage_checkpoint import checkpoint_sidecar, read_checkpoint
from taskneurons.continual.strategies.ncft import holds_neuron_sets, neuron_sets_in
from taskneurons.experiments.continual.continual_result import RESULT_FILE, ContinualResult
from taskneurons.experiments.continual.table5 import ContinualRunError
from taskneurons.experiments.continual.task_neurons import (
    NEURONS_DIR,
    has_task_neurons,
    load_task_neurons,
)
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.report.tables import markdown_table, write_table

HEADER = ["run", "seed", "method", "task", "neurons", "reused later", "reused %", "chance %",
          "reused / chance", "forgotten (points)"]  # fmt: skip
LAYER_HEADER = ["method", "module", "layer", "neurons", "reused %", "chance %"]


def _method_folders(run: Path) -> list[tuple[str, Path]]:
    """``(seed, folder)`` of every finished method run under ``run`` (seed ``""``: no seeds)."""
    seeds = sorted(p for p in run.glob("seed*") if p.is_dir())
    roots = [(p.name.removeprefix("seed"), p) for p in seeds] or [("", run)]
    return [
        (seed, m)
        for seed, root in roots
        for m in sorted(p for p in root.iterdir() if p.is_dir())
        if (m / RESULT_FILE).is_file()
    ]


def trains_neuron_sets(method: str) -> bool:
    """Whether the registered ``method`` trains a neuron set per task (overrides
    :meth:`~taskneurons.continual.base.ContinualMethod.task_neuron_sets`)."""
    cls = METHODS.get(method)
    return cls is not None and cls.task_neuron_sets is not ContinualMethod.task_neuron_sets


def _task_sets(folder: Path, result: ContinualResult) -> list[NeuronSet] | None:
    """The run's task sets in training order: from ``neurons/``, else from its last checkpoint;
    ``None``: a method without neuron sets (told from ``checkpoint.json``, tensors unread)."""
    if has_task_neurons(folder):
        return list(load_task_neurons(folder, result.order).values())
    sidecar = checkpoint_sidecar(folder / "checkpoint")
    if sidecar is None or not holds_neuron_sets(sidecar["state"]):
        return None
    ckpt = read_checkpoint(folder / "checkpoint")
    assert ckpt is not None
    if list(ckpt.state["trained"]) != list(result.order):
        raise ContinualRunError(f"{folder}: checkpoint of another task order than its result")
    return list(neuron_sets_in(ckpt.state).values())


def _run_counts(folder: Path) -> tuple[ContinualResult, dict[str, tuple]] | None:
    """The finished run in ``folder`` and its ``module -> reuse_counts``; ``None``: a method
    without neuron sets, or (with a warning) a neuron-training run whose sets were not kept."""
    result = ContinualResult.load(folder)
    if not trains_neuron_sets(result.method):
        return None
    if not has_task_neurons(folder) and not (folder / "checkpoint").is_dir():
        warnings.warn(
            f"{folder}: left out: its task sets are neither in {NEURONS_DIR}/ nor in a "
            "checkpoint (a run made before runs kept them, on another machine)",
            stacklevel=2,
        )
        return None
    sets = _task_sets(folder, result)
    if sets is None:
        return None
    modules = sets[0].masks  # one definition for every task
    return result, {m: reuse_counts([s.masks[m] for s in sets]) for m in modules}


def _task_rows(run: str, seed: str, result: ContinualResult, counts: dict) -> list[list]:
    """One row per task but the last: its neurons, reuse, chance and forgetting."""
    own, reused, chance = (sum(c[k].sum(axis=1) for c in counts.values()) for k in range(3))
    last = result.matrix.shape[1] - 1
    rows = []
    for i, task in enumerate(result.order[:-1]):
        share = 100 * reused[i] / own[i] if own[i] else float("nan")
        base = 100 * chance[i] / own[i] if own[i] else float("nan")
        ratio = reused[i] / chance[i] if chance[i] else float("nan")
        forgot = float(result.matrix[i, i] - result.matrix[i, last])
        rows.append([run, seed, result.label, task, int(own[i]), int(reused[i]), share, base,
                     ratio, forgot])  # fmt: skip
    return rows


def reuse_rows(folders: Sequence[str | os.PathLike]) -> tuple[list[list], list[list]]:
    """The per-task rows (:data:`HEADER`) and per-layer rows (:data:`LAYER_HEADER`, tasks and
    runs pooled per method) of every finished neuron-training run in ``folders``.

    Raises:
        ContinualRunError: a folder holds no finished run of a neuron-training method.
    """
    rows: list[list] = []
    pooled: dict[tuple[str, str], np.ndarray] = {}  # (method, module) -> [3, layers]
    for folder in map(Path, folders):
        found = [(s, _run_counts(f)) for s, f in _method_folders(folder)]
        found = [(s, rc) for s, rc in found if rc is not None]
        if not found:
            raise ContinualRunError(
                f"{folder}: no finished run of a neuron-training method (ncft, wncft) with its "
                "task sets (in neurons/ or its checkpoint); neuron reuse reads them from there"
            )
        for seed, (result, counts) in found:
            rows += _task_rows(folder.name, seed, result, counts)
            for module, c in counts.items():
                add = np.stack([c[k][:-1].sum(axis=0) for k in range(3)])  # [3, layers]
                key = (result.label, module)
                pooled[key] = pooled.get(key, 0) + add
    return rows, _layer_rows(pooled)


def _layer_rows(pooled: dict[tuple[str, str], np.ndarray]) -> list[list]:
    """Per (method, module, layer): the earlier tasks' neurons and their reuse (%) vs chance."""
    out = []
    for (method, module), (own, reused, chance) in pooled.items():
        for layer in range(own.shape[0]):
            n = own[layer]
            pct = (100 * reused[layer] / n, 100 * chance[layer] / n) if n else (np.nan, np.nan)
            out.append([method, module, layer, int(n), *map(float, pct)])
    return out


def write_reuse(rows: list[list], layers: list[list], out: str | os.PathLike, runs) -> None:
    """``neuron_reuse.{md,csv,json}`` and ``neuron_reuse_layers.*`` in ``out``."""
    meta = {"runs": [str(r) for r in runs]}
    title = "Neurons of each task that later tasks train again, against chance and forgetting"
    write_table(Path(out) / "neuron_reuse", HEADER, rows, meta=meta, title=title)
    title = "Neuron reuse per layer (tasks but the last, pooled over runs and seeds)"
    write_table(Path(out) / "neuron_reuse_layers", LAYER_HEADER, layers, meta=meta, title=title)


def reuse_markdown(rows: list[list]) -> str:
    """The per-task table as Markdown."""
    return markdown_table(HEADER, rows)
