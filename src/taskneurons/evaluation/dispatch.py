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
  against every reference of an example (the best one counts), averaged and multiplied by 100.

Example:
    >>> model, tok = load_model("smollm2-135m")  # doctest: +SKIP
    >>> task = load_task("../shared/data/sst2")  # doctest: +SKIP
    >>> result = evaluate(model, tok, task, task.test[:50], mode="score")  # doctest: +SKIP
    >>> result.metric, result.n  # result.score is the accuracy in %  # doctest: +SKIP
    ('accuracy', 50)
    >>> result.save("results/sst2_eval.json")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from taskneurons.data.prompts import (
    encode_prompt,
    pad_id_of,
)
from taskneurons.data.tasks import Example, Task, examples_hash
from taskneurons.evaluation.generation import _generate_batch
from taskneurons.evaluation.label_scoring import (
    _forward_params,
    _label_table,
    _score_batch_cache,
    _score_batch_concat,
)
from taskneurons.evaluation.metrics import content_free_log_prior, exact_match, rouge_l
from taskneurons.evaluation.result import (
    GENERATION_MAX_NEW_TOKENS,
    LABEL_SLACK_TOKENS,
    EvalConfig,
    EvalResult,
    Mode,
)
from taskneurons.provenance import model_fingerprint

log = logging.getLogger(__name__)


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


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


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
            generation task.

    Example:
        >>> r = evaluate(model, tok, task, task.test[:20], mode="score", progress=False)  # doctest: +SKIP
        >>> r.metric, r.n, r.predictions[0].keys() >= {"prediction", "correct"}  # doctest: +SKIP
        ('accuracy', 20, True)
    """
    from tqdm.auto import tqdm

    config = config or EvalConfig()
    examples = list(task.test if examples is None else examples)
    if not examples:
        raise ValueError(f"task {task.id!r}: no examples to evaluate (empty example list)")
    if task.kind == "classification" and not task.labels:
        raise ValueError(
            f"task {task.id!r} is a classification task without labels; give task.labels"
        )
    mode = _resolve_mode(task, mode)
    pad = pad_id_of(tokenizer)
    pcfg = config.prompt
    params = _forward_params(model)

    label_ids = label_mask = None
    label_lengths: list[int] = []
    if task.kind == "classification":
        label_ids, label_mask, label_lengths = _label_table(tokenizer, task.labels, pcfg)
    if mode == "score":
        reserve = max(label_lengths)
    else:
        max_new = config.max_new_tokens
        if max_new is None:
            max_new = (
                max(label_lengths) + LABEL_SLACK_TOKENS
                if task.kind == "classification"
                else GENERATION_MAX_NEW_TOKENS
            )
        reserve = max_new
        if config.max_new_tokens is None:
            config = replace(config, max_new_tokens=max_new)

    start = time.perf_counter()
    prompts = [encode_prompt(tokenizer, task, ex.input, pcfg, reserve=reserve) for ex in examples]
    cf_prompts = []
    if mode == "score" and config.calibrate:
        cf_prompts = [
            encode_prompt(tokenizer, task, text, pcfg, reserve=reserve)
            for text in config.calibration_inputs
        ]
    all_prompts = prompts + cf_prompts
    order = list(range(len(all_prompts)))
    if config.sort_by_length:
        order.sort(key=lambda i: -len(all_prompts[i]))
    batches = _batches(order, config.batch_size)

    sums: list[torch.Tensor | None] = [None] * len(all_prompts)
    texts: list[str | None] = [None] * len(all_prompts)
    use_cache = config.scoring == "cache"
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            bar = tqdm(batches, desc=f"eval {task.id} ({mode})", disable=not progress, leave=False)
            for idx in bar:
                chunk = [all_prompts[i] for i in idx]
                if mode == "score":
                    ll = None
                    if use_cache:
                        ll = _score_batch_cache(model, chunk, label_ids, label_mask, pad, params)
                        if ll is None:
                            log.warning(
                                "%s returned no repeatable KV cache; scoring labels by "
                                "concatenation instead",
                                type(model).__name__,
                            )
                            use_cache = False
                    if ll is None:
                        ll = _score_batch_concat(model, chunk, label_ids, label_lengths, pad)
                    for row, i in enumerate(idx):
                        sums[i] = ll[row].cpu()
                else:
                    out = _generate_batch(
                        model, tokenizer, chunk, pad, reserve, config.stop_at_newline
                    )
                    for row, i in enumerate(idx):
                        texts[i] = out[row]
    finally:
        model.train(was_training)

    predictions: list[dict[str, Any]] = []
    calibration: dict[str, float] | None = None
    total = 0.0
    if mode == "score":
        lengths = torch.tensor(label_lengths, dtype=torch.float32)  # [labels]
        ranked_all = torch.stack(sums)  # [examples + content-free, labels]
        if config.length_normalize:
            ranked_all = ranked_all / lengths
        ranked_ex = ranked_all[: len(examples)]  # [examples, labels]
        if cf_prompts:
            log_prior = content_free_log_prior(ranked_all[len(examples) :])  # [labels]
            ranked_ex = ranked_ex - log_prior
            calibration = dict(zip(task.labels, log_prior.tolist(), strict=True))
        for ex, ll, ranked in zip(examples, sums[: len(examples)], ranked_ex, strict=True):
            pred = task.labels[int(torch.argmax(ranked))]
            correct = pred == ex.output
            total += correct
            predictions.append(
                {
                    "input": ex.input,
                    "gold": ex.output,
                    "prediction": pred,
                    "correct": correct,
                    "log_likelihoods": dict(zip(task.labels, ll.tolist(), strict=True)),
                    "label_scores": dict(zip(task.labels, ranked.tolist(), strict=True)),
                }
            )
    elif task.kind == "classification":
        for ex, text in zip(examples, texts, strict=True):
            correct = exact_match(text, ex.output)
            total += correct
            predictions.append(
                {"input": ex.input, "gold": ex.output, "prediction": text, "correct": correct}
            )
    else:
        for ex, text in zip(examples, texts, strict=True):
            refs = list(ex.all_references)
            value = 100.0 * rouge_l(text, refs, use_stemmer=config.rouge_stemmer)
            total += value
            predictions.append(
                {"input": ex.input, "gold": refs, "prediction": text, "score": value}
            )
    if task.kind == "classification":
        total *= 100.0
    seconds = time.perf_counter() - start
    score = total / len(examples)
    if not math.isfinite(score):
        raise RuntimeError(f"task {task.id!r}: evaluation produced a non-finite score {score}")
    return EvalResult(
        task_id=task.id,
        mode=mode,
        metric="accuracy" if task.kind == "classification" else "rougeL",
        score=score,
        n=len(examples),
        predictions=predictions,
        config=config,
        seconds=seconds,
        examples_per_s=len(examples) / seconds if seconds > 0 else float("inf"),
        model=model_fingerprint(model),
        task_source=dict(task.source),
        data_hash=examples_hash(examples),
        calibration=calibration,
    )
