"""What an evaluation is asked to do (:class:`EvalConfig`) and what it gives (:class:`EvalResult`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from taskneurons._io import write_json_atomic
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.provenance import provenance

Mode = Literal["score", "generate"]


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
