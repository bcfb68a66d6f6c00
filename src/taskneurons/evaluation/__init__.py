"""Evaluation: label scoring, generation, metrics and result records.

:func:`evaluate` (``dispatch``) resolves the mode once and runs one path: label scoring
(``label_scoring``, classification) or generation (``generation``: exact match or ROUGE-L);
``model_io`` holds the model plumbing both share (device, forward arguments, batch runner); the
metrics are pure functions; :class:`EvalResult` records each evaluation with its provenance.

Example:
    >>> from taskneurons.evaluation import evaluate, EvalConfig
    >>> result = evaluate(model, tok, task, task.test[:50], config=EvalConfig())  # doctest: +SKIP
    >>> result.metric, result.score  # doctest: +SKIP
    ('accuracy', 50.0)
"""

from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.metrics import (
    content_free_log_prior,
    exact_match,
    majority_rate,
    normalize_text,
    rouge_l,
)
from taskneurons.evaluation.result import EvalConfig, EvalResult

__all__ = [
    "EvalConfig",
    "EvalResult",
    "content_free_log_prior",
    "evaluate",
    "exact_match",
    "majority_rate",
    "normalize_text",
    "rouge_l",
]
