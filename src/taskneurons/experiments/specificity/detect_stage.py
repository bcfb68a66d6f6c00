"""The ``detect`` stage: each task's relevance scores and neuron set (PAPER.md §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taskneurons.config import Config, flag
from taskneurons.experiments.stage import Stage, register
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.multitask_selection import METHODS as SELECTION_METHODS
from taskneurons.neurons.selection import check_k


@dataclass
class SelectionConfig(Config):
    """Which neurons a task keeps, from the scores of all tasks (see ``multitask_selection``).

    Attributes:
        method: ``topk`` (the paper's: each task's top-k %), ``specific`` (own top-k minus
            the general neurons, those in the top-k of at least ``m`` tasks), ``contrastive``
            (top-k of a task's normalised score against the other tasks' mean), ``lape``
            (low-entropy activation probability across tasks, Tang et al. 2024).
        normalize: ``None``, ``layer`` (divide each layer's scores by its mean) or
            ``layer_z`` (z-score within each layer) before ranking.
        m: ``specific``: a neuron is general when in the top-k of at least ``m`` tasks
            (``None``: all tasks).
        fill: ``specific``: refill each set to the top-k count from its non-general neurons.
        mode, task_norm, eps: ``contrastive``: ``difference`` or ``ratio``; each task's
            scores divided by their mean or z-scored; ``ratio``'s denominator offset.
        threshold, tokens: ``lape``: an activation counts when above ``threshold``, on
            ``answer`` or ``all`` tokens.
        filter_quantile, min_prob, assign, bar_quantile: ``lape``'s filter and assignment.
    """

    method: str = field(
        default="topk",
        metadata=flag("--selection", help="how each task's set is drawn from every task's scores"),
    )
    normalize: str | None = None
    m: int | None = None
    fill: bool = False
    mode: str = "difference"
    task_norm: str = "mean"
    eps: float = 0.1
    threshold: float = 0.0
    tokens: str = "answer"
    filter_quantile: float | None = 0.95
    min_prob: float = 0.0
    assign: str = "bar"
    bar_quantile: float = 0.95

    def validate(self) -> None:
        if self.method not in SELECTION_METHODS:
            raise ValueError(f"method must be one of {SELECTION_METHODS}, got {self.method!r}")

    def options(self, scope: str) -> dict:
        """The keyword arguments of ``select_<method>``."""
        common = {"scope": scope, "normalize": self.normalize}
        per_method = {
            "topk": {},
            "specific": {"m": self.m, "fill": self.fill},
            "contrastive": {"mode": self.mode, "task_norm": self.task_norm, "eps": self.eps},
            "lape": {
                "filter_quantile": self.filter_quantile,
                "min_prob": self.min_prob,
                "assign": self.assign,
                "bar_quantile": self.bar_quantile,
            },
        }
        return {**common, **per_method[self.method]}


@dataclass
class DetectConfig(Config):
    """Knobs of detection.

    Attributes:
        k: percentage of neurons kept per task, in (0, 100].
        scope: ``model`` (rank all neurons together) or ``layer`` (k % of each layer).
        attribution: how relevance is computed (definition, loss, aggregate, examples, seed).
        selection: which neurons each task keeps, from every task's scores (computed once).
    """

    k: float = field(
        default=10.0, metadata=flag("--k", kind="percent", help="percent of neurons per task")
    )
    scope: Literal["model", "layer"] = field(
        default="model", metadata=flag("--scope", help="rank over the whole model or per layer")
    )
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def validate(self) -> None:
        check_k(self.k)
        if self.scope not in ("model", "layer"):
            raise ValueError(f"scope must be 'model' or 'layer', got {self.scope!r}")


STAGE = register(
    Stage(
        name="detect",
        config=DetectConfig,
        run="taskneurons.experiments.specificity.detect:run_detect",
        result="taskneurons.experiments.specificity.detect:DetectionResult",
        title="detect each task's neurons (relevance scores, top-k %)",
        order=10,
        files={
            "detect_config.json": "detection knobs and provenance",
            "layer_counts": "task neurons per layer",
            "iou": "pairwise IoU of the task neuron sets",
            "general_neurons": "the general set: neurons in the top-k of most tasks",
        },
    )
)
