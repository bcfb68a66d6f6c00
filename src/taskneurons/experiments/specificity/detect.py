"""Detection: score every task, keep its top-k % neurons, write sets, tables and plots.

Example:
    >>> res = detect_neurons(model, tok, tasks, DetectConfig(k=10), "runs/detect")  # doctest: +SKIP
    >>> print(res.markdown())  # neuron counts, per-layer table, pairwise IoU  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.data.tasks import Task
from taskneurons.experiments.common import DETECT_CONFIG, GENERAL_FILE, check_detect_out
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scoring import ScoredTasks, score_tasks
from taskneurons.neurons.selection.ranking import iou
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.plots import heatmap, layer_distribution
from taskneurons.report.tables import markdown_table, write_table


@dataclass
class DetectionResult:
    """What :func:`detect_neurons` found.

    Attributes:
        sets: task id -> its :class:`NeuronSet`.
        per_layer: task id -> selected neurons per layer (``[layers]`` counts).
        iou: pairwise IoU of the sets, ``[tasks][tasks]``, in task order.
        out_dir: where the files are.
        general: the general set of a ``specific`` selection (else ``None``).
    """

    sets: dict[str, NeuronSet]
    per_layer: dict[str, list[int]]
    iou: list[list[float]]
    out_dir: Path
    general: NeuronSet | None = None

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
        if self.general is not None:
            counts += f"\ngeneral (in the top-k of most tasks): {len(self.general):,} neurons"
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
    NeuronSpace(model, config.attribution.definition)  # the definition fits: before any file
    fingerprint = model_fingerprint(model)
    ids = [t.id for t in tasks]
    check_detect_out(out, config.to_dict(), ids, fingerprint)
    # recorded first, so the sets of a run that stops half-way are known too
    write_json_atomic(
        out / DETECT_CONFIG, provenance(config=config.to_dict(), tasks=ids, model=fingerprint)
    )
    scored = score_tasks(
        model, tokenizer, tasks, config.attribution, config.selection, out, progress
    )
    sets, general = select_sets(scored, config)
    save_sets(out, sets, general)
    result = summarize_detection(sets, out, general)
    write_detection_summary(result)
    return result


def save_sets(
    out: str | os.PathLike,
    sets: dict[str, NeuronSet],
    general: NeuronSet | None = None,
    record: dict | None = None,
) -> None:
    """Write ``out/<task>/neurons.safetensors`` (+ ``.json``) and the general set, if any.

    ``record``: also write it as ``out/detect_config.json`` first (``config``, ``tasks`` and
    ``model`` of a detection), which makes ``out`` a folder ``neurons:`` can point at.
    """
    out = Path(out)
    if record is not None:
        write_json_atomic(out / DETECT_CONFIG, record)
    for name, ns in sets.items():
        ns.save(out / name / "neurons.safetensors")
    if general is not None:
        general.save(out / GENERAL_FILE)


def select_sets(
    scored: ScoredTasks, config: DetectConfig
) -> tuple[dict[str, NeuronSet], NeuronSet | None]:
    """Each task's NeuronSet (and the general set, if the method has one) under
    ``config.selection`` at ``config.k``, from every task's scores (or activation
    probabilities, for a selection that ranks them), computed once.

    Example:
        >>> sets, general = select_sets(scored, DetectConfig(k=10))  # doctest: +SKIP
    """
    sel = config.selection
    chosen = sel.select(scored.inputs(sel), config.k, config.scope)
    return dict(chosen.sets), chosen.general


def summarize_detection(
    sets: dict[str, NeuronSet], out_dir: str | os.PathLike, general: NeuronSet | None = None
) -> DetectionResult:
    """Per-layer counts and pairwise IoU of the task sets."""
    names = list(sets)
    per_layer = {
        name: sum(c for c in ns.counts_per_layer().values()).tolist() for name, ns in sets.items()
    }
    matrix = [[iou(sets[a], sets[b]) for b in names] for a in names]
    return DetectionResult(sets, per_layer, matrix, Path(out_dir), general)


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


def run_detect(ctx: RunContext, config: DetectConfig, folder: Path) -> DetectionResult:
    """The ``detect`` stage: :func:`detect_neurons`; its sets serve the later stages of the run."""
    result = detect_neurons(ctx.model, ctx.tokenizer, ctx.tasks, config, folder, ctx.progress)
    ctx.sets, ctx.general, ctx.detect_dir = result.sets, result.general, folder
    return result
