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
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from taskneurons._io import atomic_path, write_json_atomic, write_text_atomic
from taskneurons.data.prompts import collate, encode_example, pad_id_of
from taskneurons.data.tasks import Task, examples_hash
from taskneurons.losses import per_example_loss
from taskneurons.neurons.attribution import frozen_parameters
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.provenance import model_fingerprint, provenance
from taskneurons.training.checkpoint import (
    CHECKPOINT,
    _json_normal,
    _load_checkpoint,
    _load_trainable,
    _rng_state,
    _set_rng_state,
)
from taskneurons.training.config import SCHEDULES, TrainConfig, TrainResult, _delta_dtype
from taskneurons.training.neuron_delta import NeuronDelta


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
