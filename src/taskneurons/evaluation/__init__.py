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

Names are imported on first use (PEP 562), so :mod:`~taskneurons.evaluation.eval_config`
loads without torch.
"""

from __future__ import annotations

from taskneurons._lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "taskneurons.evaluation.dispatch": ("evaluate",),
    "taskneurons.evaluation.eval_config": ("EvalConfig",),
    "taskneurons.evaluation.result": ("EvalResult",),
    "taskneurons.evaluation.metrics": (
        "content_free_log_prior",
        "exact_match",
        "majority_rate",
        "normalize_text",
        "rouge_l",
    ),
}
__all__ = sorted(n for names in _EXPORTS.values() for n in names)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
