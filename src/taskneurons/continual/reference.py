"""Reference scores of a continual run, cached: A(i) (task i trained alone) and zero-shot b(i).

``A(i)`` is the score on task ``i`` of the base model fine-tuned on task ``i`` alone (the
experiment's ``single_train`` knobs: ``full`` by default, or ``lora``, merged); FG_j divides
by it. ``b(i)`` is the base model's zero-shot score; FWT subtracts it. Both are the same for
every method of a comparison, so they are computed once and kept in a JSON cache keyed by the
SHA-256 of: the kind, the model fingerprint (architecture and weights), the task id, the
hashes of its train and test examples, the training config (``A(i)`` only) and the eval
config. The base model (weights, ``requires_grad`` flags, modules) is restored after each
training (:func:`~taskneurons.training.trained.trained`).

Example:
    >>> refs = reference_scores(model, tok, tasks, test, TrainConfig(method="full"), EvalConfig(),
    ...                         "out/reference_cache.json")  # doctest: +SKIP
    >>> refs.single["sst2"], refs.zero_shot["sst2"], refs.cache_hits  # doctest: +SKIP
    (91.0, 52.0, 0)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.data.tasks import Example, Task, examples_hash
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.provenance import model_fingerprint
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
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cache(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a readable reference cache ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a reference cache (format {FORMAT!r})")
    return dict(data.get("entries", {}))


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
    path = Path(cache_path)
    entries = _read_cache(path)
    fp = model_fingerprint(model)
    model_id = {k: fp.get(k) for k in ("model_type", "arch", "weights", "n_params")}
    out: dict[str, dict[str, float]] = {"single": {}, "zero_shot": {}}
    hits = 0
    for task in tasks:
        data = {
            "task": task.id,
            "train_hash": examples_hash(task.train),
            "test_hash": examples_hash(list(test[task.id])),
        }
        for kind in ("zero_shot", "single"):
            record = {"kind": kind, "model": model_id, **data, "eval": eval_config.to_dict()}
            if kind == "single":
                record["train"] = train_config.to_dict()
            key = reference_key(record)
            if key in entries:
                hits += 1
            else:
                if kind == "single":
                    score = _single_score(
                        model, tokenizer, task, test[task.id], train_config, eval_config, progress
                    )
                else:
                    res = evaluate(
                        model, tokenizer, task, test[task.id], config=eval_config, progress=False
                    )
                    score = res.score
                entries[key] = {"score": score, "record": record}
                write_json_atomic(path, {"format": FORMAT, "entries": entries})
            out[kind][task.id] = float(entries[key]["score"])
    return ReferenceScores(out["single"], out["zero_shot"], hits, path)
