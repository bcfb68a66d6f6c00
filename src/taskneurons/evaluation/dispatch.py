"""Evaluation: accuracy by label log-likelihood or by generation, ROUGE-L for generation tasks.

Three ways to score a model on a task:

* ``mode="score"`` (classification): for every example the log-likelihood of each label's
  answer tokens after the prompt; the prediction is the label with the highest one. The prompt
  is shared by all labels, so it is run once per example with ``use_cache=True``; the key/value
  cache is repeated once per label and the (right-padded) label tokens are scored on top of it.
  ``EvalConfig(scoring="concat")`` scores prompt+label sequences instead (one row per label),
  which needs no cache support from the model.
* ``mode="generate"`` on a classification task: greedy generation from left-padded prompts,
  cut at the first newline/EOS, compared with the gold label after normalisation (lowercase, no
  punctuation, single spaces).
* ``mode="generate"`` on a generation task: greedy generation, ROUGE-L F1 (``rouge-score``)
  against every reference of an example (the best one counts), averaged and multiplied by 100;
  a generation task that declares ``"metric": "accuracy"`` is scored by exact match with its
  ``output`` instead (see :data:`SUPPORTED_METRICS`).

:func:`evaluate` checks its arguments, resolves the mode once and runs one path: the score path
(prompts + calibration prompts -> label log-likelihoods in :mod:`.label_scoring` ->
predictions) or the generate path (prompts -> texts in :mod:`.generation` -> exact-match or
ROUGE-L predictions); both end in one :class:`EvalResult`.

Example:
    >>> model, tok = load_model("smollm2-135m")  # doctest: +SKIP
    >>> task = load_task("../shared/data/sst2")  # doctest: +SKIP
    >>> result = evaluate(model, tok, task, task.test[:50], mode="score")  # doctest: +SKIP
    >>> result.metric, result.n  # result.score is the accuracy in %  # doctest: +SKIP
    ('accuracy', 50)
    >>> result.save("results/sst2_eval.json")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import encode_prompt, pad_id_of
from taskneurons.data.tasks import Example, Task, examples_hash
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.evaluation.generation import (
    default_max_new_tokens,
    exact_match_predictions,
    generate_texts,
    rouge_predictions,
)
from taskneurons.evaluation.label_scoring import (
    label_log_likelihoods,
    label_predictions,
    label_table,
)
from taskneurons.evaluation.result import EvalResult, Mode
from taskneurons.provenance import model_fingerprint

#: The metrics a task of each kind can declare (the first is the default).
SUPPORTED_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "generation": ("rougeL", "accuracy"),
}


def check_task_metric(task: Task) -> str:
    """``task.metric`` if evaluation can score a task of its kind by it, else ``ValueError``."""
    allowed = SUPPORTED_METRICS.get(task.kind, ())
    if task.metric not in allowed:
        raise ValueError(
            f"task {task.id!r} declares metric {task.metric!r}, which a {task.kind} task "
            f"cannot be scored by; use one of {list(allowed)}"
        )
    return task.metric


def _examples_to_evaluate(task: Task, examples: Sequence[Example] | None) -> list[Example]:
    """``examples`` (default ``task.test``) as a list; raises on none or on a label-less task."""
    examples = list(task.test if examples is None else examples)
    if not examples:
        raise ValueError(f"task {task.id!r}: no examples to evaluate (empty example list)")
    if task.kind == "classification" and not task.labels:
        raise ValueError(
            f"task {task.id!r} is a classification task without labels; give task.labels"
        )
    return examples


def _resolve_mode(task: Task, mode: Mode | None) -> Mode:
    if mode is None:
        return "score" if task.kind == "classification" else "generate"
    if mode not in ("score", "generate"):
        raise ValueError(f"mode must be 'score' or 'generate', got {mode!r}")
    if mode == "score" and task.kind != "classification":
        raise ValueError(
            f"task {task.id!r} is a {task.kind} task: label scoring needs a classification task; "
            f"use mode='generate'"
        )
    return mode


def _encode_prompts(
    tokenizer, task: Task, texts: Sequence[str], prompt: PromptConfig, reserve: int
) -> list[list[int]]:
    """Prompt token ids of every input text, leaving room for ``reserve`` answer tokens."""
    return [encode_prompt(tokenizer, task, text, prompt, reserve=reserve) for text in texts]


def evaluate(
    model: nn.Module,
    tokenizer,
    task: Task,
    examples: Sequence[Example] | None = None,
    *,
    mode: Mode | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``model`` on ``examples`` (default ``task.test``) of ``task``.

    Args:
        model: a Hugging Face causal LM; put in eval mode for the evaluation and restored to
            its previous mode afterwards. Runs under ``torch.inference_mode()`` on the model's
            device.
        tokenizer: its tokenizer.
        task: the task (instruction, labels, kind).
        examples: the examples to score; ``None`` means ``task.test``.
        mode: ``score`` (classification by label log-likelihood), ``generate`` (greedy
            generation: exact match for classification, ROUGE-L for generation tasks), or
            ``None``: ``score`` for classification, ``generate`` for generation tasks.
        config: :class:`EvalConfig` (default ``EvalConfig()``).
        progress: show a tqdm bar over batches.

    Returns:
        :class:`EvalResult` with ``score`` = accuracy in % (classification) or mean ROUGE-L
        F1 x 100 (generation tasks).

    Raises:
        ValueError: no examples; a classification task without labels; ``mode="score"`` on a
            generation task; a metric the task's kind cannot be scored by.

    Example:
        >>> r = evaluate(model, tok, task, task.test[:20], mode="score", progress=False)  # doctest: +SKIP
        >>> r.metric, r.n, r.predictions[0].keys() >= {"prediction", "correct"}  # doctest: +SKIP
        ('accuracy', 20, True)
    """
    config = config or EvalConfig()
    check_task_metric(task)
    examples = _examples_to_evaluate(task, examples)
    mode = _resolve_mode(task, mode)
    path = _score_path if mode == "score" else _generate_path
    return path(model, tokenizer, task, examples, config, progress)


