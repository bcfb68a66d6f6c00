"""PAPER.md §4 / Table 5: continual learning with NCFT, W-NCFT and the baselines.

The tasks are learned one stage at a time in ``config.order`` by one method
(:mod:`taskneurons.continual`: SeqFT, SeqLoRA, O-LoRA, EPI, per-task FT, NCFT, W-NCFT). After
every stage every task is scored (the seen ones, and the unseen ones too unless
``eval_unseen=False``, which FWT needs): ``a[i, j]`` is the score on task ``i`` after stage
``j``. The single-task scores ``A(i)`` and the zero-shot scores ``b(i)`` come from a JSON
cache shared by the methods (:mod:`taskneurons.continual.reference`). After each stage a
checkpoint (method state + matrix so far) is written; ``resume=True`` continues an
interrupted run from its last finished stage, and reads a finished run back from its result
files when its record matches, with or without its checkpoint (a long run's small result
files can travel to another machine without the checkpoints). :func:`continual_experiments` runs several
configs that differ only in W-NCFT's answering mode on one training (one folder each, as if
run alone); per-task FT takes a stage whose training is exactly the one behind A(i) from the
references instead of repeating it (:mod:`taskneurons.continual.strategies.pertask`).

Files in ``out_dir``: ``matrix.{md,csv,json}`` (``a[i, j]``), ``heatmap.png``,
``metrics.{md,csv,json}`` (CL, BWT, FWT, FG_j), ``tasks.{md,csv,json}`` (per task: b(i),
A(i), a(i,i), final score), ``continual_config.json`` (resolved config + provenance),
``result.json``, ``checkpoint/``, for NCFT and W-NCFT each task's neuron set
(``neurons/<task>/neurons.safetensors``, :mod:`~taskneurons.experiments.continual.task_neurons`)
and, unless ``reference_cache`` names another file, ``reference_cache.json`` and, beside it,
``task_vectors.json``: the task vectors of W-NCFT and EPI's prototypes, computed once on the
base model for every method, mode, seed and order that shares the file
(:mod:`taskneurons.continual.vector_cache`).

Example:
    >>> cfg = ContinualConfig(order=["dbpedia", "amazon", "yahoo", "agnews"],
    ...                       method=MethodConfig.make("wncft", mode="inferred"))  # doctest: +SKIP
    >>> res = continual_experiment(model, tok, tasks, cfg, "out/order1-wncft")  # doctest: +SKIP
    >>> res.metrics["cl"], res.matrix.shape  # doctest: +SKIP
    (71.3, (4, 4))
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from taskneurons.analysis.continual_metrics import bwt, cl, forgetting, fwt
from taskneurons.continual.base import ContinualMethod
from taskneurons.continual.reference import reference_scores, zero_shot_scores
from taskneurons.continual.registry import make_method
from taskneurons.continual.stage_checkpoint import checkpoint_stage, has_checkpoint, read_checkpoint
from taskneurons.continual.stage_loop import StageRun, advance, reference_stages, score_held_out
from taskneurons.continual.vector_cache import VECTOR_FILE, TaskVectorCache
from taskneurons.data.tasks import Task, examples_hash
from taskneurons.data.validation import validation_split
from taskneurons.experiments.common import eval_examples, limited
from taskneurons.experiments.continual.continual_result import (
    RECORD_FILE,
    RESULT_FILE,
    ContinualResult,
)
from taskneurons.experiments.continual.continual_stage import ContinualConfig
from taskneurons.experiments.continual.task_neurons import save_task_neurons
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.store.settings import SettingsKey, model_identity

#: ``on_stage(stage, matrix)``: called after each stage's checkpoint (``matrix`` a copy)
StageCallback = Callable[[int, np.ndarray], None]


def order_tasks(tasks: Sequence[Task], order: Sequence[str] | None) -> list[Task]:
    """``tasks`` in ``order`` (``None``: as given); every id of ``order`` must be a task.

    Example:
        >>> [t.id for t in order_tasks([a, b], ["b", "a"])]  # doctest: +SKIP
        ['b', 'a']
    """
    by_id = {t.id: t for t in tasks}
    if order is None:
        return list(tasks)
    missing = [t for t in order if t not in by_id]
    if missing:
        raise ValueError(f"order names tasks {missing} that are not loaded; have {sorted(by_id)}")
    return [by_id[t] for t in order]


def scored_examples(
    config: ContinualConfig, whole: Sequence[Task], ordered: Sequence[Task]
) -> dict[str, list]:
    """Task id -> the examples the matrix is scored on: ``n_test`` test examples, or with
    ``score_on="validation"`` ``n_val`` train examples outside the ones trained on
    (``ordered[i].train``) and outside the test inputs (same ``seed``)."""
    if config.score_on == "validation":
        assert config.n_val is not None
        return {
            o.id: validation_split(w, o.train, config.n_val, config.seed)
            for w, o in zip(whole, ordered, strict=True)
        }
    return {t.id: eval_examples(t, config.n_test, config.seed) for t in ordered}


def continual_metrics(matrix: np.ndarray, single: Sequence[float], zero: Sequence[float]) -> dict:
    """CL, BWT, FWT (``nan`` without the unseen entries) and FG_j (``nan`` if some A(i) <= 0)."""
    n = matrix.shape[0]
    try:
        fg = forgetting(matrix, single).tolist()
    except ValueError:
        fg = [float("nan")] * n
    try:
        forward = fwt(matrix, zero)
    except ValueError:
        forward = float("nan")
    return {"cl": cl(matrix), "bwt": bwt(matrix), "fwt": forward, "forgetting": fg}


def _run_record(config: ContinualConfig, model: nn.Module, tasks: list[Task], test: dict) -> dict:
    """What must match for a checkpoint to be resumed: config, base model, order, data."""
    return SettingsKey.of(
        config=config.to_dict(),
        model=model_identity(model_fingerprint(model)),
        order=[t.id for t in tasks],
        train_hash={t.id: examples_hash(t.train) for t in tasks},
        test_hash={t.id: examples_hash(test[t.id]) for t in tasks},
    ).values


def finished_run(
    config: ContinualConfig, out: Path, model: nn.Module, tasks: list[Task], test: dict
) -> ContinualResult | None:
    """The run in ``out`` read back if it finished with this record (config, base model, order,
    data: :func:`_run_record`), else ``None``; its checkpoint is not needed."""
    if not ((out / RECORD_FILE).is_file() and (out / RESULT_FILE).is_file()):
        return None
    saved = json.loads((out / RECORD_FILE).read_text(encoding="utf-8"))
    record = json.loads(json.dumps(_run_record(config, model, tasks, test)))
    if any(saved.get(key) != value for key, value in record.items()):
        return None
    return ContinualResult.load(out)


def _check_resumable(folder: Path, saved: dict, now: dict) -> None:
    SettingsKey(now).check(
        saved,
        lambda diff: (
            f"{folder} holds a checkpoint of another run (different {', '.join(diff)}); "
            "resume with the same config, model and tasks, or use another folder"
        ),
    )


def _start(model, tokenizer, tasks, test, config, out, resume, progress) -> tuple:
    """``(StageRun, method state)``: from the checkpoint (resume), else fresh (state ``None``)."""
    folder = out / "checkpoint"
    record = _run_record(config, model, tasks, test)
    ckpt = read_checkpoint(folder) if resume else None
    if ckpt is None and has_checkpoint(folder):
        raise ValueError(
            f"{out} holds a checkpoint of an earlier run; pass resume=True or another folder"
        )
    n = len(tasks)
    if ckpt is not None:
        _check_resumable(folder, ckpt.record["run"], record)
        r = ckpt.record
        matrix = np.array([[np.nan if v is None else v for v in row] for row in r["matrix"]])
        start = ckpt.stage + 1
        run = StageRun(
            config, out, record, matrix, r["single"], r["zero_shot"], r["stages"], start, start,
            list(r.get("routing", [])),
        )  # fmt: skip
        return run, ckpt.state
    cache = reference_cache_path(config, out)
    refs = reference_scores(
        model, tokenizer, tasks, test, config.single_train, config.eval, cache, progress
    )
    empty = np.full((n, n), np.nan)
    return StageRun(config, out, record, empty, refs.single, refs.zero_shot, [], 0, None), None


def reference_cache_path(config: ContinualConfig, out: Path) -> Path:
    """The JSON cache of A(i) and b(i): ``config.reference_cache``, else in the run folder.
    The task vectors are kept beside it (:data:`VECTOR_FILE`), shared as widely."""
    return Path(config.reference_cache) if config.reference_cache else out / "reference_cache.json"


def shares_training(a: ContinualConfig, b: ContinualConfig) -> bool:
    """Whether one training serves both configs: equal in everything but ``method.mode``.

    Only W-NCFT reads ``mode``, and only to answer (task given or inferred), so one run can
    score both (:func:`continual_experiments`).

    Example:
        >>> given = ContinualConfig(method=MethodConfig.make("wncft"))
        >>> shares_training(given, given.replace(method=given.method.replace(mode="inferred")))
        True
    """
    da, db = a.to_dict(), b.to_dict()
    da["method"].pop("mode", None)
    db["method"].pop("mode", None)
    return da == db


def continual_experiment(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[Task],
    config: ContinualConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    on_stage: StageCallback | None = None,
) -> ContinualResult:
    """Learn the tasks in order with ``config.method``; score every task after every stage.

    Per-task FT takes the stages whose training is the one behind A(i) from the reference
    scores instead of training them (:mod:`taskneurons.continual.strategies.pertask`; the stage's
    summary says ``derived_from: reference_scores``); the matrix is the same.

    Args:
        model: the base model (trained in place; LoRA methods wrap it).
        tokenizer: its tokenizer.
        tasks: the tasks (ordered by ``config.order``).
        config: the knobs.
        out_dir: the results folder.
        resume: continue from ``out_dir/checkpoint`` (``model`` must be a fresh copy of the
            same base model; config and data must match).
        progress: show progress bars.
        on_stage: called after each stage's checkpoint as ``on_stage(stage, matrix)``.

    Raises:
        ValueError: an unknown task in ``order``; a checkpoint of another run (or of an earlier
            run when ``resume`` is off).
    """
    runs = [(config, out_dir)]
    return continual_experiments(model, tokenizer, tasks, runs, resume, progress, on_stage)[0]


def continual_experiments(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[Task],
    runs: Sequence[tuple[ContinualConfig, str | os.PathLike]],
    resume: bool = False,
    progress: bool = True,
    on_stage: StageCallback | None = None,
) -> list[ContinualResult]:
    """:func:`continual_experiment` for several ``(config, out_dir)`` sharing one training.

    The configs must be equal but for ``method.mode`` (:func:`shares_training`: W-NCFT given
    and inferred). The method trains once; after every stage each run scores every task with
    its own ``method`` config in place, and writes its own checkpoint and files in its folder,
    exactly as a run of its own would (same matrix, files and checkpoint). ``on_stage`` is
    called once per run after all the stage's checkpoints. Resuming needs every folder's
    checkpoint at the same stage (or none anywhere); the method's state is read from the first.

    Example:
        >>> given, inferred = continual_experiments(model, tok, tasks,
        ...     [(cfg, "out/wncft"), (cfg_inferred, "out/wncft-inferred")])  # doctest: +SKIP

    Raises:
        ValueError: configs that do not share training; checkpoints of different stages; as
            :func:`continual_experiment`.
    """
    config = runs[0][0]
    if not all(shares_training(config, c) for c, _ in runs[1:]):
        raise ValueError("continual_experiments: the configs differ in more than method.mode")
    outs = [Path(o) for _, o in runs]
    if resume and len({checkpoint_stage(o / "checkpoint") for o in outs}) > 1:
        raise ValueError(
            f"{', '.join(map(str, outs))}: checkpoints of different stages; resume each alone"
        )
    ordered, test, held, held_test = run_examples(config, tasks)
    if resume:  # finished runs are read back (their checkpoints may be gone)
        done = [
            finished_run(c, o, model, ordered, test) for (c, _), o in zip(runs, outs, strict=True)
        ]
        if all(r is not None for r in done):
            return done
    method = _make(config, model, tokenizer, tasks, {**test, **held_test}, outs[0], progress)
    started = [
        _start(model, tokenizer, ordered, test, c, o, resume, progress)
        for (c, _), o in zip(runs, outs, strict=True)
    ]
    state = [run for run, _ in started]
    _held_zero_shot(model, tokenizer, held, held_test, state)
    if started[0][1] is not None:
        method.load_state_dict(started[0][1])
    derive = reference_stages(method, config.single_train, len(ordered))
    for j in range(state[0].start, len(ordered)):
        advance(method, tokenizer, ordered, test, state, j, derive)
        for run in state:
            if on_stage is not None:
                on_stage(j, run.matrix.copy())
    score_held_out(method, tokenizer, held, held_test, state)
    return [_result(method, run, [t.id for t in ordered]) for run in state]


def _make(config, model, tokenizer, tasks, scored: dict, out: Path, progress: bool):
    """The run's method on the base ``model``: its feature pools (``scored`` left out) and
    the task vector cache beside the reference cache."""
    vectors = TaskVectorCache(reference_cache_path(config, out).with_name(VECTOR_FILE), model)
    method = make_method(config.method, model, tokenizer, config.train, progress)
    method.pools = feature_pools(tasks, scored)
    method.vector_cache = vectors
    return method


def run_examples(config: ContinualConfig, tasks: Sequence[Task]) -> tuple:
    """``(ordered train tasks, their scored examples, held-out tasks, their test examples)``."""
    held_ids = set(config.held_out or [])
    whole = order_tasks([t for t in tasks if t.id not in held_ids], config.order)
    ordered = [limited(t, config.n_train, config.seed) for t in whole]
    test = scored_examples(config, whole, ordered)
    held = [limited(t, config.n_train, config.seed) for t in tasks if t.id in held_ids]
    return ordered, test, held, {t.id: eval_examples(t, config.n_test, config.seed) for t in held}


def feature_pools(tasks: Sequence[Task], scored: dict[str, list]) -> dict[str, list]:
    """Task id -> the inputs its vector / prototype may draw from (``vector_source: task``):
    the whole train split but the examples the matrix is scored on (validation when tuning)."""
    skip = {tid: {e.input for e in exs} for tid, exs in scored.items()}
    return {t.id: [e for e in t.train if e.input not in skip.get(t.id, set())] for t in tasks}


def _held_zero_shot(model, tokenizer, held: list[Task], test: dict, runs: list[StageRun]) -> None:
    """b(i) of the held-out tasks into each fresh run's ``zero_shot`` (the model is still the
    base model here; a resumed run has them from its checkpoint)."""
    for run in runs:
        if held and any(t.id not in run.zero_shot for t in held):
            cfg = run.config
            cache = cfg.reference_cache or run.out / "reference_cache.json"
            run.zero_shot.update(zero_shot_scores(model, tokenizer, held, test, cfg.eval, cache))


def _result(method: ContinualMethod, run: StageRun, order: list[str]) -> ContinualResult:
    """The run's :class:`ContinualResult`, its files written."""
    cfg = run.config
    result = ContinualResult(
        method=cfg.method.name,
        mode=getattr(cfg.method, "mode", None),
        order=order,
        matrix=run.matrix,
        single=run.single,
        zero_shot=run.zero_shot,
        metrics=continual_metrics(
            run.matrix, [run.single[t] for t in order], [run.zero_shot[t] for t in order]
        ),
        stages=run.stages,
        stored_bytes_per_task=method.stored_bytes_per_task(),
        resumed_from=run.resumed_from,
        out_dir=run.out,
        routing=run.routing,
        held_out={
            t: {"score": v, "zero_shot": run.zero_shot[t], "change": v - run.zero_shot[t]}
            for t, v in run.held_out.items()
        },
    )
    result.meta = provenance(
        **run.record,
        method=result.label,
        stored_bytes_per_task=result.stored_bytes_per_task,
        stages=result.stages,
    )
    sets = method.task_neuron_sets()
    if sets:  # before result.json: a finished run has them
        save_task_neurons(run.out, sets)
    result.save()
    return result
