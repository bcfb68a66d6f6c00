"""Detection: score every task, keep its top-k % neurons, write sets, tables and plots.

Example:
    >>> ctx = RunContext.of(model, tok, tasks)  # doctest: +SKIP
    >>> res = detect_neurons(ctx, DetectConfig(k=10), "runs/detect")  # doctest: +SKIP
    >>> print(res.markdown())  # neuron counts, per-layer table, pairwise IoU  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from taskneurons._io import write_json_atomic
from taskneurons.experiments.common import DETECT_CONFIG, GENERAL_FILE, check_detect_out
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.scoring import SCORES_FILE, ScoredTasks, score_tasks
from taskneurons.neurons.selection.ranking import iou
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.report.plots import heatmap, layer_distribution
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.store.run_folder import RunFolder
from taskneurons.store.stored_result import StoredResult


@dataclass
class DetectionResult(StoredResult):
    """What :func:`detect_neurons` found.

    Attributes:
        sets: task id -> its :class:`NeuronSet`.
        per_layer: task id -> selected neurons per layer (``[layers]`` counts).
        iou: pairwise IoU of the sets, ``[tasks][tasks]``, in task order.
        out_dir: where the files are.
        general: the general set of a ``specific`` selection (else ``None``).
        meta: ``detect_config.json``: the settings, task list and model fingerprint.
        scores: task id -> its relevance scores (``<task>/scores.safetensors``).

    :meth:`save` writes the files :func:`detect_neurons` writes, but ``lape``'s activation
    probabilities (written as they are measured); :meth:`load` reads them back (the per-layer
    counts and IoU recomputed from the sets).

    Example:
        >>> res = DetectionResult.load("runs/x/detect")  # doctest: +SKIP
        >>> res.save("runs/copy")  # the same files  # doctest: +SKIP
    """

    RECORD = DETECT_CONFIG
    sets: dict[str, NeuronSet]
    per_layer: dict[str, list[int]]
    iou: list[list[float]]
    out_dir: Path
    general: NeuronSet | None = None
    meta: dict = field(default_factory=dict, repr=False)
    scores: dict[str, NeuronScores] = field(default_factory=dict, repr=False)

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

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write the record, the scores, the sets and the summary into ``folder`` (default:
        :attr:`out_dir`)."""
        out = self.target(folder)
        if self.meta:
            self.write_meta(out)
        for task, s in self.scores.items():
            s.save(out / task / SCORES_FILE)
        self.save_selection(out)
        return out

    def save_selection(self, folder: str | os.PathLike | None = None) -> None:
        """The sets (``<task>/neurons.safetensors``), the general set and the summary tables."""
        out = self.target(folder)
        save_sets(out, self.sets, self.general)
        write_detection_summary(self, out)

    @classmethod
    def from_files(cls, path: Path, meta: dict) -> DetectionResult:
        """The detection in ``path`` (its ``detect_config.json`` names the tasks).

        Raises:
            FinishedRunError: no readable ``detect_config.json``.
            FileNotFoundError: a task's set is missing.
        """
        run = RunFolder(path)
        names = list(meta.get("tasks") or run.set_tasks())
        sets = {t: NeuronSet.load(run.set_path(t)) for t in names}
        general_path = run.path / GENERAL_FILE
        general = NeuronSet.load(general_path) if general_path.is_file() else None
        result = summarize_detection(sets, run.path, general)
        result.meta = meta
        paths = {t: run.path / t / SCORES_FILE for t in names}
        result.scores = {t: NeuronScores.load(p) for t, p in paths.items() if p.is_file()}
        return result

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
            f"Pairwise IoU of task neurons\n\n{iou_table}{self.iou_reading()}"
        )

    def iou_reading(self) -> str:
        """One line: the mean pairwise IoU against two random sets of the same share ``f``
        (expected IoU ``f / (2 - f)``); descriptive, no test. Empty for one task."""
        n = len(self.names)
        pairs = [self.iou[i][j] for i in range(n) for j in range(i + 1, n)]
        if not pairs:
            return ""
        f = sum(s.fraction() for s in self.sets.values()) / len(self.sets)
        return (
            f"\n\nmean pairwise IoU {sum(pairs) / len(pairs):.3f}, against {f / (2 - f):.3f} for "
            f"two random sets of {f * 100:.1f} % each: how much the tasks' sets overlap "
            "(descriptive, no test)"
        )


def detect_neurons(
    ctx: RunContext, config: DetectConfig, out_dir: str | os.PathLike
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
    model, tokenizer, tasks, progress = ctx.model, ctx.tokenizer, ctx.tasks, ctx.progress
    out = Path(out_dir)
    check_detect_run(ctx, config, out)  # before any file
    fingerprint = model_fingerprint(model)
    ids = [t.id for t in tasks]
    # recorded first, so the sets of a run that stops half-way are known too
    record = provenance(config=config.to_dict(), tasks=ids, model=fingerprint)
    write_json_atomic(out / DETECT_CONFIG, record)
    scored = score_tasks(
        model, tokenizer, tasks, config.attribution, config.selection, out, progress
    )
    sets, general = select_sets(scored, config)
    result = summarize_detection(sets, out, general)
    result.meta, result.scores = record, dict(scored.scores)
    result.save_selection(out)
    ctx.sets, ctx.general, ctx.detect_dir = sets, general, out  # for the later stages of a run
    return result


def check_detect_run(
    ctx: RunContext, config: DetectConfig, out_dir: str | os.PathLike | None
) -> None:
    """What detection refuses before it writes anything: a neuron definition the model does not
    have, and an ``out_dir`` holding a detection of other settings, model or tasks
    (:func:`~taskneurons.experiments.common.check_detect_out`; ``None``: a folder that will be
    emptied first). The runner calls it before the run folder is written (``Stage.check``).

    Example:
        >>> check_detect_run(ctx, DetectConfig(k=5), "runs/detect")  # doctest: +SKIP
    """
    NeuronSpace(ctx.model, config.attribution.definition)
    if out_dir is not None:
        ids = [t.id for t in ctx.tasks]
        check_detect_out(Path(out_dir), config.to_dict(), ids, model_fingerprint(ctx.model))


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


def write_detection_summary(result: DetectionResult, out: Path | None = None) -> None:
    """``layer_counts.{md,csv,json,png}`` and ``iou.{md,csv,json,png}`` in ``out`` (default:
    ``result.out_dir``)."""
    out, names = out if out is not None else result.out_dir, result.names
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


run_detect = detect_neurons
