"""How a task is evaluated: :class:`EvalConfig` (no torch, so the CLI reads it fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taskneurons.config import Config
from taskneurons.config_fields import flag
from taskneurons.data.prompt_config import PromptConfig

#: Extra new tokens allowed beyond the longest label in ``generate`` mode on classification.
LABEL_SLACK_TOKENS = 4


#: Default ``max_new_tokens`` for generation tasks.
GENERATION_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class EvalConfig(Config):
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
        stop_when_decided: exact-match tasks stop generating an answer once it can no longer
            equal its gold answer (scores are unchanged; the stored prediction of such an
            answer is the text generated up to then). ROUGE-L tasks always run to the end.
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
    batch_size: int = field(
        default=8, metadata=flag("--batch-size", kind="count", help="examples per batch")
    )
    length_normalize: bool = field(
        default=False,
        metadata=flag("--length-normalize", help="rank labels by mean log-probability per token"),
    )
    max_new_tokens: int | None = None
    scoring: Literal["cache", "concat"] = "cache"
    stop_at_newline: bool = True
    stop_when_decided: bool = True
    rouge_stemmer: bool = False
    sort_by_length: bool = True
    calibrate: bool = field(
        default=False,
        metadata=flag(
            "--calibrate",
            help="contextual calibration of label scores (subtract each label's prior on content-free inputs; Zhao et al. 2021)",
        ),
    )
    calibration_inputs: tuple[str, ...] = ("N/A", "", "[MASK]")

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or None, got {self.max_new_tokens}")
        if self.scoring not in ("cache", "concat"):
            raise ValueError(f"scoring must be 'cache' or 'concat', got {self.scoring!r}")
        if self.calibrate and not self.calibration_inputs:
            raise ValueError("calibrate needs at least one calibration input")
