"""Jobs to seconds, peak memory and disk, on one row of the device table; the report.

Time of a job: ``n x overhead + tokens x FLOPs/token(context) / rate`` (a generation step adds
the LM head at one position and one read of every weight at the device's bandwidth).

Peak memory of a job, in the model's dtype (``b`` bytes per value):

* weights: ``n_params x b`` (plus the device's base: the CPU process's own memory); on the
  CPU, plus the copies of the weights a stage holds in host memory (``StageWork.host_copies``:
  snapshots, per-task models; on a GPU they sit in host RAM, named in a note);
* attribution and training keep ``8 d_model + 4 d_ff`` values per token and layer for the
  backward (:meth:`ModelShape.act_values`); with checkpointing (``attribution.checkpointing``,
  ``train.checkpointing``) each layer's input only, plus one layer's activations during its
  recomputation, and the job runs at ``CHECKPOINT_SLOWDOWN`` of the plain rate;
* training keeps the LM head's float32 logits at every position (``vocab`` values per token:
  ``benchmarks/activation_memory.py`` measured 1.14x the per-token activation model without
  them, 1434 KiB against 1260 KiB, the difference one float32 vocabulary row of 192 KiB);
  attribution runs the head at the answer positions only;
* training adds ``16`` bytes per trainable scalar (float32 value, gradient, two AdamW moments;
  full fine-tuning: ``4 b`` per parameter: the gradient and two moments in the model's dtype);
* evaluation: the KV cache (``2 x kv_dim`` values per token and layer) of one batch.

Example:
    >>> est = estimate_stage(work, shape, device("h100"), "bfloat16")  # doctest: +SKIP
    >>> est.seconds, est.peak_bytes, est.disk_bytes  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

from taskneurons.experiments.estimate.devices import CHECKPOINT_SLOWDOWN, GIB, Device
from taskneurons.experiments.estimate.shapes import ModelShape
from taskneurons.experiments.estimate.stage_work import StageWork
from taskneurons.experiments.estimate.work import Job

BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


@dataclass
class StageEstimate:
    """The predicted cost of one stage."""

    name: str
    seconds: float
    peak_bytes: float
    disk_bytes: float
    by_kind: dict[str, float]
    notes: list[str]
    modelled: bool = True


def job_seconds(job: Job, shape: ModelShape, dev: Device, b: int) -> float:
    """Predicted seconds of ``job`` on ``dev`` (``b``: bytes per weight)."""
    rate = dev.rates[job.kind]
    flops = job.tokens * shape.flops_per_token(job.context)
    seconds = job.n * rate.overhead_s
    if job.kind == "decode":
        flops += job.tokens * shape.head_flops()
        if dev.name != "cpu":  # the CPU's fitted overhead already reads the weights
            seconds += job.n * shape.n_params * b / dev.bandwidth
        else:  # the overhead was fitted on the calibration model: scale by weight bytes
            seconds = job.n * shape.n_params * b / dev.bandwidth
    flops_per_s = rate.flops_per_s * (CHECKPOINT_SLOWDOWN if job.checkpointing else 1.0)
    return seconds + flops / flops_per_s


def job_peak(job: Job, shape: ModelShape, b: int) -> float:
    """Peak bytes of ``job`` beyond the weights."""
    per_token = shape.act_values() * b
    acts = job.batch_tokens * shape.n_layers * per_token  # every layer's, for the backward
    if job.checkpointing:  # each layer's input; one layer's activations while it reruns
        acts = job.batch_tokens * (shape.n_layers * shape.d_model * b + per_token)
    if job.kind.startswith("train_"):  # the LM head's logits at every position, float32
        acts += job.batch_tokens * shape.vocab * 4
    if job.kind in ("attribution", "train_neurons", "train_lora"):
        return acts + job.trainable * 16
    if job.kind == "train_full":
        return acts + job.trainable * 3 * b
    kv = job.batch_tokens * shape.n_layers * 2 * shape.kv_dim * b
    return kv + job.batch_tokens * shape.d_ff * b


def estimate_stage(work: StageWork, shape: ModelShape, dev: Device, dtype: str) -> StageEstimate:
    """Seconds, peak memory and disk of one stage's work on ``dev``."""
    b = BYTES.get(dtype, 4)
    weights = shape.n_params * b + dev.base_bytes
    copies = work.host_copies * shape.n_params * b  # [bytes] host memory: snapshots, models
    notes = list(work.notes)
    if dev.name == "cpu":
        weights += copies
    elif copies:
        notes.append(f"host RAM beside the GPU: {work.host_copies} copies of the weights, "
                     f"{human_bytes(copies)}")  # fmt: skip
    by_kind: dict[str, float] = {}
    peak = weights if work.jobs else 0.0
    for job in work.jobs:
        by_kind[job.kind] = by_kind.get(job.kind, 0.0) + job_seconds(job, shape, dev, b)
        peak = max(peak, weights + job_peak(job, shape, b))
    seconds = sum(by_kind.values())
    return StageEstimate(work.name, seconds, peak, work.disk, by_kind, notes, work.modelled)


def human_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def human_bytes(n: float) -> str:
    if n < 1e9:
        return f"{n / 1024**2:.0f} MiB"
    return f"{n / GIB:.1f} GiB"


def report(estimates: list[StageEstimate], dev: Device, header: list[str]) -> str:
    """The Markdown report: a header, one row per stage, the total, the assumptions."""
    lines = [*header, "", "| stage | time | peak memory | disk | where the time goes |",
             "|---|---:|---:|---:|---|"]  # fmt: skip
    for e in estimates:
        if not e.modelled:
            lines.append(f"| {e.name} | not modelled | | | {'; '.join(e.notes)} |")
            continue
        parts = ", ".join(
            f"{k} {v / e.seconds:.0%}" for k, v in sorted(e.by_kind.items(), key=lambda kv: -kv[1])
        ) if e.seconds > 0 else ""  # fmt: skip
        lines.append(
            f"| {e.name} | {human_seconds(e.seconds)} | {human_bytes(e.peak_bytes)} | "
            f"{human_bytes(e.disk_bytes)} | {parts} |"
        )
    total = sum(e.seconds for e in estimates)
    peak = max((e.peak_bytes for e in estimates), default=0.0)
    lines.append(f"| **total** | {human_seconds(total)} | {human_bytes(peak)} | "
                 f"{human_bytes(sum(e.disk_bytes for e in estimates))} | |")  # fmt: skip
    if peak > dev.memory_bytes:
        lines.append(
            f"\nDoes not fit: the peak {human_bytes(peak)} is more than the "
            f"{human_bytes(dev.memory_bytes)} of {dev.name}."
        )
    notes = [f"- {e.name}: {n}" for e in estimates for n in e.notes if e.modelled]
    lines += ["", "Assumptions:", *(f"- {a}" for a in dev.assumptions), *notes]
    return "\n".join(lines)
