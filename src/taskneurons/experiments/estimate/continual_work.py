"""The continual stage's work: every seed, every method, the references once, the lr grid.

The count follows :mod:`taskneurons.experiments.continual`: the single-task references A(i)
and the zero-shot scores b(i) once (one cache serves every seed and method); per seed and run
label, each stage trains the method on its task (``neurons`` methods score the task first),
W-NCFT / EPI read the task's vector or prototype from up to ``n_vector_samples`` train inputs
(counted once per task and feature settings: one cache file keeps them for every method and
seed that shares it, :mod:`taskneurons.continual.vector_cache`), and the seen tasks (all of
them with ``eval_unseen``) are scored; after the last stage the held-out tasks are scored. W-NCFT inferred shares W-NCFT's training and scores on its own.
With ``tune``, every candidate of every method's grid runs the tuning order scored on the
validation split, unless the choice file already holds that method's choice.

Example:
    >>> jobs, notes = continual_jobs(experiment_file, sizes, shape)  # doctest: +SKIP
    >>> sorted({j.kind for j in jobs})  # doctest: +SKIP
    ['attribution', 'forward', 'train_full', 'train_lora', 'train_neurons']
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from taskneurons.experiments.continual.tune_config import (
    candidate_folder,
    candidates,
    tuning_label,
)
from taskneurons.experiments.estimate.work import (
    Job,
    TaskSize,
    evaluation_jobs,
    scoring_job,
    trainable_of,
    training_job,
)

#: how each method trains (the cost of its step)
TRAINING_KIND = {"seqft": "full", "pertask": "full", "migu": "full", "seqlora": "lora",
                 "olora": "lora", "epi": "lora", "ncft": "neurons", "wncft": "neurons"}  # fmt: skip


def _evals(sizes: list[TaskSize], n: int | None, eval_cfg) -> list[Job]:
    out = []
    for s in sizes:
        out += evaluation_jobs(
            s, n, eval_cfg.batch_size, eval_cfg.max_new_tokens, eval_cfg.stop_when_decided
        )
    return out


def _vector_job(size: TaskSize, method: Any) -> Job:
    """The forward passes behind a task's vector (W-NCFT) or prototype (EPI)."""
    n = min(method.n_vector_samples, size.n_train)
    batch = method.feature_batch_size
    return Job("forward", -(-n // batch), n * size.prompt, size.prompt, min(n, batch) * size.prompt)


def _vector_key(size: TaskSize, method: Any) -> tuple:
    """What a task vector depends on beyond the base model (its cache key, in effect)."""
    return (size.id, method.seed, method.n_vector_samples, method.feature_batch_size,
            method.feature_max_length)  # fmt: skip


def _run_jobs(
    label: str, cfg, order: list[TaskSize], held: list[TaskSize], shape, vectors: set
) -> list[Job]:
    """One run of one label over ``order``: training, vectors and scoring at every stage;
    ``vectors``: the keys of the task vectors counted so far (one cache file keeps each)."""
    method = cfg.method
    train = dataclasses.replace(cfg.train, method=TRAINING_KIND.get(method.name, "full"))
    trainable = trainable_of(shape, train, getattr(method, "k", 0.0))
    trains = not label.endswith("-inferred")  # inferred shares W-NCFT's training
    jobs: list[Job] = []
    for i, s in enumerate(order):
        if trains:
            jobs.append(training_job([s], cfg.n_train, train, trainable))
            if train.method == "neurons":
                att = method.attribution
                jobs.append(scoring_job(s, att.n_examples, att.batch_size, att.checkpointing))
            if hasattr(method, "n_vector_samples") and _vector_key(s, method) not in vectors:
                vectors.add(_vector_key(s, method))
                jobs.append(_vector_job(s, method))
        seen = order if cfg.eval_unseen else order[: i + 1]
        jobs += _evals(seen, _scored(cfg), cfg.eval)
    return jobs + _evals(held, cfg.n_test, cfg.eval)


def _scored(cfg) -> int | None:
    """Examples scored per task: the validation split when tuning, else the test examples."""
    return cfg.n_val if cfg.score_on == "validation" else cfg.n_test


def _references(cfg, order: list[TaskSize], held: list[TaskSize], shape) -> list[Job]:
    """A(i): single-task training and its score; b(i): zero-shot scores (held-out tasks too)."""
    jobs = []
    for s in order:
        jobs.append(training_job([s], cfg.n_train, cfg.single_train, shape.n_params))
        jobs += _evals([s], _scored(cfg), cfg.eval) * 2
    return jobs + _evals(held, cfg.n_test, cfg.eval)


def _validation(sizes: list[TaskSize], n_val: int) -> list[TaskSize]:
    return [dataclasses.replace(s, n_test=n_val) for s in sizes]


def _recorded(choice_file: str | None) -> set[str]:
    """The methods whose choice the choice file already holds (their grid does not run)."""
    path = Path(choice_file) if choice_file else None
    if path is None or not path.is_file():
        return set()
    return set(json.loads(path.read_text(encoding="utf-8")).get("methods", {}))


def _finished(folder: Path) -> bool:
    """Whether a continual run in ``folder`` finished (it is read back, not run again)."""
    return (folder / "result.json").is_file()


def tuning_runs(cfg, by_id: dict[str, TaskSize], shape, out: Path) -> tuple[list, list[Job]]:
    """``([(label, values, jobs, finished)] of every grid candidate not yet chosen, the
    validation references' jobs)`` of the suite config ``cfg`` (its ``tune`` section) run in
    ``out``; ``finished``: the candidate's folder holds its result (a resumed grid reads it)."""
    tune = cfg.tune
    labels, done = cfg.labels(), _recorded(tune.choice_file)
    order_ids = tune.order or cfg.order or [t for t in by_id if t not in (cfg.held_out or [])]
    val = _validation([by_id[t] for t in order_ids], tune.n_val)
    runs, base, vectors = [], None, set()
    for label, run in cfg.runs():
        if tuning_label(label, labels) != label or label in done:
            continue
        base = run.replace(
            order=order_ids, score_on="validation", n_val=tune.n_val, eval_unseen=False,
            held_out=None,
        )  # fmt: skip
        for values in candidates(tune, label):
            cand = base.replace(train=base.train.replace(**values))
            jobs = _run_jobs(label, cand, val, [], shape, vectors)
            runs.append(
                (label, values, jobs, _finished(candidate_folder(tune, out, label, values)))
            )
    return runs, (_references(base, val, [], shape) if base is not None else [])


def _tuning(cfg, by_id: dict[str, TaskSize], shape, out: Path) -> tuple[list[Job], str]:
    """The grid's candidates still to run, with the validation references."""
    runs, refs = tuning_runs(cfg, by_id, shape, out)
    left = [jobs for _, _, jobs, finished in runs if not finished]
    done = _recorded(cfg.tune.choice_file)
    held = f"{len(done)} methods' choices read from {cfg.tune.choice_file}; " if done else ""
    finished = f" ({len(runs) - len(left)} finished: read back)" if len(left) < len(runs) else ""
    note = f"lr grid: {held}{len(runs)} candidate runs on the validation split{finished}"
    return [j for jobs in left for j in jobs] + (refs if left else []), note


def _suite_runs(cfg, out: Path, resume: bool) -> tuple[list[tuple[str, Any]], int]:
    """Each seed's runs still to do (``resume``: a finished one is read back) and the count
    of finished ones."""
    roots = [(out / f"seed{s}", cfg.for_seed(s)) for s in cfg.seeds] if cfg.seeds else [(out, cfg)]
    todo, finished = [], 0
    for root, seeded in roots:
        for label, run in seeded.runs():
            if resume and _finished(root / label):
                finished += 1
            else:
                todo.append((label, run))
    return todo, finished


def continual_jobs(file, sizes: list[TaskSize], shape) -> tuple[list[Job], list[str]]:
    """The jobs of the ``continual`` stage of ``file`` and the notes on their count."""
    cfg = file.continual
    by_id = {s.id: s for s in sizes}
    held = [by_id[t] for t in cfg.held_out or []]
    order = [by_id[t] for t in cfg.order or [s.id for s in sizes if s not in held]]
    out = Path(file.out)
    runs = cfg.runs()
    seeds = len(cfg.seeds or [cfg.seed])
    only = cfg.tune is not None and cfg.tune.only  # the grid alone: no run on the test split
    jobs = [] if only else _references(runs[0][1], order, held, shape)
    todo, finished = ([], 0) if only else _suite_runs(cfg, out, bool(file.resume))
    vectors: set = set()
    for label, run in todo:
        jobs += _run_jobs(label, run, order, held, shape, vectors)
    notes = (
        ["tune.only: the lr grid alone, no run on the test split"]
        if only
        else [
            f"{seeds} seed(s) x {len(runs)} runs; references once (shared cache; counted even when "
            "cached); pertask counted as training every stage",
            "W-NCFT inferred's per-example features and EPI's routing forwards are not counted; "
            "task vectors once per task and settings (shared cache; counted even when cached)",
        ]
    )
    if finished:
        notes.append(f"{finished} finished (seed, method) runs in {out}: read back (resume)")
    if cfg.tune is not None:
        tune_jobs, note = _tuning(cfg, by_id, shape, out)
        jobs += tune_jobs
        notes.append(note)
    return jobs, notes


def continual_copies(file) -> int:
    """Copies of the model's weights the continual stage holds in host memory at its peak:
    the suite's snapshot of the model it restores between methods, one more with seeds or a
    grid (the snapshot the seeds, or the grid, restore from), and per-task FT's base and one
    model per task while it runs (the other methods keep a small share: adapters, neuron
    versions, not counted).

    Example:
        >>> continual_copies(file)  # doctest: +SKIP
        7
    """
    cfg = file.continual
    outer = 1 if (cfg.seeds or cfg.tune is not None) else 0
    labels = {label for label, _ in cfg.runs()}
    n_tasks = max(len(cfg.order or []), len(cfg.tune.order or []) if cfg.tune else 0)
    if not n_tasks:
        n_tasks = len(file.tasks) - len(cfg.held_out or [])
    return 1 + outer + ((1 + n_tasks) if "pertask" in labels else 0)
