"""The knobs of a training run (:class:`TrainConfig`) and what it returns (:class:`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from taskneurons.config import Config
from taskneurons.config_fields import flag
from taskneurons.data.prompt_config import PromptConfig

if TYPE_CHECKING:  # only for the annotations of TrainResult: this module loads without torch
    from torch import nn

    from taskneurons.training.neuron_delta import NeuronDelta

METHODS: tuple[str, ...] = ("neurons", "full", "lora")


OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")


#: schedule name -> ``transformers.get_scheduler`` name
SCHEDULES: dict[str, str] = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant_with_warmup",
}


@dataclass
class TrainConfig(Config):
    """Every knob of a training run (saved as ``train_config.json`` beside the results).

    Attributes:
        method: ``"neurons"`` (a NeuronSet's slices), ``"full"`` or ``"lora"``.
        lr: peak learning rate.
        epochs: passes over the pooled train examples (ignored when ``max_steps`` is set).
        max_steps: optimizer steps to run (overrides ``epochs``; epochs repeat as needed).
        batch_size: examples per micro-batch (per forward/backward).
        grad_accum: micro-batches per optimizer step (a step sees
            ``batch_size * grad_accum`` examples).
        warmup_ratio: share of the steps with a linear warm-up from 0, in ``[0, 1)``.
        schedule: ``"linear"`` or ``"cosine"`` decay to 0 after the warm-up, or ``"constant"``.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay on the trainable tensors. On
            a NeuronDelta it pulls the *deltas* to 0, i.e. the trained slices towards the base
            weights (not towards 0 as on full fine-tuning).
        max_grad_norm: clip the global gradient norm to this (``None``: no clipping).
        optimizer: ``"adamw"`` (``torch.optim.AdamW``) or ``"sgd"``.
        adam_betas, adam_eps: AdamW's betas and epsilon.
        momentum: SGD momentum.
        seed: seed of the shuffling, LoRA's initialisation and dropout.
        delta_dtype: dtype of the NeuronDelta tensors (``"float32"``; also on a bf16 base).
        neuron_update: how the ``neurons`` method trains: ``"delta"`` (a NeuronDelta beside
            the frozen model: gradients and optimizer state for the selected slices only) or
            ``"masked"`` (the FFN weights themselves, their gradients masked at every
            optimizer step: works on FSDP-sharded parameters; full-size FFN gradients).
        save_dtype: dtype the trained deltas are written in (``None``: ``delta_dtype``, exact;
            ``"bfloat16"``/``"float16"`` halve the file).
        strict_fingerprint: require the NeuronSet's recorded model weights fingerprint to match
            the model (``False``: architecture only, e.g. continual learning on a tuned model).
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout.
        lora_targets: module names for LoRA (``None``: every linear layer but the LM head).
        merge: merge the delta (neurons) or the adapter (lora) into the weights at the end.
        prompt: how examples become tokens (answer-only loss by default).
        checkpoint_every: write ``checkpoint.pt`` every this many steps and at the end
            (0: never; needs ``out_dir``).
        log_every: write a log line every this many steps (and at the last step).
        log_file: name of the JSON-lines log inside ``out_dir``.
        checkpointing: run the model's layers under activation checkpointing (Transformers',
            non-reentrant): each layer keeps only its input during the forward and runs again
            in the backward; the same trained values for less activation memory and about
            one more forward of compute (:mod:`~taskneurons.training.checkpointing`).

    Example:
        >>> cfg = TrainConfig(method="lora", lr=5e-4, max_steps=100, lora_r=4)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    method: str = "neurons"
    lr: float = field(
        default=1e-4, metadata=flag("--lr", kind="positive", help="peak learning rate")
    )
    epochs: int = field(
        default=1, metadata=flag("--epochs", kind="count", help="passes over the train examples")
    )
    max_steps: int | None = None
    batch_size: int = field(
        default=8, metadata=flag("--batch-size", kind="count", help="examples per micro-batch")
    )
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    schedule: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    optimizer: str = "adamw"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    momentum: float = 0.0
    seed: int = 0
    delta_dtype: str = "float32"
    neuron_update: str = "delta"
    save_dtype: str | None = None
    strict_fingerprint: bool = True
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] | str | None = None
    merge: bool = False
    prompt: PromptConfig = field(default_factory=PromptConfig)
    checkpoint_every: int = 0
    log_every: int = 1
    log_file: str = "train_log.jsonl"
    checkpointing: bool = False

    def validate(self) -> None:
        if isinstance(self.prompt, dict):
            self.prompt = PromptConfig(**self.prompt)
        self.adam_betas = tuple(float(b) for b in self.adam_betas)  # type: ignore[assignment]
        if isinstance(self.lora_targets, tuple):
            self.lora_targets = list(self.lora_targets)
        checks = [
            (self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"),
            (
                self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}",
            ),
            (
                self.schedule in SCHEDULES,
                f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}",
            ),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (
                self.max_steps is None or self.max_steps >= 1,
                f"max_steps must be >= 1 or None, got {self.max_steps}",
            ),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (
                0.0 <= self.warmup_ratio < 1.0,
                f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}",
            ),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (
                self.max_grad_norm is None or self.max_grad_norm > 0,
                f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}",
            ),
            (self.lora_r >= 1, f"lora_r must be >= 1, got {self.lora_r}"),
            (
                0.0 <= self.lora_dropout < 1.0,
                f"lora_dropout must be in [0, 1), got {self.lora_dropout}",
            ),
            (
                self.checkpoint_every >= 0,
                f"checkpoint_every must be >= 0, got {self.checkpoint_every}",
            ),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (
                self.neuron_update in ("delta", "masked"),
                f"neuron_update must be 'delta' or 'masked', got {self.neuron_update!r}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        _delta_dtype(self.delta_dtype)
        if self.save_dtype is not None:
            _delta_dtype(self.save_dtype, "save_dtype")


#: the floating torch dtypes a delta may be kept or saved in, by name
FLOAT_DTYPES: tuple[str, ...] = ("float32", "float64", "float16", "bfloat16", "float", "half")


def _delta_dtype(name: str, what: str = "delta_dtype") -> str:
    """``name`` if it names a floating torch dtype (``ValueError`` naming ``what`` otherwise)."""
    if name not in FLOAT_DTYPES:
        raise ValueError(f"{what} must name a floating torch dtype {FLOAT_DTYPES}, got {name!r}")
    return name


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (a ``PeftModel`` for un-merged LoRA; with an attached
            NeuronDelta for un-merged ``neurons``).
        method: the method.
        delta: the :class:`NeuronDelta` (``neurons`` method), else ``None``.
        steps: optimizer steps done in total (including those before a resume).
        history: the log records of this call (one dict per logged step).
        final_loss: loss of the last step (nats, mean per-example answer NLL).
        n_trainable: trainable scalars.
        n_params: scalars of the base model.
        wall_s: seconds spent in this call.
        resumed_from: the step a resumed run started from (``0`` when not resumed).
        out_dir: where files were written (``None``: nowhere).
        config: the :class:`TrainConfig`.
        final_regulariser: the regulariser's value at the last step (``None``: no
            ``TrainOptions.regulariser`` of :mod:`~taskneurons.training.loop`).
    """

    model: nn.Module
    method: str
    delta: NeuronDelta | None
    steps: int
    history: list[dict]
    final_loss: float | None
    n_trainable: int
    n_params: int
    wall_s: float
    resumed_from: int
    out_dir: Path | None
    config: TrainConfig
    final_regulariser: float | None = None

    def summary(self) -> dict:
        """JSON-ready summary (no model)."""
        return {
            "method": self.method,
            "steps": self.steps,
            "final_loss": self.final_loss,
            "n_trainable": self.n_trainable,
            "n_params": self.n_params,
            "trainable_share": self.n_trainable / max(self.n_params, 1),
            "wall_s": self.wall_s,
            "resumed_from": self.resumed_from,
        }