@dataclass(frozen=True)
class _Scored:
    """What a path scored: one prediction dict per example, their summed score (the count of
    correct answers or the summed ROUGE-L) and, with calibration, label -> log prior."""

    predictions: list[dict[str, Any]]
    total: float
    calibration: dict[str, float] | None = None


def _score_path(
    model: nn.Module,
    tokenizer,
    task: Task,
    examples: list[Example],
    config: EvalConfig,
    progress: bool,
) -> EvalResult:
    """``mode="score"``: label log-likelihoods after each prompt (and the content-free ones)."""
    table = label_table(tokenizer, task.labels, config.prompt)
    start = time.perf_counter()
    reserve = max(table.lengths)
    texts = [ex.input for ex in examples]
    if config.calibrate:
        texts += list(config.calibration_inputs)
    prompts = _encode_prompts(tokenizer, task, texts, config.prompt, reserve)
    sums = label_log_likelihoods(
        model,
        prompts,
        table,
        pad_id_of(tokenizer),
        config,
        desc=f"eval {task.id} (score)",
        progress=progress,
    )
    scored = _Scored(*label_predictions(task, examples, sums, table.lengths, config))
    return _result(model, task, examples, "score", config, scored, start)


def _generate_path(
    model: nn.Module,
    tokenizer,
    task: Task,
    examples: list[Example],
    config: EvalConfig,
    progress: bool,
) -> EvalResult:
    """``mode="generate"``: greedy answers, exact match (classification) or ROUGE-L."""
    lengths: list[int] = []
    if task.kind == "classification":
        lengths = label_table(tokenizer, task.labels, config.prompt).lengths
    max_new = config.max_new_tokens
    if max_new is None:
        max_new = default_max_new_tokens(task, lengths)
        config = replace(config, max_new_tokens=max_new)
    start = time.perf_counter()
    texts = [ex.input for ex in examples]
    prompts = _encode_prompts(tokenizer, task, texts, config.prompt, max_new)
    exact = task.metric == "accuracy"
    answers = generate_texts(
        model,
        tokenizer,
        prompts,
        pad_id_of(tokenizer),
        config,
        desc=f"eval {task.id} (generate)",
        progress=progress,
        golds=[[ex.output] for ex in examples] if exact and config.stop_when_decided else None,
    )
    if exact:
        scored = _Scored(*exact_match_predictions(examples, answers))
    else:
        scored = _Scored(*rouge_predictions(examples, answers, config.rouge_stemmer))
    return _result(model, task, examples, "generate", config, scored, start)


def _result(
    model: nn.Module,
    task: Task,
    examples: list[Example],
    mode: Mode,
    config: EvalConfig,
    scored: _Scored,
    start: float,
) -> EvalResult:
    """The :class:`EvalResult`: mean score (correct count x 100 or summed ROUGE-L) over examples.

    ``start`` is the ``time.perf_counter()`` the timed part began at.
    """
    total = scored.total
    if task.metric == "accuracy":
        total *= 100.0
    seconds = time.perf_counter() - start
    score = total / len(examples)
    if not math.isfinite(score):
        raise RuntimeError(f"task {task.id!r}: evaluation produced a non-finite score {score}")
    return EvalResult(
        task_id=task.id,
        mode=mode,
        metric=task.metric,
        score=score,
        n=len(examples),
        predictions=scored.predictions,
        config=config,
        seconds=seconds,
        examples_per_s=len(examples) / seconds if seconds > 0 else float("inf"),
        model=model_fingerprint(model),
        task_source=dict(task.source),
        data_hash=examples_hash(examples),
        calibration=scored.calibration,
    )
