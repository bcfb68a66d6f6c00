"""One training loop for neuron-level, full and LoRA fine-tuning, on Accelerate.

Methods (``TrainConfig.method``):

* ``"neurons"`` — only the parameter slices of a :class:`NeuronSet` are trained, through a
  :class:`~taskneurons.training.neuron_delta.NeuronDelta` (small trainable deltas added by
  forward hooks; every base parameter stays frozen and untouched). At the end the delta is
  left **attached, not merged** (``TrainResult.delta``): the model behaves as the trained one,
  and the caller can ``save``, ``merge``, ``detach`` or combine per-task deltas. With
  ``TrainConfig(merge=True)`` it is merged into the weights instead.
* ``"full"`` — every parameter of the model is trained in place.
* ``"lora"`` — LoRA adapters through PEFT (``LoraConfig`` + ``get_peft_model``; targets default
  to every linear layer except the LM head, PEFT's ``"all-linear"``). ``merge=True`` returns
  ``merge_and_unload()``'s plain model, otherwise the ``PeftModel``.

The loss of an example is the mean negative log-likelihood (nats) of its answer tokens (the
labels of :func:`taskneurons.data.prompts.collate`; all non-pad tokens after the first with
``PromptConfig(loss_on="all")``) — the same per-example loss the relevance scores use, not
Hugging Face's token mean over a batch. The loss of an optimizer step is the mean over the
step's examples, so a long answer does not weigh more than a short one and the result does not
depend on how a step is split into micro-batches or processes.

Data: the train examples of all given tasks are pooled and shuffled together every epoch
(multi-task training when there are several), with a ``torch.Generator`` seeded by
``config.seed``; an optimizer step takes the next ``batch_size * grad_accum`` examples, in
``grad_accum`` micro-batches of ``batch_size``. Under several processes (``accelerate launch``)
each micro-batch is split across processes and the gradients are summed with
``accelerator.reduce`` (the model is not wrapped in DDP: the NeuronDelta tensors are not model
parameters), so results do not depend on the number of processes.

Files in ``out_dir`` (when given): ``train_config.json`` (config, tasks, model fingerprint,
provenance), ``train_log.jsonl`` (one JSON line per logged step: step, epoch, loss, lr,
grad_norm, examples, elapsed_s), ``checkpoint.pt`` (every ``checkpoint_every`` steps: trainable
tensors, optimizer, scheduler, RNG state, step), ``train_result.json``, and the trained
``delta/`` (neurons) or ``lora/`` adapter (lora).

Example:
    >>> cfg = TrainConfig(method="neurons", lr=1e-3, epochs=2, batch_size=8)  # doctest: +SKIP
    >>> res = train(model, tok, task, cfg, neurons=task_neurons, out_dir="out/ft")  # doctest: +SKIP
    >>> res.history[-1]["loss"], res.n_trainable  # doctest: +SKIP
    (0.41, 7962624)
    >>> res.delta.merge()  # write the trained slices into the weights  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from taskneurons._io import atomic_path, provenance, write_json_atomic, write_text_atomic
from taskneurons.data.prompts import PromptConfig, collate, encode_example, pad_id_of
from taskneurons.data.tasks import Task, examples_hash
from taskneurons.losses import per_example_loss
from taskneurons.neurons.attribution import frozen_parameters
from taskneurons.neurons.selection import NeuronSet, NeuronSetMismatchError
from taskneurons.neurons.space import NeuronSpace
from taskneurons.training.neuron_delta import NeuronDelta, selection_masks

METHODS: tuple[str, ...] = ("neurons", "full", "lora")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
#: schedule name -> ``transformers.get_scheduler`` name
SCHEDULES: dict[str, str] = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant_with_warmup",
}
#: config fields that may change between a checkpoint and its resumption
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "log_file", "merge")
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
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

    Example:
        >>> cfg = TrainConfig(method="lora", lr=5e-4, max_steps=100, lora_r=4)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    method: str = "neurons"
    lr: float = 1e-4
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
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

    def __post_init__(self) -> None:
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
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        _delta_dtype(self.delta_dtype)
        if self.save_dtype is not None:
            _delta_dtype(self.save_dtype, "save_dtype")

    def to_dict(self) -> dict:
        """JSON-ready dict (``prompt`` as a nested dict, ``adam_betas`` as a list)."""
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known: {sorted(names)}")
        return cls(**d)


def _delta_dtype(name: str, what: str = "delta_dtype") -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{what} must name a floating torch dtype, got {name!r}")
    return dtype


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


# -- loss ---------------------------------------------------------------------------------------
# -- test oracle -------------------------------------------------------------------------------
def masked_gradient_hooks(
    model: nn.Module, neurons: NeuronSet, space: NeuronSpace | None = None
) -> list[RemovableHandle]:
    """Naive neuron training, for tests and benchmarks only: mask every parameter's gradient.

    Registers a gradient hook on every parameter of ``model`` (turning ``requires_grad`` on)
    that zeroes the entries not owned by a neuron of ``neurons`` (all entries of parameters
    outside the FFN). Full fine-tuning with these hooks, SGD or AdamW without weight decay,
    changes exactly the entries a :class:`NeuronDelta` trains, by the same amounts (AdamW's
    decoupled decay would also shrink the masked entries; use ``weight_decay=0``).

    Returns:
        The hook handles (call ``.remove()`` on each to undo).

    Example:
        >>> handles = masked_gradient_hooks(model, task_neurons)  # doctest: +SKIP
        >>> train(model, tok, task, TrainConfig(method="full", weight_decay=0))  # doctest: +SKIP
        >>> for h in handles: h.remove()  # doctest: +SKIP
    """
    masks = selection_masks(model, neurons, space)
    handles: list[RemovableHandle] = []
    for name, p in model.named_parameters():
        p.requires_grad_(True)
        mask = masks.get(name)
        if mask is None:
            handles.append(p.register_hook(torch.zeros_like))
        else:
            handles.append(p.register_hook(lambda g, m=mask: g * m.to(g.dtype)))
    return handles


# -- data ---------------------------------------------------------------------------------------
def _check_tasks(tasks: Task | Sequence[Task]) -> list[Task]:
    if isinstance(tasks, Task):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ValueError("train() needs at least one task")
    for t in tasks:
        if not isinstance(t, Task):
            raise TypeError(f"tasks must be Task objects, got {type(t).__name__}")
        if not t.train:
            raise ValueError(
                f"task {t.id!r} has no train split (0 train examples; source "
                f"{t.source or '?'}); training needs train examples"
            )
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"task ids repeat in {ids}; give each task once")
    return tasks


def _epoch_orders(n: int, seed: int) -> Iterator[torch.Tensor]:
    """Example order of epoch 0, 1, ...: ``randperm(n)`` from one generator seeded by ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    while True:
        yield torch.randperm(n, generator=gen)


