"""The ``multitask`` stage: fine-tune on all tasks, then detect and deactivate (Table 1 on that
model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskneurons.config import Config
from taskneurons.config_fields import train_examples
from taskneurons.experiments.specificity.deactivate_stage import DeactivateConfig
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.experiments.specificity.sweep_stage import SweepConfig
from taskneurons.experiments.stage import Stage, register
from taskneurons.training.train_config import TrainConfig


@dataclass
class MultitaskConfig(Config):
    """Knobs of the Table 1 experiment on a multi-task fine-tuned model.

    Attributes:
        n_train: train examples per task for the multi-task fine-tuning.
        seed: seed of the subsets.
        train: the fine-tuning knobs (``full`` by default; ``lora`` is merged).
        detect: detection on the fine-tuned model.
        deactivate: the deactivation table and matrix on the fine-tuned model.
        save_model: also write the fine-tuned model (LoRA merged), its tokenizer and a
            ``taskneurons_model.json`` record (provenance, this config, the base and the tuned
            model's fingerprints) to ``model/`` in the stage's folder, right after fine-tuning;
            ``model: <run folder>/model`` in a later experiment file loads it.
        sweep: also the selection sweep (k x selections, scores computed once) on the
            fine-tuned model, with this section's ``detect`` and ``deactivate``, in ``sweep/``
            (``None``: none). A sweep stage cannot follow ``multitask`` in one run (it changes
            the model), so this is how a run over seeds gets every selection on its own
            fine-tuned model.
    """

    n_train: int | None = train_examples(512)
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(method="full", lr=2e-5))
    detect: DetectConfig = field(default_factory=DetectConfig)
    deactivate: DeactivateConfig = field(default_factory=DeactivateConfig)
    save_model: bool = False
    sweep: SweepConfig | None = None

    def validate(self) -> None:
        if self.train.method == "neurons":
            raise ValueError("the multi-task model is fine-tuned with method 'full' or 'lora'")

    def check_tasks(self, tasks: Sequence[Any], key: str = "multitask") -> None:
        """Its deactivation (matrix, specificity) needs two tasks or more."""
        self.deactivate.check_tasks(tasks, key)
        if self.sweep is not None:
            self.sweep.check_tasks(tasks, f"{key}.sweep")


#: what the stage writes, for the run README
FILES = """
    multitask_config.json: multi-task fine-tuning knobs, tuned and base model fingerprints
    model/: the fine-tuned model and tokenizer (Hugging Face folder,
        `taskneurons_model.json` records provenance): give this folder as `model:` in a
        later experiment file
    sweep/: with `sweep:`, the selection sweep on the fine-tuned model (one folder per cell)
"""

STAGE = register(Stage(
    name="multitask", config=MultitaskConfig, order=130, changes_model=True,
    inherits=("detect", "deactivate"), run=".multitask:run_multitask",
    result=".multitask:MultitaskResult", files=FILES,
    title="fine-tune on all tasks, then detect and deactivate (Table 1 on that model)",
))  # fmt: skip
