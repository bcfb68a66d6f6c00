"""The ``detect`` stage: each task's relevance scores and neuron set (PAPER.md §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taskneurons.config import Config
from taskneurons.config_fields import flag
from taskneurons.experiments.stage import Stage, register
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.selection.percent import check_k
from taskneurons.neurons.selection.selection_config import SelectionConfig


@dataclass
class DetectConfig(Config):
    """Knobs of detection.

    Attributes:
        k: percentage of neurons kept per task, in (0, 100].
        scope: ``model`` (rank all neurons together) or ``layer`` (k % of each layer).
        attribution: how relevance is computed (definition, loss, aggregate, examples, seed).
        selection: which neurons each task keeps, from every task's scores (computed once):
            one config per method (``topk`` by default; see
            :mod:`~taskneurons.neurons.selection.selection_config`), holding only its options.
    """

    k: float = field(
        default=10.0, metadata=flag("--k", kind="percent", help="percent of neurons per task")
    )
    scope: Literal["model", "layer"] = field(
        default="model", metadata=flag("--scope", help="rank over the whole model or per layer")
    )
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    selection: SelectionConfig = field(
        default_factory=SelectionConfig.make,
        metadata=flag("--selection", help="how each task's set is drawn from every task's scores"),
    )

    def validate(self) -> None:
        check_k(self.k)
        if self.scope not in ("model", "layer"):
            raise ValueError(f"scope must be 'model' or 'layer', got {self.scope!r}")


#: what the stage writes, for the run README
FILES = """
    detect_config.json: detection knobs and provenance
    layer_counts: task neurons per layer
    iou: pairwise IoU of the task neuron sets
    general_neurons: the general set: neurons in the top-k of most tasks
"""

STAGE = register(Stage(
    name="detect", config=DetectConfig, order=10, run=".detect:run_detect",
    result=".detect:DetectionResult", files=FILES, check=".detect:check_detect_run",
    title="detect each task's neurons (relevance scores, top-k %)",
))  # fmt: skip