# -- checkpoints -----------------------------------------------------------------------------
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _json_normal(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def _load_checkpoint(path: Path, config: TrainConfig, meta: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != "taskneurons.train_checkpoint/1":
        raise ValueError(f"{path} is not a taskneurons training checkpoint")
    saved = _json_normal(state["config"])
    now = _json_normal(config.to_dict())
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    diff = [k for k in diff if k not in _RESUMABLE_CHANGES]
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
        raise ValueError(f"cannot resume from {path}: the config differs ({detail})")
    for key, what in (("tasks", "tasks/data"), ("neurons", "NeuronSet")):
        if _json_normal({"x": state["meta"].get(key)}) != _json_normal({"x": meta.get(key)}):
            raise ValueError(f"cannot resume from {path}: the {what} differ from the checkpoint's")
    fp_saved, fp_now = state["meta"]["model_fingerprint"], meta["model_fingerprint"]
    for key in ("arch", "weights"):
        if fp_saved.get(key) != fp_now.get(key):
            raise NeuronSetMismatchError(
                f"cannot resume from {path}: it was made on another base model ({key} "
                f"fingerprint {fp_saved.get(key)} != {fp_now.get(key)}); pass the same base model"
            )
    return state


def _load_trainable(named: list[tuple[str, nn.Parameter]], saved: dict, path: Path) -> None:
    names = [n for n, _ in named]
    if sorted(names) != sorted(saved):
        raise ValueError(
            f"checkpoint {path} holds other trainable tensors than this run "
            f"({sorted(set(saved) ^ set(names))[:5]})"
        )
    with torch.no_grad():
        for n, p in named:
            p.copy_(saved[n].to(p.device, p.dtype))


# -- the loop ----------------------------------------------------------------------------------
def train(
    model: nn.Module,
    tokenizer,
    tasks: Task | Sequence[Task],
    config: TrainConfig | None = None,
    neurons: NeuronSet | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    accelerator=None,
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on the train examples of one or several tasks.

    Args:
        model: a Hugging Face causal LM (moved to ``accelerator.device``).
        tokenizer: its tokenizer.
        tasks: one :class:`Task` or several (pooled and shuffled together: multi-task).
        config: the knobs (default :class:`TrainConfig`, method ``neurons``).
        neurons: the NeuronSet to train (``neurons`` method only).
        out_dir: folder for config, log, checkpoints and the trained delta/adapter.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (``model`` must be the
            same base model as in the interrupted run; the config must match except
            ``checkpoint_every``, ``log_every``, ``log_file`` and ``merge``).
        accelerator: an ``accelerate.Accelerator`` (default: a new one).
        progress: show a tqdm bar with the loss.
        on_step: called as ``on_step(step, record)`` after every optimizer step (and after the
            step's checkpoint), ``step`` counting from 1.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: a task without train examples, a bad config, a missing or superfluous
            ``neurons``, an empty NeuronSet, a checkpoint that does not fit.
        NeuronSetMismatchError: ``neurons`` belongs to another model.

    Example:
        >>> res = train(model, tok, [sst2, agnews], TrainConfig(method="full", epochs=1))  # doctest: +SKIP
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from taskneurons.models.loading import model_fingerprint

    t0 = time.perf_counter()
    config = config or TrainConfig()
    task_list = _check_tasks(tasks)
    if config.method == "neurons" and neurons is None:
        raise ValueError("method 'neurons' needs a NeuronSet (neurons=...)")
    if config.method != "neurons" and neurons is not None:
        raise ValueError(f"neurons are only used by method 'neurons', not {config.method!r}")
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    if config.checkpoint_every and out is None:
        raise ValueError("checkpoint_every needs out_dir (where to write the checkpoint)")
    accelerator = accelerator or Accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process

    # -- data: every train example of every task, encoded once ----------------------------
    encoded = []  # EncodedExample per pooled example
    for task in task_list:
        for ex in task.train:
            encoded.append(encode_example(tokenizer, task, ex.input, ex.output, config.prompt))
    n_examples = len(encoded)
    pad = pad_id_of(tokenizer)
    step_size = config.batch_size * config.grad_accum
    steps_per_epoch = math.ceil(n_examples / step_size)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_ratio * total_steps))

    base_fp = model_fingerprint(model)
    n_params = int(sum(p.numel() for p in model.parameters()))
    meta = {
        "tasks": [
            {"id": t.id, "n_train": len(t.train), "examples_hash": examples_hash(t.train)}
            for t in task_list
        ],
        "neurons": None
        if neurons is None
        else {
            "definition": neurons.definition,
            "count": len(neurons),
            "masks_hash": _masks_hash(neurons),
        },
        "model_fingerprint": base_fp,
    }

    # -- trainable tensors -------------------------------------------------------------------
    was_training = model.training
    torch.manual_seed(config.seed)  # LoRA init, dropout
    model.to(accelerator.device)
    delta: NeuronDelta | None = None
    flags = [(p, p.requires_grad) for p in model.parameters()]
    stack = contextlib.ExitStack()
    if config.method == "neurons":
        assert neurons is not None
        delta = NeuronDelta(
            model,
            neurons,
            dtype=_delta_dtype(config.delta_dtype),
            strict=config.strict_fingerprint,
        )
        stack.enter_context(frozen_parameters(model))
        delta.attach()
        named = delta.named_parameters()
    elif config.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        named = list(model.named_parameters())
    else:
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_targets or "all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    n_trainable = int(sum(p.numel() for p in params))

    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(
            params,
            lr=config.lr,
            betas=config.adam_betas,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
    else:
        optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    scheduler = get_scheduler(
        SCHEDULES[config.schedule],
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total_steps,
    )

    # -- resume ------------------------------------------------------------------------------
    start = 0
    ckpt_path = out / CHECKPOINT if out is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = _load_checkpoint(ckpt_path, config, meta)
        _load_trainable(named, state["trainable"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
    log_path = out / config.log_file if out is not None else None
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            out / "train_config.json",
            provenance(
                config=config.to_dict(),
                **meta,
                neurons_meta=None if neurons is None else neurons.meta,
                n_trainable=n_trainable,
                n_params=n_params,
                total_steps=total_steps,
                steps_per_epoch=steps_per_epoch,
                world_size=world,
            ),
        )
        assert log_path is not None
        if start == 0:
            write_text_atomic(log_path, "")
        elif log_path.is_file():  # drop lines logged after the checkpoint
            kept = [
                line
                for line in log_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= start
            ]
            write_text_atomic(log_path, "".join(k + "\n" for k in kept))

    def save_checkpoint(step: int) -> None:
        assert ckpt_path is not None
        if main:
            state = {
                "format": "taskneurons.train_checkpoint/1",
                "step": step,
                "config": config.to_dict(),
                "meta": _json_normal(meta),
                "trainable": {n: p.detach().to("cpu").clone() for n, p in named},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
            }
            with atomic_path(ckpt_path) as tmp:
                torch.save(state, tmp)
        accelerator.wait_for_everyone()

    # -- steps -------------------------------------------------------------------------------
    model.train()
    history: list[dict] = []
    final_loss: float | None = None
    orders = _epoch_orders(n_examples, config.seed)
    epoch, order = -1, torch.empty(0, dtype=torch.long)
    bar = tqdm(
        total=total_steps,
        initial=start,
        disable=not progress or not main,
        desc=f"train {config.method}",
    )
    device = accelerator.device
    try:
        for step in range(start, total_steps):
            e = step // steps_per_epoch
            while epoch < e:  # draw the orders of skipped epochs too: same order after resume
                order, epoch = next(orders), epoch + 1
            j = step % steps_per_epoch
            chunk = order[j * step_size : (j + 1) * step_size].tolist()
            n_step = len(chunk)
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            for m in range(0, n_step, config.batch_size):
                micro = chunk[m : m + config.batch_size][rank::world]
                if not micro:
                    continue
                batch = collate([encoded[i] for i in micro], pad, loss_on=config.prompt.loss_on)
                batch = {k: v.to(device) for k, v in batch.items()}
                with accelerator.autocast():
                    losses = per_example_loss(model, batch)  # [micro]
                loss = losses.sum() / n_step
                loss.backward()
                loss_sum += loss.detach()
            if world > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                grads = accelerator.reduce([p.grad for p in params], reduction="sum")
                for p, g in zip(params, grads, strict=True):
                    p.grad.copy_(g)
                loss_sum = accelerator.reduce(loss_sum, reduction="sum")
            grad_norm = None
            if config.max_grad_norm is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            done = step + 1
            final_loss = float(loss_sum)
            record = {
                "step": done,
                "epoch": e,
                "loss": final_loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "examples": n_step,
                "elapsed_s": round(time.perf_counter() - t0, 3),
            }
            if done % config.log_every == 0 or done == total_steps:
                history.append(record)
                if log_path is not None and main:
                    with log_path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{final_loss:.4f}")
            if config.checkpoint_every and (
                done % config.checkpoint_every == 0 or done == total_steps
            ):
                save_checkpoint(done)
            if on_step is not None:
                on_step(done, record)
    finally:
        bar.close()
        optimizer.zero_grad(set_to_none=True)  # free the last step's gradients
        model.train(was_training)
        stack.close()
        if config.method == "full":
            for p, flag in flags:
                p.requires_grad_(flag)

    # -- results -----------------------------------------------------------------------------
    if out is not None and main:
        if delta is not None:
            delta.save(
                out / "delta",
                meta={"tasks": meta["tasks"], "train": config.to_dict()},
                dtype=_delta_dtype(config.save_dtype) if config.save_dtype else None,
            )
        elif config.method == "lora":
            model.save_pretrained(str(out / "lora"))
    if config.merge:
        if delta is not None:
            delta.merge()
        elif config.method == "lora":
            model = model.merge_and_unload()
    result = TrainResult(
        model=model,
        method=config.method,
        delta=delta,
        steps=total_steps,
        history=history,
        final_loss=final_loss,
        n_trainable=n_trainable,
        n_params=n_params,
        wall_s=time.perf_counter() - t0,
        resumed_from=start,
        out_dir=out,
        config=config,
    )
    if out is not None and main:
        write_json_atomic(out / "train_result.json", provenance(**result.summary(), **meta))
    return result


def _masks_hash(neurons: NeuronSet) -> str:
    import hashlib

    h = hashlib.sha256(neurons.definition.encode())
    for m, t in neurons.masks.items():
        h.update(m.encode())
        h.update(t.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = [
    "METHODS",
    "TrainConfig",
    "TrainResult",
    "masked_gradient_hooks",
    "per_example_loss",
    "train",
]
