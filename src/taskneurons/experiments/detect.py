"""Detection: score every task, keep its top-k % neurons, write sets, tables and plots.

Example:
    >>> res = detect_neurons(model, tok, tasks, DetectConfig(k=10), "runs/detect")  # doctest: +SKIP
    >>> print(res.markdown())  # neuron counts, per-layer table, pairwise IoU  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.config import Config
from taskneurons.data.tasks import Task
from taskneurons.experiments.common import DETECT_CONFIG, check_detect_out
from taskneurons.neurons.attribution import AttributionConfig, relevance_scores
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.selection import check_k, iou, top_k
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.plots import heatmap, layer_distribution
from taskneurons.report.tables import markdown_table, write_table


@dataclass
class DetectConfig(Config):
    """Knobs of detection.

    Attributes:
        k: percentage of neurons kept per task, in (0, 100].
        scope: ``model`` (rank all neurons together) or ``layer`` (k % of each layer).
        attribution: how relevance is computed (definition, loss, aggregate, examples, seed).
    """

    k: float = 10.0
    scope: str = "model"
    attribution: AttributionConfig = field(default_factory=AttributionConfig)

    def validate(self) -> None:
        check_k(self.k)
        if self.scope not in ("model", "layer"):
            raise ValueError(f"scope must be 'model' or 'layer', got {self.scope!r}")


@dataclass
class DetectionResult:
    """What :func:`detect_neurons` found.

    Attributes:
        sets: task id -> its :class:`NeuronSet`.
        per_layer: task id -> selected neurons per layer (``[layers]`` counts).
        iou: pairwise IoU of the sets, ``[tasks][tasks]``, in task order.
        out_dir: where the files are.
    """

    sets: dict[str, NeuronSet]
    per_layer: dict[str, list[int]]
    iou: list[list[float]]
    out_dir: Path

    @property
    def names(self) -> list[str]:
        return list(self.sets)

    def layer_rows(self) -> list[list]:
        n_layers = len(next(iter(self.per_layer.values())))
        rows = [
            [layer] + [self.per_layer[n][layer] for n in self.names] for layer in range(n_layers)
        ]
        return rows + [["total"] + [len(self.sets[n]) for n in self.names]]

    def iou_rows(self) -> list[list]:
        return [[a] + [round(v, 4) for v in self.iou[i]] for i, a in enumerate(self.names)]

    def markdown(self) -> str:
        """Counts per task, the per-layer table and the pairwise IoU table."""
        counts = "\n".join(
            f"{n}: {len(s):,} neurons ({s.fraction() * 100:.1f} %)" for n, s in self.sets.items()
        )
        layers = markdown_table(["layer", *self.names], self.layer_rows())
        iou_table = markdown_table(["task", *self.names], self.iou_rows(), digits=3)
        return (
            f"{counts}\n\nTask neurons per layer\n\n{layers}\n\n"
            f"Pairwise IoU of task neurons\n\n{iou_table}"
        )


def detect_neurons(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    config: DetectConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> DetectionResult:
    """Score every task, keep its top-k % neurons, and write scores, sets, tables and plots.

    Writes ``out_dir/<task>/scores.safetensors``, ``out_dir/<task>/neurons.safetensors`` (+
    ``.json``), ``layer_counts.{md,csv,json}``, ``iou.{md,csv,json}``, ``layer_counts.png``,
    ``iou.png`` and ``detect_config.json`` (the settings, task list and model fingerprint).

    Raises:
        ValueError: ``out_dir`` already holds neuron sets of a detection with other settings,
            another model or another task list (its ``detect_config.json`` says so), which
            would be mixed with the new ones; the message names the folder and the keys.
    """
    out = Path(out_dir)
    space = NeuronSpace(model, config.attribution.definition)
    fingerprint = model_fingerprint(model)
    ids = [t.id for t in tasks]
    check_detect_out(out, config.to_dict(), ids, fingerprint)
    # recorded first, so the sets of a run that stops half-way are known too
    write_json_atomic(
        out / DETECT_CONFIG, provenance(config=config.to_dict(), tasks=ids, model=fingerprint)
    )
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
        sets[task.id] = top_k(scores, config.k, scope=config.scope, meta=meta)
        sets[task.id].save(out / task.id / "neurons.safetensors")
    result = summarize_detection(sets, out)
    write_detection_summary(result)
    return result


def summarize_detection(sets: dict[str, NeuronSet], out_dir: str | os.PathLike) -> DetectionResult:
    """Per-layer counts and pairwise IoU of the task sets."""
    names = list(sets)
    per_layer = {
        name: sum(c for c in ns.counts_per_layer().values()).tolist() for name, ns in sets.items()
    }
    matrix = [[iou(sets[a], sets[b]) for b in names] for a in names]
    return DetectionResult(sets, per_layer, matrix, Path(out_dir))


def write_detection_summary(result: DetectionResult) -> None:
    """``layer_counts.{md,csv,json,png}`` and ``iou.{md,csv,json,png}`` in ``result.out_dir``."""
    out, names = result.out_dir, result.names
    write_table(
        out / "layer_counts", ["layer", *names], result.layer_rows(), title="Task neurons per layer"
    )
    layer_distribution(result.per_layer, out / "layer_counts.png")
    write_table(
        out / "iou",
        ["task", *names],
        result.iou_rows(),
        digits=3,
        title="Pairwise IoU of task neurons",
    )
    heatmap(
        result.iou,
        names,
        names,
        out / "iou.png",
        title="IoU of task-specific neurons",
        fmt="{:.2f}",
    )
