"""Pure metrics: text normalisation, exact match, ROUGE-L, calibration prior, majority rate."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from taskneurons.data.tasks import Example

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
