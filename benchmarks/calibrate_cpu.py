"""Measure this CPU's throughput for the cost model of ``taskneurons estimate``.

Runs the embedded SmolLM2-135M (float32, torch's default threads, as ``taskneurons run``
does) through the kinds of work a stage is made of, on batches of 8 x 64 tokens (the size of
the demo's and the sweep's batches), and records each kind's rate in FLOP/s of
:meth:`ModelShape.flops_per_token` (the median of 3 timed calls after a warm-up, so that a
loaded machine's spikes count less):

* ``forward``: a no-grad forward (evaluation by label scoring, prompts of generation);
* ``attribution``: :func:`relevance_scores` on a ready-made batch (forward + activation-only
  backward);
* ``train_neurons`` / ``train_full`` / ``train_lora``: one AdamW step of a NeuronDelta on 10 %
  of the ``ffn`` neurons, of every parameter, of PEFT LoRA r 8;
* ``decode``: one greedy generation step with the KV cache, at batch 8 and 32, fitted as a
  fixed time per step (reading the weights) plus a rate over the batch's tokens.

A first version fitted a per-batch overhead from two sizes; on the loaded machine the fit was
noise (12.6 s of "overhead" per attribution batch), so every kind but ``decode`` now has none.

Writes the fitted table to ``src/taskneurons/experiments/estimate/cpu_calibration.json``
(``--out`` to write elsewhere), with the machine's load (``uptime``) when it ran.

    python benchmarks/calibrate_cpu.py           # about 2 minutes on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from taskneurons.data.prompts import EncodedExample, collate
from taskneurons.experiments.estimate.shapes import KNOWN_SHAPES
from taskneurons.losses import per_example_loss
from taskneurons.models.loading import load_model
from taskneurons.neurons.attribution import frozen_parameters, relevance_scores
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint
from taskneurons.training.neuron_delta import NeuronDelta

OUT = (
    Path(__file__).resolve().parents[1]
    / "src/taskneurons/experiments/estimate/cpu_calibration.json"
)
SHAPE = KNOWN_SHAPES["smollm2-135m"]
#: (batch, positions) each kind is timed at
SIZE = (8, 64)


def _batch(n: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    exs = [
        EncodedExample(tuple(torch.randint(10, 40000, (length,), generator=g).tolist()), length - 3)
        for _ in range(n)
    ]
    return collate(exs, pad_id=0)


def _timed(fn, reps: int = 3) -> float:
    """Median seconds of ``reps`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _step_fn(model, kind: str, batch):
    """A function doing one step of ``kind`` on ``batch``."""
    if kind == "forward":
        return lambda: _no_grad_forward(model, batch)
    if kind == "attribution":
        return lambda: relevance_scores(model, [batch], progress=False)
    params = _trainable(model, kind)
    opt = torch.optim.AdamW(params, lr=1e-6)

    def step():
        opt.zero_grad(set_to_none=True)
        per_example_loss(model, batch).mean().backward()
        opt.step()

    return step


def _no_grad_forward(model, batch):
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              logits_to_keep=1, use_cache=False)  # fmt: skip


def _trainable(model, kind: str) -> list[torch.nn.Parameter]:
    if kind == "train_full":
        return list(model.parameters())
    if kind == "train_lora":
        from peft import LoraConfig, get_peft_model

        peft = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
        return [p for p in peft.parameters() if p.requires_grad]
    space = NeuronSpace(model, "ffn")
    pick = torch.randperm(space.size, generator=torch.Generator().manual_seed(0))
    ids = pick[: space.size // 10]
    neurons = NeuronSet.from_ids(space, ids, {"model_fingerprint": model_fingerprint(model)})
    delta = NeuronDelta(model, neurons).attach()
    return delta.parameters()


def fit(points: list[tuple[float, float]]) -> dict[str, float]:
    """``{overhead_s, flops_per_s}`` through two ``(flops, seconds)`` points (overhead >= 0)."""
    (f1, t1), (f2, t2) = points
    rate = (f2 - f1) / max(t2 - t1, 1e-9)
    overhead = t1 - f1 / rate
    if rate <= 0 or overhead < 0:  # noisy: no overhead, the rate of the larger size
        return {"overhead_s": 0.0, "flops_per_s": f2 / t2}
    return {"overhead_s": round(overhead, 5), "flops_per_s": float(f"{rate:.4g}")}


def measure_kind(kind: str) -> dict[str, float]:
    model, _ = load_model("smollm2-135m")
    model.eval()
    n, length = SIZE
    batch = _batch(n, length)
    flops = n * length * SHAPE.flops_per_token(length)
    with frozen_parameters(model) if kind == "train_neurons" else _nothing():
        seconds = _timed(_step_fn(model, kind, batch))
    return {"overhead_s": 0.0, "flops_per_s": float(f"{flops / seconds:.4g}")}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def measure_decode() -> dict[str, float]:
    """Seconds per greedy step at batch 8 and 32 (prompts of 32, 32 new tokens), fitted.

    A step is the difference of a 33-token and a 1-token generation over 32 steps, each the
    median of 5 calls: with 16 steps and 2 calls, two idle runs minutes apart fitted 38.6
    and 123 GFLOP/s.
    """
    model, _ = load_model("smollm2-135m")
    points = []
    for n in (8, 32):
        ids = _batch(n, 32)["input_ids"]
        mask = torch.ones_like(ids)

        def gen(new: int, ids=ids, mask=mask):
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                               min_new_tokens=new, do_sample=False, pad_token_id=0)  # fmt: skip

        per_step = (_timed(lambda: gen(33), 5) - _timed(lambda: gen(1), 5)) / 32
        points.append((n * SHAPE.flops_per_token(40) + n * SHAPE.head_flops(), per_step))
    return fit(points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    kinds = {}
    for kind in ("forward", "attribution", "train_neurons", "train_full", "train_lora", "decode"):
        kinds[kind] = measure_decode() if kind == "decode" else measure_kind(kind)
        print(kind, kinds[kind], f"{time.perf_counter() - t0:.0f} s", flush=True)
    table = {
        "device": "cpu",
        "what": "this machine's CPU, measured by benchmarks/calibrate_cpu.py",
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "model": "smollm2-135m float32",
        "uptime_before": load,
        "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "seconds": round(time.perf_counter() - t0, 1),
        "kinds": kinds,
    }
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
