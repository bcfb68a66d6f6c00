"""Experiments that chain the stages: detection (scores -> NeuronSets) and deactivation tables.

Each function takes a loaded model, tokenizer and tasks, writes its results into ``out_dir``
(tables as Markdown/CSV/JSON, PNG plots, the config as JSON with provenance) and returns the
numbers. The CLI (``taskneurons detect`` / ``deactivate`` / ``demo``) is a thin layer over them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from taskneurons._io import provenance, write_json_atomic
from taskneurons.data.tasks import Task, examples_hash, subset
from taskneurons.evaluation import EvalConfig, evaluate
from taskneurons.models.loading import model_fingerprint
from taskneurons.neurons.attribution import AttributionConfig, relevance_scores
from taskneurons.neurons.intervention import deactivate
from taskneurons.neurons.selection import NeuronSet, iou, random_like, top_k
from taskneurons.neurons.space import NeuronSpace
from taskneurons.report.plots import heatmap, layer_distribution
from taskneurons.report.tables import markdown_table, write_table
from taskneurons.training.loop import TrainConfig, train

log = logging.getLogger(__name__)


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


@dataclass
class DeactivateConfig:
    """Knobs of ``taskneurons deactivate``.

    Attributes:
        mode: ``activation`` (hooks) or ``parameters`` (zeroed slices, restored bit-exactly).
        n_test: test examples per task (label-stratified subset with ``seed``; ``None``: all).
        seed: seed of the test subset.
        random_seed: seed of the random neuron sets (matched per layer and module).
        random_excludes_task: draw the random neurons from outside the task's own set.
        eval: how tasks are evaluated.
    """

    mode: str = "activation"
    n_test: int | None = 200
    seed: int = 0
    random_seed: int = 0
    random_excludes_task: bool = True
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def _test_examples(task: Task, n: int | None, seed: int):
    exs = task.test
    if n is not None and n < len(exs):
        exs = subset(
            exs, n, seed=seed, labels=task.labels if task.kind == "classification" else None
        )
    return list(exs)


def _experiment_meta(config, model, tasks, test, neuron_sets, controls, **extra) -> dict:
    """The provenance record written beside a deactivation or neuron-training experiment."""
    return provenance(
        config=config.to_dict(),
        model=model_fingerprint(model),
        metric={t.id: t.metric for t in tasks},
        data_hash={t.id: examples_hash(test[t.id]) for t in tasks},
        neuron_sets={t.id: neuron_sets[t.id].meta for t in tasks},
        random_overlap={t.id: controls[t.id].meta.get("n_overlap", 0) for t in tasks},
        **extra,
    )


def matched_random_sets(
    neuron_sets: dict[str, NeuronSet],
    space: NeuronSpace | Mapping[str, tuple[int, int]],
    seed: int,
    exclude_own: bool = True,
) -> dict[str, NeuronSet]:
    """Each task's control set: as many random neurons, matched per layer and module.

    Drawn outside the task's own set when ``exclude_own``; in a layer where the task's set
    holds more than half of the units that is impossible, so the control there takes every
    unit outside the set and the rest from inside it (a warning says how many; the set's
    ``meta["n_overlap"]`` records it). All sets are drawn before any evaluation or training,
    so a problem shows up at once.
    """
    out = {}
    for name, ns in neuron_sets.items():
        rnd = random_like(
            ns, space, seed=seed, exclude=ns if exclude_own else None, on_shortfall="overlap"
        )
        if rnd.meta.get("n_overlap"):
            layers = {m: sorted(int(k) for k in d) for m, d in rnd.meta["overlap"].items()}
            log.warning(
                "task %r: its neurons fill more than half of %s; the matched random set "
                "shares %d of its %d neurons with the task's set there",
                name,
                ", ".join(f"{m} layers {v}" for m, v in layers.items()),
                rnd.meta["n_overlap"],
                len(rnd),
            )
        out[name] = rnd
    return out


def deactivation_experiment(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    neuron_sets: dict[str, NeuronSet],
    config: DeactivateConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """PAPER.md Table 1 rows and the task x task deactivation matrix (Figure 5).

    For each task i: score with nothing deactivated (Original), with as many random neurons
    as task i has, matched per layer and module (Deactivate-Random), and with task i's neurons
    (Deactivate-Task); and the score of every task j with task i's neurons off.

    Writes ``table1.{md,csv,json}``, ``matrix.{md,csv,json}`` (change of task j's score when
    task i's neurons are off, in points), ``matrix.png`` and ``deactivate_config.json``. When
    every task is scored by label likelihood, the same evaluations also give the gold label's
    mean NLL (:meth:`EvalResult.gold_nll`), written as ``table1_nll.*`` and ``matrix_nll.*``
    (change in nats; a rise means the neurons mattered) — a readout that still moves when the
    model is at chance.

    Returns:
        ``{"original": {j: score}, "random": {i: score}, "task": {i: score},
        "matrix": {i: {j: score}}, "metric": {j: name}, "table": str}``, plus ``"nll"``
        with the same keys (scores replaced by gold NLLs) when available.
    """
    out = Path(out_dir)
    missing = [t.id for t in tasks if t.id not in neuron_sets]
    if missing:
        raise ValueError(f"no neuron set for tasks {missing}; have {sorted(neuron_sets)}")
    space = NeuronSpace(model, next(iter(neuron_sets.values())).definition)
    for ns in neuron_sets.values():
        ns.check_space(space)
    test = {t.id: _test_examples(t, config.n_test, config.seed) for t in tasks}

    from tqdm.auto import tqdm

    n_evals = len(tasks) * (len(tasks) + 2)
    bar = tqdm(total=n_evals, desc="deactivation", unit="eval", disable=not progress)

    def score(task: Task) -> tuple[float, float | None]:
        """``(task metric, gold label NLL or None)`` of one evaluation."""
        res = evaluate(model, tokenizer, task, test[task.id], config=config.eval, progress=False)
        bar.update()
        return res.score, res.gold_nll()

    controls = matched_random_sets(
        {t.id: neuron_sets[t.id] for t in tasks},
        space,
        config.random_seed,
        config.random_excludes_task,
    )
    original = {t.id: score(t) for t in tasks}
    rand, matrix = {}, {}
    for i in tasks:
        with deactivate(model, controls[i.id], mode=config.mode, space=space):
            rand[i.id] = score(i)
        with deactivate(model, neuron_sets[i.id], mode=config.mode, space=space):
            matrix[i.id] = {j.id: score(j) for j in tasks}
    bar.close()
    names = [t.id for t in tasks]

    def readout(k: int) -> tuple[dict, dict, dict]:
        """Component ``k`` (0: metric, 1: gold NLL) of every evaluation."""
        return (
            {n: v[k] for n, v in original.items()},
            {n: v[k] for n, v in rand.items()},
            {i: {j: v[k] for j, v in row.items()} for i, row in matrix.items()},
        )

    meta = _experiment_meta(config, model, tasks, test, neuron_sets, controls)
    result = _deactivation_tables(
        names,
        *readout(0),
        out,
        "",
        meta,
        title="Deactivation (accuracy % / ROUGE-L)",
        change_title="Change of task j's score (points) with task i's neurons deactivated",
    )
    result["metric"] = {t.id: t.metric for t in tasks}
    if all(nll is not None for _, nll in original.values()):
        result["nll"] = _deactivation_tables(
            names,
            *readout(1),
            out,
            "_nll",
            meta,
            title="Deactivation: gold label NLL (nats per example, lower is better)",
            change_title="Change of task j's gold label NLL (nats) with task i's neurons "
            "deactivated",
        )
    write_json_atomic(out / "deactivate_config.json", meta)
    return result


def _deactivation_tables(
    names: list[str],
    original: dict[str, float],
    rand: dict[str, float],
    matrix: dict[str, dict[str, float]],
    out: Path,
    suffix: str,
    meta: dict,
    title: str,
    change_title: str,
) -> dict:
    """Write ``table1{suffix}`` (Table 1 rows) and ``matrix{suffix}`` (changes + heatmap)."""

    def avg(d: dict) -> float:
        return sum(d.values()) / len(d)

    task_row = {n: matrix[n][n] for n in names}
    header = ["", *names, "Avg"]
    rows = [
        ["Original", *[original[n] for n in names], avg(original)],
        ["Deactivate-Random", *[rand[n] for n in names], avg(rand)],
        ["Deactivate-Task", *[task_row[n] for n in names], avg(task_row)],
    ]
    write_table(out / f"table1{suffix}", header, rows, meta=meta, title=title)
    change = [[matrix[i][j] - original[j] for j in names] for i in names]
    write_table(
        out / f"matrix{suffix}",
        ["deactivated \\ measured", *names],
        [[i, *row] for i, row in zip(names, change, strict=True)],
        meta=meta,
        title=change_title,
    )
    heatmap(
        change,
        names,
        names,
        out / f"matrix{suffix}.png",
        title="Deactivate task i's neurons: change on task j" + (" (gold NLL)" if suffix else ""),
        xlabel="measured task j",
        ylabel="deactivated neurons of task i",
        cmap="RdBu_r" if suffix else "RdBu",
    )
    return {
        "original": original,
        "random": rand,
        "task": task_row,
        "matrix": matrix,
        "table": markdown_table(header, rows),
    }


def diagonal_dominance(
    matrix: dict[str, dict[str, float]],
    original: dict[str, float],
    higher_is_better: bool = True,
) -> dict[str, bool]:
    """For each measured task j: is the largest drop in column j on the diagonal (i = j)?

    Args:
        matrix: ``matrix[i][j]``, task j's value with task i's neurons deactivated.
        original: task j's value with nothing deactivated.
        higher_is_better: ``True`` for accuracy / ROUGE-L; ``False`` for a loss such as the
            gold NLL, where the largest *rise* is the largest drop in quality.

    Example:
        >>> diagonal_dominance({"a": {"a": 40, "b": 70}, "b": {"a": 45, "b": 60}}, {"a": 50, "b": 75})
        {'a': True, 'b': True}
    """
    sign = 1.0 if higher_is_better else -1.0
    out = {}
    for j in original:
        drops = {i: sign * (original[j] - matrix[i][j]) for i in matrix}
        out[j] = max(drops, key=drops.get) == j
    return out


def deactivation_summary(result: dict, higher_is_better: bool = True) -> str:
    """Two lines on a :func:`deactivation_experiment` result (or its ``"nll"`` part).

    How many tasks lose more with their own neurons off than with as many random ones, and
    for how many the largest drop of their matrix column is on the diagonal.
    """
    sign = 1.0 if higher_is_better else -1.0
    names = list(result["original"])
    own = [n for n in names if sign * (result["task"][n] - result["random"][n]) < 0]
    diag = diagonal_dominance(result["matrix"], result["original"], higher_is_better)
    on_diag = [n for n in names if diag[n]]
    return (
        f"own neurons off hurt more than random ones: {len(own)} of {len(names)} "
        f"({', '.join(own) or 'none'})\n"
        f"largest drop of a column on its diagonal: {len(on_diag)} of {len(names)} "
        f"({', '.join(on_diag) or 'none'})"
    )


def load_neuron_sets(
    folder: str | os.PathLike, tasks: list[Task], model: nn.Module, strict: bool = True
) -> dict[str, NeuronSet]:
    """Load ``folder/<task>/neurons.safetensors`` for every task, checked against ``model``."""
    folder = Path(folder)
    sets = {}
    for t in tasks:
        path = folder / t.id / "neurons.safetensors"
        if not path.is_file():
            raise FileNotFoundError(
                f"no neuron set for task {t.id!r} at {path}; run `taskneurons detect` first"
            )
        sets[t.id] = NeuronSet.load(path, model=model, strict=strict)
    return sets


__all__ = [
    "DeactivateConfig",
    "DetectConfig",
    "deactivation_experiment",
    "detect_neurons",
    "deactivation_summary",
    "matched_random_sets",
    "diagonal_dominance",
    "FinetuneConfig",
    "MultitaskConfig",
    "load_neuron_sets",
    "multitask_experiment",
    "neuron_training_experiment",
]


@dataclass
class FinetuneConfig:
    """Knobs of the neuron-training experiments (PAPER.md Table 2, Figure 5 a).

    Attributes:
        n_train: train examples per task (label-stratified with ``seed``; ``None``: all).
        n_test: test examples per task.
        seed: seed of the data subsets.
        random_seed: seed of the random neuron sets (matched per layer and module).
        matrix: also score every task after training each task's neurons (Figure 5 a).
        train: the training knobs (method ``neurons``; ``merge`` must stay ``False``).
        eval: how tasks are evaluated.
    """

    n_train: int | None = 512
    n_test: int | None = 200
    seed: int = 0
    random_seed: int = 0
    matrix: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def _limited(task: Task, n_train: int | None, seed: int) -> Task:
    return task.limit(n_train=n_train, seed=seed) if n_train is not None else task


def neuron_training_experiment(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    neuron_sets: dict[str, NeuronSet],
    config: FinetuneConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """Zero-shot / Train-Random / Train-Task per task, and the task x task training matrix.

    Each task is trained on its own, once through as many random neurons as it has (matched
    per layer and module, drawn outside its set) and once through its own neurons, always
    starting from the same base weights (the trained :class:`NeuronDelta` is detached after
    scoring, which restores the base model exactly).

    Writes ``table2.{md,csv,json}``, ``train_matrix.{md,csv,json,png}`` (change of task j's
    score after training task i's neurons, in points), per-run training folders and
    ``finetune_config.json``.
    """
    if config.train.method != "neurons":
        raise ValueError(
            f"neuron training needs train.method='neurons', got {config.train.method!r}"
        )
    if config.train.merge:
        raise ValueError("neuron training keeps the base model: set train.merge=False")
    out = Path(out_dir)
    missing = [t.id for t in tasks if t.id not in neuron_sets]
    if missing:
        raise ValueError(f"no neuron set for tasks {missing}; have {sorted(neuron_sets)}")
    space = NeuronSpace(model, next(iter(neuron_sets.values())).definition)
    test = {t.id: _test_examples(t, config.n_test, config.seed) for t in tasks}

    def score(task: Task) -> float:
        return evaluate(
            model, tokenizer, task, test[task.id], config=config.eval, progress=False
        ).score

    for t in tasks:
        neuron_sets[t.id].check_space(space)
    controls = matched_random_sets(
        {t.id: neuron_sets[t.id] for t in tasks}, space, config.random_seed
    )
    zero = {t.id: score(t) for t in tasks}
    rand, own, matrix, runs = {}, {}, {}, {}
    for t in tasks:
        ns = neuron_sets[t.id]
        train_task = _limited(t, config.n_train, config.seed)
        for kind, neurons in (("random", controls[t.id]), ("task", ns)):
            res = train(
                model,
                tokenizer,
                [train_task],
                config.train,
                neurons=neurons,
                out_dir=out / "runs" / t.id / kind,
                progress=progress,
            )
            try:
                if kind == "random":
                    rand[t.id] = score(t)
                else:
                    own[t.id] = score(t)
                    if config.matrix:
                        matrix[t.id] = {
                            j.id: (own[t.id] if j.id == t.id else score(j)) for j in tasks
                        }
            finally:
                res.delta.detach()
            runs[f"{t.id}/{kind}"] = {
                "steps": res.steps,
                "final_loss": res.final_loss,
                "n_trainable": res.n_trainable,
                "wall_s": res.wall_s,
            }
    names = [t.id for t in tasks]

    def avg(d: dict) -> float:
        return sum(d.values()) / len(d)

    header = ["", *names, "Avg"]
    rows = [
        ["Zero-shot", *[zero[n] for n in names], avg(zero)],
        ["Train-Random", *[rand[n] for n in names], avg(rand)],
        ["Train-Task", *[own[n] for n in names], avg(own)],
    ]
    meta = _experiment_meta(config, model, tasks, test, neuron_sets, controls, runs=runs)
    write_table(
        out / "table2", header, rows, meta=meta, title="Neuron training (accuracy % / ROUGE-L)"
    )
    result = {
        "zero_shot": zero,
        "random": rand,
        "task": own,
        "runs": runs,
        "table": markdown_table(header, rows),
    }
    if config.matrix:
        change = [[matrix[i][j] - zero[j] for j in names] for i in names]
        write_table(
            out / "train_matrix",
            ["trained \\ measured", *names],
            [[i, *row] for i, row in zip(names, change, strict=True)],
            meta=meta,
            title="Change of task j's score (points) after training task i's neurons",
        )
        heatmap(
            change,
            names,
            names,
            out / "train_matrix.png",
            title="Train task i's neurons: change on task j",
            xlabel="measured task j",
            ylabel="trained neurons of task i",
            cmap="RdBu",
        )
        result["matrix"] = matrix
    write_json_atomic(out / "finetune_config.json", meta)
    return result


@dataclass
class MultitaskConfig:
    """Knobs of the Table 1 experiment on a multi-task fine-tuned model.

    Attributes:
        n_train: train examples per task for the multi-task fine-tuning.
        seed: seed of the subsets.
        train: the fine-tuning knobs (``full`` by default; ``lora`` is merged).
        detect: detection on the fine-tuned model.
        deactivate: the deactivation table and matrix on the fine-tuned model.
    """

    n_train: int | None = 512
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(method="full", lr=2e-5))
    detect: DetectConfig = field(default_factory=DetectConfig)
    deactivate: DeactivateConfig = field(default_factory=DeactivateConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def multitask_experiment(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    config: MultitaskConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """Fine-tune on all tasks together, detect each task's neurons on that model, deactivate.

    The model is fine-tuned in place (``full``), or through a LoRA adapter merged into it.
    Writes ``multitask/`` (training), ``detect/`` and ``deactivate/`` (Table 1 layout and the
    Figure 5 b matrix) under ``out_dir``.
    """
    if config.train.method == "neurons":
        raise ValueError("the multi-task model is fine-tuned with method 'full' or 'lora'")
    out = Path(out_dir)
    train_tasks = [_limited(t, config.n_train, config.seed) for t in tasks]
    cfg = config.train
    if cfg.method == "lora" and not cfg.merge:
        cfg = TrainConfig(**{**asdict(cfg), "merge": True, "prompt": cfg.prompt})
    res = train(model, tokenizer, train_tasks, cfg, out_dir=out / "multitask", progress=progress)
    tuned = res.model
    sets = detect_neurons(tuned, tokenizer, tasks, config.detect, out / "detect", progress)
    table = deactivation_experiment(
        tuned, tokenizer, tasks, sets, config.deactivate, out / "deactivate", progress
    )
    write_json_atomic(
        out / "multitask_config.json",
        provenance(config=config.to_dict(), model=model_fingerprint(tuned)),
    )
    return {"train": {"steps": res.steps, "final_loss": res.final_loss}, **table}
