"""What an evaluation is asked to do (:class:`EvalConfig`) and what it gives (:class:`EvalResult`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from taskneurons._io import write_json_atomic
from taskneurons.config import Config
from taskneurons.data.prompts import (
    PromptConfig,
)
from taskneurons.provenance import provenance

Mode = Literal["score", "generate"]


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
    batch_size: int = 8
    length_normalize: bool = False
    max_new_tokens: int | None = None
    scoring: Literal["cache", "concat"] = "cache"
    stop_at_newline: bool = True
    stop_when_decided: bool = True
    rouge_stemmer: bool = False
    sort_by_length: bool = True
    calibrate: bool = False
    calibration_inputs: tuple[str, ...] = ("N/A", "", "[MASK]")

    def validate(self) -> None:
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
        values = self.example_gold_nll()
        return None if values is None else sum(values) / len(values)

    def example_gold_nll(self) -> list[float] | None:
        """Each example's gold-label NLL (nats), in input order; ``None`` in ``generate`` mode."""
        if self.mode != "score" or not self.predictions:
            return None
        values = []
        for p in self.predictions:
            ll = p.get("log_likelihoods")
            if ll is None or p.get("gold") not in ll:
                return None
            values.append(-float(ll[p["gold"]]))
        return values

    def example_scores(self) -> list[float]:
        """Each example's share of :attr:`score`: 100 or 0 (correct or not), or ROUGE-L x 100.

        Their mean is :attr:`score`; bootstrap confidence intervals resample them.
        """
        return [
            100.0 * float(p["correct"]) if "correct" in p else float(p["score"])
            for p in self.predictions
        ]

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
