"""The ``ablation_check`` stage: does the attribution rank what ablation ranks?"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskneurons.config import Config
from taskneurons.config_fields import flag
from taskneurons.experiments.stage import Stage, register


@dataclass
class AblationCheckConfig(Config):
    """Knobs of the check of relevance scores against the true loss change of zeroing.

    The scores use ``detect.attribution`` (definition, loss, aggregate, prompt, seed of the
    examples) with ``n_examples`` examples; the same examples are ablated.

    Attributes:
        per_layer: neurons drawn at random per layer (and module) and ablated one at a time.
        top_k: the estimate's ``top_k`` neurons (over the model) are ablated too; the share
            of the true top-``top_k`` of all ablated neurons that they miss is reported.
        n_examples: train examples scored and ablated per task (label-stratified).
        seed: seed of the random neurons.
        chunk: neurons ablated per forward pass (memory: ``chunk`` copies of a batch).
    """

    per_layer: int = field(
        default=16, metadata=flag("--per-layer", kind="count", help="random neurons per layer")
    )
    top_k: int = field(
        default=32, metadata=flag("--top-k", kind="count", help="the estimate's top neurons")
    )
    n_examples: int = field(
        default=32,
        metadata=flag(
            "--check-examples", kind="count", help="examples scored and ablated per task"
        ),
    )
    seed: int = 0
    chunk: int = 16

    def validate(self) -> None:
        for name in ("per_layer", "top_k", "n_examples", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


#: what the stage writes, for the run README
FILES = """
    ablation_check: per task, Spearman of relevance vs true |ΔL| of zeroing (random neurons;
        the estimate's top-k), and the share of the true top-k the estimate misses
    ablation_layers: Spearman per layer and task (random neurons of that layer)
    effects.json: every ablated neuron's estimate and true |ΔL|
    task_effects.json: each task's effects as soon as measured (a rerun of the same settings
        measures only the tasks left)
    ablation_check_config.json: knobs, scored examples' hashes, provenance
"""

STAGE = register(Stage(
    name="ablation_check", config=AblationCheckConfig, order=15, uses=("detect",),
    run=".ablation_check:run_ablation_check", result=".ablation_check:AblationCheckResult",
    files=FILES, title="relevance scores against the true loss change of zeroing each neuron",
))  # fmt: skip
