"""PAPER.md Table 1 on a multi-task fine-tuned model: fine-tune, detect, deactivate."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from taskneurons._io import write_json_atomic
from taskneurons.data.tasks import Task
from taskneurons.experiments.common import _limited
from taskneurons.experiments.deactivation import DeactivateConfig, deactivation_experiment
from taskneurons.experiments.detect import DetectConfig, detect_neurons
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.training.config import TrainConfig
from taskneurons.training.loop import train


@dataclass
class MultitaskConfig:
    """Knobs of the Table 1 experiment on a multi-task fine-tuned model.

    Attributes:
        n_train: train examples per task for the multi-task fine-tuning.
        seed: seed of the subsets.
        train: the fine-tuning knobs (``full`` by default; ``lora`` is merged).
        detect: detection on the fine-tuned model.
        deactivate: the deactivation table and matrix on the fine-tuned model.
    """

    n_train: int | None = 512
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(method="full", lr=2e-5))
    detect: DetectConfig = field(default_factory=DetectConfig)
    deactivate: DeactivateConfig = field(default_factory=DeactivateConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def multitask_experiment(
    model: nn.Module,
    tokenizer,
    tasks: list[Task],
    config: MultitaskConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """Fine-tune on all tasks together, detect each task's neurons on that model, deactivate.

    The model is fine-tuned in place (``full``), or through a LoRA adapter merged into it.
    Writes ``multitask/`` (training), ``detect/`` and ``deactivate/`` (Table 1 layout and the
    Figure 5 b matrix) under ``out_dir``.
    """
    if config.train.method == "neurons":
        raise ValueError("the multi-task model is fine-tuned with method 'full' or 'lora'")
    out = Path(out_dir)
    train_tasks = [_limited(t, config.n_train, config.seed) for t in tasks]
    cfg = config.train
    if cfg.method == "lora" and not cfg.merge:
        cfg = TrainConfig(**{**asdict(cfg), "merge": True, "prompt": cfg.prompt})
    res = train(model, tokenizer, train_tasks, cfg, out_dir=out / "multitask", progress=progress)
    tuned = res.model
    sets = detect_neurons(tuned, tokenizer, tasks, config.detect, out / "detect", progress)
    table = deactivation_experiment(
        tuned, tokenizer, tasks, sets, config.deactivate, out / "deactivate", progress
    )
    write_json_atomic(
        out / "multitask_config.json",
        provenance(config=config.to_dict(), model=model_fingerprint(tuned)),
    )
    return {"train": {"steps": res.steps, "final_loss": res.final_loss}, **table}
