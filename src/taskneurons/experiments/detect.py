"""Detection: score every task, keep its top-k % neurons, write sets, tables and plots."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.data.tasks import Task
from taskneurons.neurons.attribution import AttributionConfig, relevance_scores
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.selection import iou, top_k
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.plots import heatmap, layer_distribution
from taskneurons.report.tables import write_table


@dataclass
class DetectConfig:
    """Knobs of ``taskneurons detect``.

    Attributes:
        k: percentage of neurons kept per task, in (0, 100].
        scope: ``model`` (rank all neurons together) or ``layer`` (k % of each layer).
        attribution: how relevance is computed (definition, loss, aggregate, examples, seed).
    """

    k: float = 10.0
    scope: str = "model"
    attribution: AttributionConfig = field(default_factory=AttributionConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def detect_neurons(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    config: DetectConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict[str, NeuronSet]:
    """Score every task, keep its top-k % neurons, and write scores, sets, tables and plots.

    Writes ``out_dir/<task>/scores.safetensors``, ``out_dir/<task>/neurons.safetensors`` (+
    ``.json``), ``layer_counts.{md,csv,json}``, ``iou.{md,csv,json}``, ``layer_counts.png``,
    ``iou.png`` and ``detect_config.json``.

    Returns:
        task id -> its :class:`NeuronSet`.
    """
    out = Path(out_dir)
    space = NeuronSpace(model, config.attribution.definition)
    fingerprint = model_fingerprint(model)
    sets: dict[str, NeuronSet] = {}
    for task in tasks:
        scores = relevance_scores(
            model, task, space, tokenizer=tokenizer, config=config.attribution, progress=progress
        )
        scores.meta["model_fingerprint"] = fingerprint
        scores.save(out / task.id / "scores.safetensors")
        meta = {
            "task": task.id,
            "task_source": task.source,
            "model_fingerprint": fingerprint,
            "data_hash": scores.meta.get("data_hash"),
            "n_examples": scores.meta.get("n_examples"),
            "seed": config.attribution.seed,
        }
        ns = top_k(scores, config.k, scope=config.scope, meta=meta)
        ns.save(out / task.id / "neurons.safetensors")
        sets[task.id] = ns
    write_detection_summary(sets, space, out)
    write_json_atomic(
        out / "detect_config.json",
        provenance(config=config.to_dict(), tasks=[t.id for t in tasks], model=fingerprint),
    )
    return sets


def write_detection_summary(sets: dict[str, NeuronSet], space: NeuronSpace, out: Path) -> dict:
    """Per-layer counts and pairwise IoU of the task sets: tables and PNG plots."""
    names = list(sets)
    per_layer = {
        name: sum(c for c in ns.counts_per_layer().values()).tolist() for name, ns in sets.items()
    }
    rows = [[layer] + [per_layer[n][layer] for n in names] for layer in range(space.n_layers)]
    rows.append(["total"] + [len(sets[n]) for n in names])
    write_table(out / "layer_counts", ["layer", *names], rows, title="Task neurons per layer")
    layer_distribution(per_layer, out / "layer_counts.png")
    matrix = [[iou(sets[a], sets[b]) for b in names] for a in names]
    write_table(
        out / "iou",
        ["task", *names],
        [[a] + [round(v, 4) for v in matrix[i]] for i, a in enumerate(names)],
        digits=3,
        title="Pairwise IoU of task neurons",
    )
    heatmap(
        matrix, names, names, out / "iou.png", title="IoU of task-specific neurons", fmt="{:.2f}"
    )
    return {"per_layer": per_layer, "iou": matrix}
