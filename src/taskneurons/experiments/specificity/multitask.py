"""PAPER.md Table 1 on a multi-task fine-tuned model: fine-tune, detect, deactivate.

The model is fine-tuned in place (``full``), or through a LoRA adapter merged into it, so a run
holds it changed afterwards: in an experiment file, ``multitask`` is the last stage. With
``save_model: true`` the fine-tuned model is also written to ``model/`` in the stage's folder, a
Hugging Face folder that a later experiment file names as its ``model:``.

Example:
    >>> res = multitask_experiment(model, tok, tasks, MultitaskConfig(), "out")  # doctest: +SKIP
    >>> res.deactivation.table.row("Deactivate-Task")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.config import Config
from taskneurons.data.tasks import Task
from taskneurons.experiments.common import limited
from taskneurons.experiments.specificity.deactivation import (
    DeactivateConfig,
    DeactivationResult,
    deactivation_experiment,
)
from taskneurons.experiments.specificity.detect import DetectConfig, DetectionResult, detect_neurons
from taskneurons.models.saving import save_finetuned
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.training.loop import train
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
    """

    n_train: int | None = 512
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(method="full", lr=2e-5))
    detect: DetectConfig = field(default_factory=DetectConfig)
    deactivate: DeactivateConfig = field(default_factory=DeactivateConfig)
    save_model: bool = False

    def validate(self) -> None:
        if self.train.method == "neurons":
            raise ValueError("the multi-task model is fine-tuned with method 'full' or 'lora'")


@dataclass
class MultitaskResult:
    """The fine-tuning summary, and detection and deactivation on the fine-tuned model."""

    train: dict
    detection: DetectionResult
    deactivation: DeactivationResult
    out_dir: Path

    def markdown(self) -> str:
        loss = self.train["final_loss"]
        head = f"multi-task fine-tuning: {self.train['steps']} steps, final loss {loss:.4f}"
        return f"{head}\n\n{self.deactivation.markdown()}"


def multitask_experiment(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    config: MultitaskConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> MultitaskResult:
    """Fine-tune on all tasks together, detect each task's neurons on that model, deactivate.

    Writes ``multitask/`` (training), ``detect/`` and ``deactivate/`` (Table 1 layout and the
    Figure 5 b matrix) and ``multitask_config.json`` under ``out_dir``; with
    ``config.save_model`` also ``model/`` (the fine-tuned model, written before detection).
    """
    out = Path(out_dir)
    train_tasks = [limited(t, config.n_train, config.seed) for t in tasks]
    cfg = config.train
    if cfg.method == "lora" and not cfg.merge:
        cfg = dataclasses.replace(cfg, merge=True)
    base = model_fingerprint(model)  # before training changes the weights in place
    res = train(model, tokenizer, train_tasks, cfg, out_dir=out / "multitask", progress=progress)
    tuned = res.model
    summary = {"steps": res.steps, "final_loss": res.final_loss}
    if config.save_model:
        save_finetuned(tuned, tokenizer, out / "model", model_record(tuned, base, config, summary))
    sets = detect_neurons(tuned, tokenizer, tasks, config.detect, out / "detect", progress)
    table = deactivation_experiment(
        tuned, tokenizer, tasks, sets.sets, config.deactivate, out / "deactivate", progress
    )
    write_json_atomic(
        out / "multitask_config.json",
        provenance(config=config.to_dict(), model=model_fingerprint(tuned), base_model=base),
    )
    return MultitaskResult(summary, sets, table, out)


def model_record(tuned: nn.Module, base: dict, config: MultitaskConfig, summary: dict) -> dict:
    """The ``taskneurons_model.json`` of a saved fine-tuned model.

    ``model_fingerprint`` is the saved model's own (what neuron sets detected on it record),
    ``base_model`` the fingerprint of the model it was fine-tuned from.
    """
    dtype = str(next(tuned.parameters()).dtype).removeprefix("torch.")
    return provenance(
        what="a multi-task fine-tuned model, saved by the multitask stage",
        model_fingerprint=model_fingerprint(tuned),
        base_model=base,
        dtype=dtype,
        train=summary,
        config=config.to_dict(),
    )
