"""Each stage's work, counted from its section of the experiment file and the task sizes.

One function per stage returns a :class:`StageWork`: its jobs, the bytes it writes, and what
it leaves out. The counts follow the stage's code (which evaluations, which trainings); the
notes say where a count is simplified. A stage with no function here is reported as not
modelled, never guessed.

Example:
    >>> work = stage_work("detect", experiment_file, sizes, shape)  # doctest: +SKIP
    >>> [j.kind for j in work.jobs]  # one scoring job per task  # doctest: +SKIP
    ['attribution', 'attribution']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from taskneurons.experiments.estimate.continual_work import continual_copies, continual_jobs
from taskneurons.experiments.estimate.work import (
    Job,
    TaskSize,
    evaluation_jobs,
    scoring_job,
    trainable_of,
    training_job,
)


@dataclass
class StageWork:
    """The jobs of one stage, what it writes (bytes) and the notes on its count;
    ``host_copies``: copies of the model's weights the stage holds in host memory beside the
    model throughout (snapshots to restore, per-task models)."""

    name: str
    jobs: list[Job] = field(default_factory=list)
    disk: float = 0.0
    notes: list[str] = field(default_factory=list)
    modelled: bool = True
    host_copies: int = 0


def _scores(file, sizes: list[TaskSize], shape, work: StageWork) -> None:
    """Score every task once (the file's ``detect`` section) and write its scores."""
    attr = file.detect.attribution
    for s in sizes:
        work.jobs.append(scoring_job(s, attr.n_examples, attr.batch_size, attr.checkpointing))
    work.disk += len(sizes) * shape.n_layers * shape.d_ff * 4 * 2  # scores + neuron masks


def _evals(sizes: list[TaskSize], n_test, eval_cfg, times: int = 1) -> list[Job]:
    jobs = []
    for s in sizes:
        decided = eval_cfg.stop_when_decided
        for job in evaluation_jobs(
            s, n_test, eval_cfg.batch_size, eval_cfg.max_new_tokens, decided
        ):
            job.n, job.tokens = job.n * times, job.tokens * times
            jobs.append(job)
    return jobs


def detect(file, sizes, shape) -> StageWork:
    work = StageWork("detect")
    _scores(file, sizes, shape, work)
    return work


def _deactivation(sizes, cfg, cells: int = 1, general: int = 0) -> list[Job]:
    """Original once; each cell: random, the T sets, others (T > 1); ``general`` cells with a
    general set (``specific`` selections) also deactivate it when ``cfg.general``."""
    t = len(sizes)
    per_task = cells * ((t + 2) if t > 1 else 2) + 1
    if t > 1 and cfg.general:
        per_task += general
    return _evals(sizes, cfg.n_test, cfg.eval, per_task)


def _has_general(selection) -> bool:
    return selection.method == "specific"


def deactivate(file, sizes, shape) -> StageWork:
    general = int(_has_general(file.detect.selection))
    work = StageWork("deactivate", _deactivation(sizes, file.deactivate, 1, general))
    if file.deactivate.mode == "mean":
        work.notes.append("mean mode's activation means are not counted")
    return work


def table2(file, sizes, shape) -> StageWork:
    cfg = file.table2
    chosen = [s for s in sizes if cfg.tasks is None or s.id in cfg.tasks]
    k = float(file.detect.k)
    trainable = trainable_of(shape, cfg.train, k)
    work = StageWork("table2", _evals(chosen, cfg.n_test, cfg.eval))  # zero-shot
    for s in chosen:
        for _ in ("random", "task"):
            work.jobs.append(training_job([s], cfg.n_train, cfg.train, trainable))
            work.disk += trainable * 4  # the delta, float32
        work.jobs += _evals([s], cfg.n_test, cfg.eval, 2)  # own task after each training
        if cfg.matrix:
            work.jobs += _evals([o for o in chosen if o.id != s.id], cfg.n_test, cfg.eval)
    return work


def budget(file, sizes, shape) -> StageWork:
    """Zero-shot once per task; per optimizer and k, the own set and one random set per seed,
    each trained ``max(steps)`` steps and scored after every step of ``steps``."""
    import dataclasses

    cfg = file.budget
    chosen = [s for s in sizes if cfg.tasks is None or s.id in cfg.tasks]
    work = StageWork("budget")
    if "detect" not in file.stages():
        _scores(file, sizes, shape, work)
    train = dataclasses.replace(cfg.train, max_steps=max(cfg.steps))
    for s in chosen:
        work.jobs += _evals([s], cfg.n_test, cfg.eval)
        for k in cfg.k:
            runs, trainable = (
                len(cfg.optimizers) * (1 + len(cfg.seeds)),
                trainable_of(shape, train, k),
            )
            for _ in range(runs):
                work.jobs.append(training_job([s], cfg.n_train, train, trainable))
                work.disk += trainable * 4
            work.jobs += _evals([s], cfg.n_test, cfg.eval, runs * len(cfg.steps))
    work.notes.append(f"{1 + len(cfg.seeds)} runs (own set, random per seed) per optimizer and k")
    return work


def crosstrain(file, sizes, shape) -> StageWork:
    """Zero-shot once per task; every task's set trained on every task's data and scored."""
    cfg = file.crosstrain
    k = float(file.detect.k)
    work = StageWork("crosstrain", _evals(sizes, cfg.n_test, cfg.eval))
    for _owner in sizes:
        for data in sizes:
            job = training_job([data], cfg.n_train, cfg.train, trainable_of(shape, cfg.train, k))
            work.jobs.append(job)
            work.jobs += _evals([data], cfg.n_test, cfg.eval)
    work.notes.append(f"{len(sizes)} x {len(sizes)} trainings; the sets come from detect")
    return work


def ablation_check(file, sizes, shape) -> StageWork:
    """Per task: scores of ``n_examples`` examples, a clean forward and one forward of those
    examples per ablated neuron (``per_layer`` per layer and the estimate's ``top_k``)."""
    cfg, attr = file.ablation_check, file.detect.attribution
    work = StageWork("ablation_check")
    neurons = cfg.per_layer * shape.n_layers + cfg.top_k
    for s in sizes:
        work.jobs.append(scoring_job(s, cfg.n_examples, attr.batch_size, attr.checkpointing))
        n = min(cfg.n_examples, s.n_train)
        length = s.prompt + s.answer
        batches = (neurons + 1) * math.ceil(n / attr.batch_size)
        rows = min(n, attr.batch_size) * cfg.chunk
        work.jobs.append(Job("forward", batches, (neurons + 1) * n * length, length, rows * length))
    work.notes.append("top-k neurons that are also random picks are counted twice")
    return work


def sweep(file, sizes, shape) -> StageWork:
    cfg = file.sweep
    cells = len(cfg.k) * len(cfg.selections)
    work = StageWork("sweep")
    _scores(file, sizes, shape, work)
    general = len(cfg.k) * sum(_has_general(c) for c in cfg.cells(file.detect.selection))
    work.jobs += _deactivation(sizes, file.deactivate, cells, general)
    work.notes.append(f"{cells} cells; the original scores are evaluated once")
    return work


def multitask(file, sizes, shape) -> StageWork:
    cfg = file.multitask
    work = StageWork("multitask")
    work.jobs.append(training_job(sizes, cfg.n_train, cfg.train, trainable_of(shape, cfg.train, 0)))
    attr = cfg.detect.attribution
    work.jobs += [
        scoring_job(s, attr.n_examples, attr.batch_size, attr.checkpointing) for s in sizes
    ]
    work.jobs += _deactivation(sizes, cfg.deactivate, 1, int(_has_general(cfg.detect.selection)))
    if cfg.sweep is not None:  # every cell, from the scores detect/ made
        cells = len(cfg.sweep.k) * len(cfg.sweep.selections)
        general = len(cfg.sweep.k) * sum(
            _has_general(c) for c in cfg.sweep.cells(cfg.detect.selection)
        )
        work.jobs += _deactivation(sizes, cfg.deactivate, cells, general)
    if cfg.save_model:
        work.disk += shape.n_params * 4
    if cfg.deactivate.mode == "mean":
        work.notes.append("mean mode's activation means are not counted")
    return work


def continual(file, sizes, shape) -> StageWork:
    jobs, notes = continual_jobs(file, sizes, shape)
    return StageWork("continual", jobs, 0.0, notes, host_copies=continual_copies(file))


def _group_sizes(cfg, sizes, which: str) -> list[list[TaskSize]]:
    by_id = {s.id: s for s in sizes}
    return [[by_id[t] for t in getattr(g, which) if t in by_id] for g in cfg.groups]


def overlap(file, sizes, shape) -> StageWork:
    work = StageWork("overlap")
    if "detect" not in file.stages():
        _scores(file, sizes, shape, work)
    work.notes.append("selection from the scores only (no model pass) when detect ran")
    return work


def generalization(file, sizes, shape) -> StageWork:
    cfg = file.generalization
    work = StageWork("generalization")
    k = float(file.detect.k)
    for train, test in zip(
        _group_sizes(cfg, sizes, "train"), _group_sizes(cfg, sizes, "test"), strict=True
    ):
        runs = [train] if "joint" in cfg.modes else []
        runs += [[s] for s in train] if "single" in cfg.modes else []
        for p in cfg.proportions:
            for run in runs:
                job = training_job(
                    run, cfg.n_train, cfg.train, trainable_of(shape, cfg.train, k * p / 100)
                )
                work.jobs.append(job)
                work.jobs += _evals(test + train, cfg.n_test, cfg.eval)
        if cfg.zero_shot:
            work.jobs += _evals(test + train, cfg.n_test, cfg.eval)
    work.notes.append("each run evaluated on its group's train and test tasks")
    return work


def controlled_overlap(file, sizes, shape) -> StageWork:
    cfg = file.controlled_overlap
    work = StageWork("controlled_overlap")
    k = float(file.detect.k)
    n = len(cfg.proportions) * len(cfg.overlaps) * len(cfg.seeds)
    for train, test in zip(
        _group_sizes(cfg, sizes, "train"), _group_sizes(cfg, sizes, "test"), strict=True
    ):
        for _ in range(n):
            work.jobs.append(
                training_job(train, cfg.n_train, cfg.train, trainable_of(shape, cfg.train, k))
            )
            work.jobs += _evals(test, cfg.n_test, cfg.eval)
    work.notes.append(f"{n} joint runs per group, each evaluated on the group's test tasks")
    return work


def similarity(file, sizes, shape) -> StageWork:
    import dataclasses

    cfg = file.similarity
    work = StageWork("similarity")
    full = dataclasses.replace(cfg.train, method="full")
    for train, test in zip(
        _group_sizes(cfg, sizes, "train"), _group_sizes(cfg, sizes, "test"), strict=True
    ):
        for s in train:
            work.jobs.append(training_job([s], cfg.n_train, full, shape.n_params))
            work.jobs += _evals(test, cfg.n_test, cfg.eval)
        if cfg.zero_shot:
            work.jobs += _evals(test, cfg.n_test, cfg.eval)
    work.notes.append("one full fine-tuning per train task; the weight comparison is not counted")
    return work


def prompts(file, sizes, shape) -> StageWork:
    cfg = file.prompts
    return StageWork("prompts", _evals(sizes, cfg.n_test, cfg.eval, len(cfg.variants)))


STAGE_WORK: dict[str, Callable] = {
    f.__name__: f
    for f in (detect, ablation_check, deactivate, table2, budget, crosstrain, sweep, multitask,
              continual, overlap, generalization, controlled_overlap, similarity, prompts)
}  # fmt: skip


def stage_work(name: str, file, sizes: list[TaskSize], shape) -> StageWork:
    """The work of stage ``name`` (a :class:`StageWork` with ``modelled=False`` if unknown)."""
    fn = STAGE_WORK.get(name)
    if fn is None:
        return StageWork(name, notes=["no cost model for this stage yet"], modelled=False)
    return fn(file, sizes, shape)
