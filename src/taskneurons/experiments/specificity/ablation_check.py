"""Does the attribution rank what ablation ranks? Relevance scores against the true ``|ΔL|``.

For each task, the relevance scores of ``detect.attribution`` (a first-order estimate of the
loss change when a neuron is zeroed) are computed on ``n_examples`` train examples, and on the
same examples the true loss change of zeroing each of a pool of neurons is measured
(:func:`~taskneurons.neurons.ablation_effects.ablation_effects`). The pool is ``per_layer``
random neurons of every layer (and module, seeded) and the estimate's ``top_k`` neurons over
the model. Reported per task:

* Spearman of estimate vs truth over the random neurons (all layers together) and per layer
  (that layer's random neurons);
* Spearman within the estimate's top-``k`` (does it order its own selection right?);
* ``missed``: the share of the true top-``k`` of the pool that the estimate's top-``k`` leaves
  out (as Kramár et al. 2024 bound attribution patching's false negatives). The random
  neurons stand for the rest of the model, so this is the share a full ablation of a model
  of this pool's make-up would find; a full ablation of every neuron is not run.

Example:
    >>> res = ablation_check_experiment(ctx, AblationCheckConfig(per_layer=8), "runs/x/check")  # doctest: +SKIP
    >>> print(res.markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from taskneurons._io import write_json_atomic
from taskneurons.analysis.rank_agreement import missed_share, spearman, top
from taskneurons.data.prompts import iter_batches
from taskneurons.data.tasks import Task, examples_hash
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.ablation_check_stage import AblationCheckConfig
from taskneurons.models.saving import tuned_on
from taskneurons.neurons.ablation_effects import ablation_effects
from taskneurons.neurons.attribution import relevance_scores, scoring_examples
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.space import Neuron, NeuronSpace
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.cache import SettingsCache
from taskneurons.store.run_folder import read_record
from taskneurons.store.settings import SettingsKey, model_identity
from taskneurons.store.stored_result import StoredResult

RECORD_FILE = "ablation_check_config.json"
EFFECTS_FILE = "effects.json"
#: each task's effects as soon as they are measured (what a rerun after an interrupt reuses)
TASK_CACHE, CACHE_FORMAT = "task_effects.json", "taskneurons.AblationEffects/1"
HEADER = [
    "task", "ablated", "Spearman (random)", "median layer Spearman", "min layer Spearman",
    "Spearman (top-k)", "missed of true top-k",
]  # fmt: skip


@dataclass
class AblationCheckResult(StoredResult):
    """The summary, the per-layer table and every ablated neuron.

    Attributes:
        rows: one row per task, columns :data:`HEADER`.
        layers: ``[layer, Spearman of task 1, ...]`` per layer.
        tasks: the task ids, in column order of :attr:`layers`.
        effects: ``effects[task]``: per ablated neuron ``{layer, module, unit, estimate,
            true, random, top}`` (``random``: drawn at random; ``top``: in the estimate's
            top-k), in nats.
        out_dir: where the files were written.
        meta: the record (config, attribution config, model, examples' hashes).
    """

    RECORD = RECORD_FILE
    rows: list[list[Any]]
    layers: list[list[Any]]
    tasks: list[str]
    effects: dict[str, list[dict]]
    out_dir: Path
    meta: dict = field(default_factory=dict, repr=False)

    def markdown(self) -> str:
        return markdown_table(HEADER, self.rows, digits=3)

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        out = self.target(folder)
        write_table(
            out / "ablation_check",
            HEADER,
            self.rows,
            meta=self.meta,
            digits=3,
            title="Relevance scores against the true |ΔL| of zeroing each neuron",
        )
        write_table(
            out / "ablation_layers",
            ["layer", *self.tasks],
            self.layers,
            digits=3,
            title="Spearman per layer (random neurons of the layer)",
        )
        write_json_atomic(out / EFFECTS_FILE, self.effects)
        return self.write_meta(out)  # fmt: skip

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> AblationCheckResult:
        table = read_record(path / "ablation_check.json")
        layers = read_record(path / "ablation_layers.json")
        effects = read_record(path / EFFECTS_FILE)
        tasks = list(layers["header"][1:])
        return cls(table["rows"], layers["rows"], tasks, effects, path, meta)


def _pool(scores, space: NeuronSpace, config: AblationCheckConfig) -> tuple[list[Neuron], set]:
    """The neurons to ablate (random per layer and module, then the estimate's top-k) and the
    random ones among them."""
    g = torch.Generator().manual_seed(config.seed)
    drawn: list[Neuron] = []
    for layer in range(space.n_layers):
        for m in space.modules:
            units = torch.randperm(space.units[m], generator=g)[: config.per_layer]
            drawn += [Neuron(layer, m, u) for u in sorted(units.tolist())]
    flat = scores.flat()
    best = torch.topk(flat, min(config.top_k, flat.numel())).indices.tolist()
    pool = list(dict.fromkeys([*drawn, *(space.coord(i) for i in best)]))
    return pool, set(drawn)


def _task_effects(ctx: RunContext, task: Task, space, acfg, config) -> tuple[list[dict], str]:
    """Estimate and truth of every pooled neuron of one task, and the examples' hash."""
    examples = scoring_examples(task, acfg, tuned_on(ctx.model))
    scores = relevance_scores(ctx.model, task, space, tokenizer=ctx.tokenizer, config=acfg,
                              examples=examples, progress=ctx.progress)  # fmt: skip
    pool, drawn = _pool(scores, space, config)
    batches = list(iter_batches(ctx.tokenizer, task, examples, acfg.scoring_prompt(),
                                batch_size=acfg.batch_size, group_by_length=True))  # fmt: skip
    true = ablation_effects(ctx.model, batches, space, pool, acfg.aggregate, config.chunk,
                            ctx.progress)  # fmt: skip
    est = [float(scores.scores[n.module][n.layer, n.unit]) for n in pool]
    tops = {pool[i] for i in top(est, min(config.top_k, len(pool)))}
    rows = [
        {"layer": n.layer, "module": n.module, "unit": n.unit, "estimate": e,
         "true": float(t), "random": n in drawn, "top": n in tops}
        for n, e, t in zip(pool, est, true.tolist(), strict=True)
    ]  # fmt: skip
    return rows, examples_hash(examples)


def _spearman_of(rows: list[dict]) -> float:
    return spearman([r["estimate"] for r in rows], [r["true"] for r in rows])


def _summary(task_id: str, rows: list[dict], n_layers: int, k: int) -> tuple[list, list]:
    """The task's summary row and its Spearman per layer."""
    drawn = [r for r in rows if r["random"]]
    per_layer = [_spearman_of([r for r in drawn if r["layer"] == i]) for i in range(n_layers)]
    finite = [x for x in per_layer if not math.isnan(x)]
    k = min(k, len(rows))
    missed = missed_share([r["estimate"] for r in rows], [r["true"] for r in rows], k)
    row = [
        task_id, len(rows), _spearman_of(drawn),
        statistics.median(finite) if finite else math.nan, min(finite) if finite else math.nan,
        _spearman_of([r for r in rows if r["top"]]), missed,
    ]  # fmt: skip
    return row, per_layer


def ablation_check_experiment(
    ctx: RunContext, config: AblationCheckConfig, out_dir: str | os.PathLike
) -> AblationCheckResult:
    """Check every task's relevance scores against ablation; write the tables and effects.

    Writes ``ablation_check.{md,csv,json}``, ``ablation_layers.{md,csv,json}``,
    ``effects.json`` and ``ablation_check_config.json``; each task's effects go into
    ``task_effects.json`` as soon as they are measured (keyed by the task's train data, the
    model and the settings), so a rerun after an interrupt measures only the tasks left.
    """
    if not ctx.tasks:
        raise ValueError("ablation check: no tasks")
    base: AttributionConfig = ctx.config.detect.attribution
    acfg = dataclasses.replace(base, n_examples=config.n_examples)
    space = NeuronSpace(ctx.model, acfg.definition)
    cache = SettingsCache(Path(out_dir) / TASK_CACHE, CACHE_FORMAT, "ablation cache", sealed=True)
    model_id = model_identity(model_fingerprint(ctx.model))
    effects, hashes, rows, by_layer = {}, {}, [], []
    for task in ctx.tasks:
        key = SettingsKey.of(task=task.id, train=examples_hash(task.train), model=model_id,
                             config=config.to_dict(), attribution=acfg.to_dict())  # fmt: skip
        entry = cache.get(key)  # a task finished by an interrupted run of the same settings
        if entry is None:
            found, digest = _task_effects(ctx, task, space, acfg, config)
            entry = cache.put(key, {"effects": found, "data_hash": digest})
        effects[task.id], hashes[task.id] = entry["effects"], entry["data_hash"]
        row, per_layer = _summary(task.id, effects[task.id], space.n_layers, config.top_k)
        rows.append(row)
        by_layer.append(per_layer)
    layers = [[i, *(col[i] for col in by_layer)] for i in range(space.n_layers)]
    result = AblationCheckResult(rows, layers, [t.id for t in ctx.tasks], effects, Path(out_dir))
    result.meta = provenance(config=config.to_dict(), attribution=acfg.to_dict(),
                             model=model_fingerprint(ctx.model), data_hash=hashes)  # fmt: skip
    result.save()
    return result


#: the ``ablation_check`` stage
run_ablation_check = ablation_check_experiment
