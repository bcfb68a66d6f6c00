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

import inspect
import json
import logging
import math
import os
import re
import string
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from taskneurons._io import provenance, write_json_atomic
from taskneurons.data.prompts import (
    EncodedExample,
    PromptConfig,
    collate,
    encode_answer,
    encode_prompt,
    pad_id_of,
)
from taskneurons.data.tasks import Example, Task, examples_hash

log = logging.getLogger(__name__)

Mode = Literal["score", "generate"]

#: Extra new tokens allowed beyond the longest label in ``generate`` mode on classification.
LABEL_SLACK_TOKENS = 4
#: Default ``max_new_tokens`` for generation tasks.
GENERATION_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class EvalConfig:
    """How a task is evaluated.

    Attributes:
        prompt: how examples become token sequences (see :class:`PromptConfig`).
        batch_size: examples per forward (``score`` mode runs ``batch_size x labels`` label rows
            on top of ``batch_size`` prompts).
        length_normalize: ``score`` mode ranks labels by the mean log-probability per answer
            token (nats/token) instead of the sum (nats).
        max_new_tokens: generation length limit in tokens; ``None``: the longest label plus
            :data:`LABEL_SLACK_TOKENS` for classification, :data:`GENERATION_MAX_NEW_TOKENS`
            for generation tasks.
        scoring: ``cache`` (prompt once, labels through the repeated KV cache) or ``concat``
            (one prompt+label row per label). ``cache`` falls back to ``concat`` when the model
            returns no repeatable cache.
        stop_at_newline: cut generated text at the first newline (and stop generating there).
        rouge_stemmer: use the Porter stemmer in ROUGE-L (``rouge-score``'s ``use_stemmer``).
        sort_by_length: batch examples of similar length together (results keep input order).
        calibrate: ``score`` mode subtracts each label's log prior measured on content-free
            inputs (contextual calibration, Zhao et al. 2021, "Calibrate Before Use"): the
            label scores of every ``calibration_inputs`` text are turned into probabilities over
            the labels, averaged, and their log is subtracted from every example's scores.
        calibration_inputs: the content-free inputs (Zhao et al.'s ``N/A``, empty, ``[MASK]``).

    Example:
        >>> EvalConfig(batch_size=4, length_normalize=True).to_dict()["prompt"]["max_length"]
        512
    """

    prompt: PromptConfig = field(default_factory=PromptConfig)
    batch_size: int = 8
    length_normalize: bool = False
    max_new_tokens: int | None = None
    scoring: Literal["cache", "concat"] = "cache"
    stop_at_newline: bool = True
    rouge_stemmer: bool = False
    sort_by_length: bool = True
    calibrate: bool = False
    calibration_inputs: tuple[str, ...] = ("N/A", "", "[MASK]")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"EvalConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(
                f"EvalConfig.max_new_tokens must be >= 1 or None, got {self.max_new_tokens}"
            )
        if self.scoring not in ("cache", "concat"):
            raise ValueError(
                f"EvalConfig.scoring must be 'cache' or 'concat', got {self.scoring!r}"
            )
        if self.calibrate and not self.calibration_inputs:
            raise ValueError("EvalConfig.calibrate needs at least one calibration input")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the prompt config nested as a dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EvalConfig keys {unknown}; known keys: {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("prompt"), dict):
            data["prompt"] = PromptConfig(**data["prompt"])
        if "calibration_inputs" in data:
            data["calibration_inputs"] = tuple(data["calibration_inputs"])
        return cls(**data)


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate`.

    Attributes:
        task_id: the task's id.
        mode: ``score`` or ``generate``.
        metric: ``accuracy`` (score in %) or ``rougeL`` (mean best-reference ROUGE-L F1 x 100).
        score: the metric value, in [0, 100].
        n: number of examples.
        predictions: one dict per example, in input order: ``input``, ``gold`` (label, or the
            list of references for generation tasks), ``prediction``, ``correct`` (bool,
            classification) or ``score`` (ROUGE-L F1 x 100, generation); in ``score`` mode also
            ``log_likelihoods`` (label -> summed log-probability, nats) and ``label_scores``
            (label -> the value ranked: the sum, or the per-token mean when length-normalised,
            minus the calibration log prior when calibrated).
        config: the :class:`EvalConfig` used.
        seconds: wall-clock time of the evaluation (s).
        examples_per_s: ``n / seconds``.
        model: the model fingerprint (:func:`taskneurons.models.loading.model_fingerprint`).
        task_source: ``task.source`` (where the task came from).
        data_hash: :func:`taskneurons.data.tasks.examples_hash` of the evaluated examples.
        calibration: label -> log prior subtracted from the label scores (``calibrate=True``),
            else ``None``.
    """

    task_id: str
    mode: str
    metric: str
    score: float
    n: int
    predictions: list[dict[str, Any]]
    config: EvalConfig
    seconds: float
    examples_per_s: float
    model: dict[str, Any] = field(default_factory=dict)
    task_source: dict[str, Any] = field(default_factory=dict)
    data_hash: str = ""
    calibration: dict[str, float] | None = None

    def gold_nll(self) -> float | None:
        """Mean negative log-likelihood of the gold label (nats per example), or ``None``.

        The sum over the gold label's tokens of ``-log p`` given the prompt, averaged over the
        examples: a continuous companion to accuracy that still moves when the model is at
        chance (calibration does not change it). ``None`` in ``generate`` mode.

        Example:
            >>> res = evaluate(model, tok, task, task.test[:50])  # doctest: +SKIP
            >>> res.score, res.gold_nll()  # doctest: +SKIP
            (50.0, 0.71)
        """
        if self.mode != "score" or not self.predictions:
            return None
        values = []
        for p in self.predictions:
            ll = p.get("log_likelihoods")
            if ll is None or p.get("gold") not in ll:
                return None
            values.append(-float(ll[p["gold"]]))
        return sum(values) / len(values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["config"] = self.config.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict` (extra keys such as ``provenance`` are ignored)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["config"] = EvalConfig.from_dict(kwargs.get("config", {}))
        return cls(**kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON atomically, with a ``provenance`` record.

        The provenance holds the model fingerprint, the task source, the data hash and the
        config, plus the command line, time and library versions.

        Example:
            >>> result.save("results/sst2.json")  # doctest: +SKIP
        """
        record = self.to_dict()
        record["provenance"] = provenance(
            model=self.model,
            task=self.task_id,
            task_source=self.task_source,
            data_hash=self.data_hash,
            n_examples=self.n,
            config=self.config.to_dict(),
        )
        return write_json_atomic(path, record)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalResult:
        """Read a result written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a valid JSON result file ({exc})") from exc
        return cls.from_dict(data)


# ---------------------------------------------------------------------------------------------
# Text metrics


_PUNCT_RE = re.compile(f"[{re.escape(string.punctuation)}]")
_SPACE_RE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lowercase, drop ASCII punctuation, collapse whitespace, strip.

    Example:
        >>> normalize_text("  Good!\\n")
        'good'
    """
    return _SPACE_RE.sub(" ", _PUNCT_RE.sub(" ", text.lower())).strip()


def exact_match(prediction: str, gold: str) -> bool:
    """``True`` when ``prediction`` equals ``gold`` after :func:`normalize_text`.

    Example:
        >>> exact_match("Bad.", "bad")
        True
    """
    return normalize_text(prediction) == normalize_text(gold)


def rouge_l(prediction: str, references: Sequence[str], use_stemmer: bool = False) -> float:
    """ROUGE-L F1 of ``prediction`` against the best of ``references``, in [0, 1].

    Uses ``rouge_score.rouge_scorer.RougeScorer(["rougeL"])``.

    Example:
        >>> round(rouge_l("the cat sat", ["a cat sat down", "the cat sat"]), 3)
        1.0
    """
    if not references:
        raise ValueError("rouge_l needs at least one reference")
    scorer = _rouge_scorer(use_stemmer)
    return max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in references)


_SCORERS: dict[bool, Any] = {}


def _rouge_scorer(use_stemmer: bool):
    if use_stemmer not in _SCORERS:
        from rouge_score import rouge_scorer

        _SCORERS[use_stemmer] = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    return _SCORERS[use_stemmer]


def content_free_log_prior(scores: torch.Tensor) -> torch.Tensor:
    """Log of the mean label distribution of content-free inputs (contextual calibration).

    Args:
        scores: ``[inputs, labels]`` label scores (log-likelihoods, nats) of content-free inputs.

    Returns:
        ``[labels]``: ``log(mean_i softmax(scores[i]))``; subtracting it from an example's
        label scores divides its label distribution by the content-free one.

    Example:
        >>> content_free_log_prior(torch.tensor([[0.0, 0.0]])).exp()
        tensor([0.5000, 0.5000])
    """
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be [inputs >= 1, labels], got shape {tuple(scores.shape)}")
    return torch.log_softmax(scores.double(), dim=-1).exp().mean(0).log().to(scores.dtype)


def majority_rate(examples: Sequence[Example]) -> float:
    """Share of the most frequent gold output, in % (the accuracy of always guessing it).

    Example:
        >>> majority_rate([Example("a", "Good"), Example("b", "Good"), Example("c", "Bad")])
        66.66666666666667
    """
    if not examples:
        raise ValueError("majority_rate needs at least one example")
    counts = Counter(ex.output for ex in examples)
    return 100.0 * counts.most_common(1)[0][1] / len(examples)


# ---------------------------------------------------------------------------------------------
# Model plumbing


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _forward_params(model: nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _cache_kwarg(params: set[str]) -> str:
    """Name of the cache argument: ``cache`` (Transformers >= 5.x) or ``past_key_values``."""
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out) -> Any:
    for key in ("cache", "past_key_values"):
        value = out.get(key) if hasattr(out, "get") else getattr(out, key, None)
        if value is not None:
            return value
    return None


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``[batch, pos]`` of a left-padded mask (0 at the first real token)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


# ---------------------------------------------------------------------------------------------
# Label scoring


def _label_table(
    tokenizer, labels: Sequence[str], prompt_cfg: PromptConfig
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Answer token ids of every label: ``ids`` ``[labels, A]`` right-padded, ``mask``, lengths."""
    encoded = [encode_answer(tokenizer, label, prompt_cfg) for label in labels]
    for label, ids in zip(labels, encoded, strict=True):
        if not ids:
            raise ValueError(f"label {label!r} encodes to no tokens; cannot score it")
    width = max(len(ids) for ids in encoded)
    pad = pad_id_of(tokenizer)
    table = torch.full((len(labels), width), pad, dtype=torch.long)  # [labels, A]
    mask = torch.zeros((len(labels), width), dtype=torch.long)  # [labels, A]
    for row, ids in enumerate(encoded):
        table[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return table, mask, [len(ids) for ids in encoded]


def _score_batch_cache(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    label_ids: torch.Tensor,
    label_mask: torch.Tensor,
    pad_id: int,
    params: set[str],
) -> torch.Tensor | None:
    """Summed label log-likelihoods ``[batch, labels]`` (nats) through the KV cache.

    Returns ``None`` when the model gives no cache that can be repeated per label.
    """
    device = _device_of(model)
    n_labels, width = label_ids.shape
    enc = [EncodedExample(tuple(p), len(p)) for p in prompts]
    batch = collate(enc, pad_id, padding_side="left")
    ids = batch["input_ids"].to(device)  # [batch, P]
    mask = batch["attention_mask"].to(device)  # [batch, P]
    kwargs: dict[str, Any] = {"attention_mask": mask, "use_cache": True}
    if "position_ids" in params:
        kwargs["position_ids"] = _positions(mask)
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    out = model(input_ids=ids, **kwargs)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [batch, V]
    lab = label_ids.to(device)  # [labels, A]
    lmask = label_mask.to(device)  # [labels, A]
    ll = first[:, lab[:, 0]]  # [batch, labels]
    if width == 1:
        return ll
    cache = _output_cache(out)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    b = ids.shape[0]
    cache.batch_repeat_interleave(n_labels)  # rows example-major: (b0,l0), (b0,l1), ...
    inp = lab[:, :-1].repeat(b, 1)  # [batch*labels, A-1]
    inp_mask = lmask[:, :-1].repeat(b, 1)  # [batch*labels, A-1]
    full_mask = torch.cat([mask.repeat_interleave(n_labels, dim=0), inp_mask], dim=1)
    kwargs = {"attention_mask": full_mask, "use_cache": True, _cache_kwarg(params): cache}
    if "position_ids" in params:
        start = mask.sum(-1).repeat_interleave(n_labels)  # [batch*labels]
        kwargs["position_ids"] = start[:, None] + torch.arange(width - 1, device=device)
    out = model(input_ids=inp, **kwargs)
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # [batch*labels, A-1, V]
    target = lab[:, 1:].repeat(b, 1)  # [batch*labels, A-1]
    tok_ll = logp.gather(-1, target[..., None]).squeeze(-1)  # [batch*labels, A-1]
    tok_ll = tok_ll * lmask[:, 1:].repeat(b, 1)
    return ll + tok_ll.sum(-1).view(b, n_labels)


def _score_batch_concat(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    label_ids: torch.Tensor,
    label_lengths: Sequence[int],
    pad_id: int,
) -> torch.Tensor:
    """Summed label log-likelihoods ``[batch, labels]`` (nats) from prompt+label rows."""
    device = _device_of(model)
    n_labels = label_ids.shape[0]
    labels = [label_ids[i, :n].tolist() for i, n in enumerate(label_lengths)]
    enc = [EncodedExample(tuple(p) + tuple(lab), len(p)) for p in prompts for lab in labels]
    batch = collate(enc, pad_id, padding_side="right")
    ids = batch["input_ids"].to(device)  # [batch*labels, pos]
    mask = batch["attention_mask"].to(device)  # [batch*labels, pos]
    target = batch["labels"].to(device)  # [batch*labels, pos], -100 off-answer
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)  # [batch*labels, pos-1, V]
    tgt = target[:, 1:]  # [batch*labels, pos-1]
    on = tgt != -100
    tok_ll = logp.gather(-1, tgt.clamp(min=0)[..., None]).squeeze(-1) * on
    return tok_ll.sum(-1).view(len(prompts), n_labels)


# ---------------------------------------------------------------------------------------------
# Generation


class _NewlineStop:
    """Stop a row once its generated text has a newline after some non-blank text.

    (Transformers' ``stop_strings`` needs a tokenizer that can encode ``"abcdef"`` into known
    tokens; this works with any tokenizer.) Follows the ``StoppingCriteria`` protocol:
    ``(input_ids [batch, pos], scores) -> BoolTensor [batch]``.
    """

    def __init__(self, tokenizer, prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.prompt_width :].tolist()  # [batch, new]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        done = ["\n" in text.lstrip() for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _cut_generation(text: str, stop_at_newline: bool) -> str:
    """The answer in a generated text: up to the first newline after leading blanks, stripped.

    Example:
        >>> _cut_generation("\\n Good\\nBad", True)
        'Good'
    """
    if stop_at_newline:
        text = text.lstrip().split("\n", 1)[0]
    return text.strip()


def _generate_batch(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    max_new_tokens: int,
    stop_at_newline: bool,
) -> list[str]:
    """Greedy continuations of left-padded prompts, cut at EOS and (optionally) a newline."""
    device = _device_of(model)
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
    if stop_at_newline:
        from transformers import StoppingCriteriaList

        gen_kwargs["stopping_criteria"] = StoppingCriteriaList(
            [_NewlineStop(tokenizer, ids.shape[1])]
        )
    out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
    new = out[:, ids.shape[1] :]  # [batch, new]
    stops = {eos} if eos is not None else set()
    texts = []
    for row in new.tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        text = tokenizer.decode(row[:cut], skip_special_tokens=True)
        texts.append(_cut_generation(text, stop_at_newline))
    return texts


# ---------------------------------------------------------------------------------------------
# Entry point


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

    from taskneurons.models.loading import model_fingerprint

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
