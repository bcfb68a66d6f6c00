"""Reference scores of a continual run, cached: A(i) (task i trained alone) and zero-shot b(i).

``A(i)`` is the score on task ``i`` of the base model fine-tuned on task ``i`` alone (the
experiment's ``single_train`` knobs: ``full`` by default, or ``lora``, merged); FG_j divides
by it. ``b(i)`` is the base model's zero-shot score; FWT subtracts it. Both are the same for
every method of a comparison, so they are computed once and kept in a JSON cache keyed by the
SHA-256 of: the kind, the model fingerprint (architecture and weights), the task id, the
hashes of its train and test examples, the training config (``A(i)`` only) and the eval
config. The cache file carries the checksum of its content, verified when it is read. The base
model (weights, ``requires_grad`` flags, modules) is restored after each training
(:func:`~taskneurons.training.trained.trained`).

Example:
    >>> refs = reference_scores(model, tok, tasks, test, TrainConfig(method="full"), EvalConfig(),
    ...                         "out/reference_cache.json")  # doctest: +SKIP
    >>> refs.single["sst2"], refs.zero_shot["sst2"], refs.cache_hits  # doctest: +SKIP
    (91.0, 52.0, 0)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from taskneurons.data.tasks import Example, Task, examples_hash
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.provenance import model_fingerprint
from taskneurons.store.cache import SettingsCache
from taskneurons.store.settings import SettingsKey, model_identity
from taskneurons.training.train_config import TrainConfig
from taskneurons.training.trained import trained

#: format tag of the cache file
FORMAT = "taskneurons.ReferenceScores/1"


@dataclass
class ReferenceScores:
    """``single`` (A(i)) and ``zero_shot`` (b(i)) by task id; cache hits of this call."""

    single: dict[str, float]
    zero_shot: dict[str, float]
    cache_hits: int
    cache_path: Path


def reference_key(record: Mapping) -> str:
    """The cache key of a record (SHA-256 of its sorted JSON, 32 hex digits)."""
    return SettingsKey.of(**record).digest()


def single_train_config(cfg: TrainConfig) -> TrainConfig:
    """The training behind A(i) for ``single_train`` = ``cfg``: as given, merged when LoRA.

    Per-task FT compares its own stage configs with this one to know when a stage would
    repeat the training of A(i) (:meth:`~taskneurons.continual.strategies.pertask.PerTaskFT.reference_stages`).

    Example:
        >>> single_train_config(TrainConfig(method="lora")).merge
        True
    """
    return dataclasses.replace(cfg, merge=True) if cfg.method == "lora" else cfg


def _single_score(
    model: nn.Module, tokenizer, task: Task, test: Sequence[Example], cfg: TrainConfig,
    eval_cfg: EvalConfig, progress: bool,
) -> float:  # fmt: skip
    """Train the base model on ``task`` alone, score it, put the base back (:func:`trained`)."""
    with trained(model, tokenizer, [task], single_train_config(cfg), progress=progress) as res:
        return evaluate(res.model, tokenizer, task, test, config=eval_cfg, progress=False).score


def reference_scores(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[Task],
    test: Mapping[str, Sequence[Example]],
    train_config: TrainConfig,
    eval_config: EvalConfig,
    cache_path: str | os.PathLike,
    progress: bool = False,
) -> ReferenceScores:
    """A(i) and b(i) of every task, from the cache where it has them (then written back).

    Args:
        model: the base model (unchanged on return).
        tokenizer: its tokenizer.
        tasks: the tasks, with the train examples a stage uses.
        test: task id -> the test examples every score uses.
        train_config: the single-task training (``full`` or ``lora``).
        eval_config: how tasks are scored.
        cache_path: the JSON cache file (created when missing).
        progress: show training progress bars.
    """
    cache = SettingsCache(cache_path, FORMAT, "reference cache", sealed=True)
    model_id = model_identity(model_fingerprint(model))
    out: dict[str, dict[str, float]] = {"single": {}, "zero_shot": {}}
    hits = 0
    for task in tasks:
        data = {
            "task": task.id,
            "train_hash": examples_hash(task.train),
            "test_hash": examples_hash(list(test[task.id])),
        }
        for kind in ("zero_shot", "single"):
            extra = {"train": train_config.to_dict()} if kind == "single" else {}
            key = SettingsKey.of(
                kind=kind, model=model_id, **data, eval=eval_config.to_dict(), **extra
            )
            entry = cache.get(key)
            hits += entry is not None
            if entry is None:
                if kind == "single":
                    score = _single_score(
                        model, tokenizer, task, test[task.id], train_config, eval_config, progress
                    )
                else:
                    res = evaluate(
                        model, tokenizer, task, test[task.id], config=eval_config, progress=False
                    )
                    score = res.score
                entry = cache.put(key, {"score": score})
            out[kind][task.id] = float(entry["score"])
    return ReferenceScores(out["single"], out["zero_shot"], hits, cache.path)


def zero_shot_scores(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[Task],
    test: Mapping[str, Sequence[Example]],
    eval_config: EvalConfig,
    cache_path: str | os.PathLike,
) -> dict[str, float]:
    """b(i) of every task alone (held-out tasks: no single-task training), from and into the
    same cache as :func:`reference_scores` (same keys).

    Example:
        >>> zero_shot_scores(model, tok, [mmlu], test, EvalConfig(), "out/cache.json")  # doctest: +SKIP
        {'mmlu': 27.0}
    """
    cache = SettingsCache(cache_path, FORMAT, "reference cache", sealed=True)
    model_id = model_identity(model_fingerprint(model))
    out = {}
    for task in tasks:
        key = SettingsKey.of(
            kind="zero_shot", model=model_id, task=task.id,
            train_hash=examples_hash(task.train), test_hash=examples_hash(list(test[task.id])),
            eval=eval_config.to_dict(),
        )  # fmt: skip
        entry = cache.get(key)
        if entry is None:
            res = evaluate(
                model, tokenizer, task, test[task.id], config=eval_config, progress=False
            )
            entry = cache.put(key, {"score": res.score})
        out[task.id] = float(entry["score"])
    return out
