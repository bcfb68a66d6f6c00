"""Greedy generation from left-padded prompts, cut at EOS and (optionally) the first newline.

:func:`generate_texts` runs the batches; :func:`exact_match_predictions` (classification) and
:func:`rouge_predictions` (generation tasks) turn the texts into predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from taskneurons.data.prompts import (
    EncodedExample,
    collate,
)
from taskneurons.data.tasks import Example, Task
from taskneurons.evaluation.eval_config import (
    GENERATION_MAX_NEW_TOKENS,
    LABEL_SLACK_TOKENS,
    EvalConfig,
)
from taskneurons.evaluation.metrics import exact_match, normalize_text, rouge_l
from taskneurons.evaluation.model_io import device_of, run_batches


def answer_decided(text: str, golds: Sequence[str] | None, stop_at_newline: bool) -> bool:
    """``True`` when no continuation of the generated ``text`` can change its answer's score.

    With ``stop_at_newline`` the answer ends at the first newline after leading blanks. With
    ``golds`` (exact-match tasks) the answer is also decided once it can no longer equal any
    gold answer: :func:`~taskneurons.evaluation.metrics.normalize_text` of a text is a prefix of
    that of any longer text, so when the normalised text so far (less its last character, which
    lower-casing may still change) is a prefix of no normalised gold, every continuation is
    wrong. A text ending in an incomplete character (U+FFFD) is never decided on that ground.

    Example:
        >>> answer_decided("Pari", ["Paris"], True), answer_decided("Lyon is", ["Paris"], True)
        (False, True)
        >>> answer_decided(" Paris\\n", None, True), answer_decided("Paris", None, True)
        (True, False)
    """
    if stop_at_newline and "\n" in text.lstrip():
        return True
    if golds is None or text.endswith("\ufffd"):
        return False
    so_far = normalize_text(text)[:-1]
    return not any(normalize_text(gold).startswith(so_far) for gold in golds)


class _AnswerStop:
    """Stop a row once :func:`answer_decided` holds for its generated text; remembers when.

    (Transformers' ``stop_strings`` needs a tokenizer that can encode ``"abcdef"`` into known
    tokens; this works with any tokenizer.) Follows the ``StoppingCriteria`` protocol:
    ``(input_ids [batch, pos], scores) -> BoolTensor [batch]``. ``done_at[row]`` is the number
    of new tokens the row had when it stopped (``None`` while it runs).
    """

    def __init__(
        self,
        tokenizer,
        prompt_width: int,
        stop_at_newline: bool,
        golds: Sequence[Sequence[str]] | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.stop_at_newline = stop_at_newline
        self.golds = golds
        self.done_at: dict[int, int] = {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.prompt_width :].tolist()  # [batch, new]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        for row, text in enumerate(texts):
            golds = None if self.golds is None else self.golds[row]
            if row not in self.done_at and answer_decided(text, golds, self.stop_at_newline):
                self.done_at[row] = len(new[row])
        done = [row in self.done_at for row in range(len(texts))]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def cut_generation(text: str, stop_at_newline: bool) -> str:
    """The answer in a generated text: up to the first newline after leading blanks, stripped.

    Example:
        >>> cut_generation("\\n Good\\nBad", True)
        'Good'
    """
    if stop_at_newline:
        text = text.lstrip().split("\n", 1)[0]
    return text.strip()


def generate_batch(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    max_new_tokens: int,
    stop_at_newline: bool,
    golds: Sequence[Sequence[str]] | None = None,
) -> list[str]:
    """Greedy continuations of left-padded prompts, cut at EOS and (optionally) a newline.

    ``golds`` (one list of gold answers per prompt, exact-match tasks) lets a row stop as soon
    as its answer is decided (:func:`answer_decided`): the scores are those of the full greedy
    text, and the returned text of such a row is the prefix generated up to that point.
    """
    device = device_of(model)
    enc = [EncodedExample(tuple(p), len(p)) for p in prompts]
    batch = collate(enc, pad_id, padding_side="left")
    ids = batch["input_ids"].to(device)  # [batch, P]
    mask = batch["attention_mask"].to(device)  # [batch, P]
    eos = getattr(tokenizer, "eos_token_id", None)
    gen_kwargs: dict[str, Any] = {
        "do_sample": False,
        "max_new_tokens": max_new_tokens,
        "pad_token_id": pad_id,
        "num_beams": 1,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    if eos is not None:
        gen_kwargs["eos_token_id"] = eos
    stop = None
    if stop_at_newline or golds is not None:
        from transformers import StoppingCriteriaList

        stop = _AnswerStop(tokenizer, ids.shape[1], stop_at_newline, golds)
        gen_kwargs["stopping_criteria"] = StoppingCriteriaList([stop])
    out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
    new = out[:, ids.shape[1] :]  # [batch, new]
    stops = {eos} if eos is not None else set()
    texts = []
    for i, row in enumerate(new.tolist()):
        if stop is not None and i in stop.done_at:
            row = row[: stop.done_at[i]]  # what follows is padding
        cut = next((j for j, t in enumerate(row) if t in stops), len(row))
        text = tokenizer.decode(row[:cut], skip_special_tokens=True)
        texts.append(cut_generation(text, stop_at_newline))
    return texts


def default_max_new_tokens(task: Task, label_lengths: Sequence[int]) -> int:
    """New-token budget when ``EvalConfig.max_new_tokens`` is ``None``.

    The longest label plus :data:`LABEL_SLACK_TOKENS` (classification; ``label_lengths`` in
    tokens), else :data:`GENERATION_MAX_NEW_TOKENS`.
    """
    if task.kind == "classification":
        return max(label_lengths) + LABEL_SLACK_TOKENS
    return GENERATION_MAX_NEW_TOKENS


def generate_texts(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    config: EvalConfig,
    *,
    desc: str,
    progress: bool,
    golds: Sequence[Sequence[str]] | None = None,
) -> list[str]:
    """Greedy answer of every prompt (see :func:`generate_batch`), in the order of ``prompts``.

    Up to ``config.max_new_tokens`` new tokens each (which must be set; ``evaluate`` sets it to
    :func:`default_max_new_tokens` when it is ``None``). ``golds``: the gold answers of each
    prompt, for the early stop of exact-match tasks.
    """
    max_new_tokens = config.max_new_tokens
    if max_new_tokens is None:
        raise ValueError("generate_texts needs config.max_new_tokens; see default_max_new_tokens")
    rows = list(range(len(prompts)))

    def step(chunk: list[int]) -> list[str]:
        return generate_batch(
            model,
            tokenizer,
            [prompts[i] for i in chunk],
            pad_id,
            max_new_tokens,
            config.stop_at_newline,
            None if golds is None else [golds[i] for i in chunk],
        )

    return run_batches(
        model,
        rows,
        step,
        batch_size=config.batch_size,
        sort_by_length=config.sort_by_length,
        desc=desc,
        progress=progress,
        length=lambda i: len(prompts[i]),
    )


def exact_match_predictions(
    examples: Sequence[Example], texts: Sequence[str]
) -> tuple[list[dict[str, Any]], float]:
    """``(predictions, correct)``: generated labels against the gold labels by exact match.

    Example:
        >>> preds, correct = exact_match_predictions([Example("x", "Good")], ["good."])
        >>> correct, preds[0]["correct"]
        (1.0, True)
    """
    predictions: list[dict[str, Any]] = []
    total = 0.0
    for ex, text in zip(examples, texts, strict=True):
        correct = exact_match(text, ex.output)
        total += correct
        predictions.append(
            {"input": ex.input, "gold": ex.output, "prediction": text, "correct": correct}
        )
    return predictions, total


def rouge_predictions(
    examples: Sequence[Example], texts: Sequence[str], use_stemmer: bool
) -> tuple[list[dict[str, Any]], float]:
    """``(predictions, total)``: ROUGE-L F1 x 100 of each text against its best reference.

    ``total`` is the sum of the per-example scores (each in [0, 100]).
    """
    predictions: list[dict[str, Any]] = []
    total = 0.0
    for ex, text in zip(examples, texts, strict=True):
        refs = list(ex.all_references)
        value = 100.0 * rouge_l(text, refs, use_stemmer=use_stemmer)
        total += value
        predictions.append({"input": ex.input, "gold": refs, "prediction": text, "score": value})
    return predictions, total
