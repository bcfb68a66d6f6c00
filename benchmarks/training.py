"""Training step speed and memory: neuron deltas vs naive masking vs LoRA vs full fine-tuning.

Embedded model (SmolLM2-135M, float32), the same fixed batches for every method (by default 8
batches of 4 examples drawn with a seeded generator from the SST-2 train split of
../shared/data, answer-only loss, max_length 128, built with
``taskneurons.data.prompts.iter_batches``). Each method runs in its own subprocess (so one
method's freed memory cannot hide another's peak) and does the same training steps as
``taskneurons.training.train``: ``zero_grad``, ``per_example_loss(model, batch).mean()``,
``backward``, gradient-norm clipping to 1.0, ``AdamW.step`` (lr 1e-4, no weight decay).
The first ``--warmup`` steps (on the first batches) are not timed; then every batch is one
timed step. Each method reports its trainable parameter count, the median step time (wall
clock, and CPU time of the process without the memory sampler's: on a machine shared with other
jobs the CPU time is the steadier figure, as waiting for a core does not count), its peak
resident memory above the level reached after loading the model and the batches and
reading every weight once (the cached weights are memory-mapped lazily, so the first forward
would otherwise count the whole model as "extra"), sampled every 2 ms from /proc/self/statm,
and the loss of its last step (neurons, naive-ffn and naive-all train the same entries by the
same amounts, so their losses agree up to float rounding).
The extra memory includes the trainable tensors, gradients, optimizer state and activations.
Torch runs with ``--threads`` intra-op threads (default 1: on a 2-core machine shared with
other jobs, 2 OpenMP threads spin-wait on each other and steps get 3-10x slower and erratic).

Methods:
  neurons    taskneurons.NeuronDelta on a fixed NeuronSet of k % of the ``ffn`` neurons per
             layer (seeded random units: the selection does not change the cost), base model
             frozen, AdamW on the deltas only.
  naive-ffn  the fair naive neuron training: every parameter outside the FFN linears frozen
             (requires_grad False); the FFN linears' weights that the NeuronSet's neurons own
             entries of (gate/up/down of every layer) trainable, their gradients multiplied by
             the selection masks (taskneurons.training.neuron_delta.selection_masks) in a
             gradient hook; AdamW on those weights only.
  naive-all  the naive neuron training of taskneurons.testing.oracles.masked_gradient_hooks:
             every parameter trainable, gradients of the non-selected entries zeroed (all of
             them outside the FFN), AdamW on all parameters.
  lora       PEFT LoRA r=8 (alpha 16, dropout 0) on every linear layer but the LM head
             (``target_modules="all-linear"``, as taskneurons.training.train does).
  full       full fine-tuning: AdamW on all parameters.

The parent prints a Markdown table and, for every other method X, the line
"neurons / X: step time ...x (wall), ...x (CPU); peak extra memory ...x" (below 1: neurons
is faster / smaller).

With ``--profile`` the neurons child also runs torch.profiler (``record_shapes``) over its
timed steps and prints, on stderr, the ops that take the most self CPU time, by op and by op
and input shapes (where the hooks and the deltas' own matmuls spend their time); the profiler's
overhead then also shows in that child's step times and memory, so use separate runs for the
table and for the profile.

Usage:
  python benchmarks/training.py [--n-batches 8] [--batch-size 4] [--k 10] [--threads 1]
                                [--methods neurons,naive-ffn,naive-all,lora,full] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _memory import PeakRSS  # benchmarks/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
DEFAULT_TASK = HERE.parent.parent / "shared" / "data" / "sst2"
METHODS = ("neurons", "naive-ffn", "naive-all", "lora", "full")


def _batches(args, tok) -> list[dict]:
    """``n_batches`` fixed batches of ``batch_size`` train examples (seeded draw)."""
    import torch

    from taskneurons.data.load import load_task
    from taskneurons.data.prompt_config import PromptConfig
    from taskneurons.data.prompts import iter_batches

    task = load_task(args.task)
    n = args.n_batches * args.batch_size
    if len(task.train) < n:
        raise SystemExit(f"{args.task}: {len(task.train)} train examples, need {n}")
    gen = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(task.train), generator=gen)[:n].tolist()
    examples = [task.train[i] for i in pick]
    prompt = PromptConfig(max_length=args.max_length)
    return list(iter_batches(tok, task, examples, prompt, args.batch_size))


def _neuron_set(model, k: float, seed: int):
    """A fixed NeuronSet: ``count_for(k, d_ff)`` seeded random ``ffn`` units in every layer."""
    import torch

    from taskneurons.neurons.neuron_set import NeuronSet
    from taskneurons.neurons.selection import count_for, random_like
    from taskneurons.neurons.space import NeuronSpace

    space = NeuronSpace(model, "ffn")
    layers, units = space.shape("ffn")
    per_layer = count_for(k, units)
    template = torch.zeros(layers, units, dtype=torch.bool)
    template[:, :per_layer] = True  # only the per-layer counts matter to random_like
    return random_like(NeuronSet("ffn", {"ffn": template}), space, seed=seed), space


def _masked_ffn(model, neurons, space) -> list:
    """The fair naive neuron training: only the FFN weights that own selected entries train.

    Every other parameter is frozen; each trainable weight's gradient is multiplied by its
    selection mask in a gradient hook, so only the selected neurons' entries change.
    Returns the trainable parameters (for the optimizer).
    """
    from taskneurons.training.neuron_delta import selection_masks

    masks = selection_masks(model, neurons, space)  # name -> bool mask, FFN weights only
    params = []
    for name, p in model.named_parameters():
        mask = masks.get(name)
        p.requires_grad_(mask is not None)
        if mask is not None:
            p.register_hook(lambda g, m=mask: g * m.to(g.dtype))
            params.append(p)
    return params


def _setup(method: str, model, neurons, space):
    """Make ``model`` trainable the method's way: ``(model, trainable parameters)``."""
    from taskneurons.testing.oracles import masked_gradient_hooks
    from taskneurons.training.neuron_delta import NeuronDelta

    if method == "neurons":
        for p in model.parameters():  # the base model stays frozen
            p.requires_grad_(False)
        return model, NeuronDelta(model, neurons, space=space).attach().parameters()
    if method == "naive-ffn":
        return model, _masked_ffn(model, neurons, space)
    if method == "naive-all":
        masked_gradient_hooks(model, neurons, space)  # turns requires_grad on everywhere
        return model, list(model.parameters())
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules="all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, cfg)
        return model, [p for p in model.parameters() if p.requires_grad]
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, list(model.parameters())
    raise SystemExit(f"unknown method {method!r}; use one of {METHODS}")


def _print_profile(prof) -> None:
    """The ops with the most self CPU time, by op and by (op, input shapes), on stderr.

    The second table separates, e.g., the deltas' own matmuls (one dimension = the selected
    neurons per layer) from the frozen base's.
    """
    for by_shape in (False, True):
        table = prof.key_averages(group_by_input_shape=by_shape).table(
            sort_by="self_cpu_time_total", row_limit=25, max_shapes_column_width=60
        )
        print(f"\nprofile of the timed neurons steps (by input shape: {by_shape})", file=sys.stderr)
        print(table, file=sys.stderr)


def _steps(args, model, params, batches, mem) -> dict:
    """Warm-up steps, then one timed step per batch: wall and CPU seconds, last loss."""
    import torch

    from taskneurons.losses import per_example_loss

    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    times: list[float] = []  # wall seconds per timed step
    cpu_times: list[float] = []  # CPU seconds of this process (sampler excluded) per step
    prof = None
    schedule = batches[: args.warmup] + batches  # warm-up steps, then each batch once
    for i, batch in enumerate(schedule):
        timed = i >= args.warmup
        if timed and i == args.warmup and args.profile and args.method == "neurons":
            cpu = torch.profiler.ProfilerActivity.CPU
            prof = torch.profiler.profile(activities=[cpu], record_shapes=True)
            prof.__enter__()
        t0, c0 = time.perf_counter(), time.process_time() - mem.sampler_cpu()
        optimizer.zero_grad(set_to_none=True)
        loss = per_example_loss(model, batch).mean()  # [batch] -> scalar
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        dt = time.perf_counter() - t0
        dc = time.process_time() - mem.sampler_cpu() - c0
        if timed:
            times.append(dt)
            cpu_times.append(dc)
    if prof is not None:
        prof.__exit__(None, None, None)
        _print_profile(prof)
    return {"times": times, "cpu_times": cpu_times, "final_loss": float(loss.detach())}


def run_method(args) -> dict:
    import peft  # noqa: F401  (imported before the baseline in every child: same footing)
    import torch

    from taskneurons.models.loading import load_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tok = load_model("smollm2-135m")
    with torch.no_grad():  # the weights are mmap'd lazily: read them all before the baseline
        for p in model.parameters():
            p.sum()
    batches = _batches(args, tok)
    neurons, space = _neuron_set(model, args.k, args.seed)
    n_tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))
    n_params = int(sum(p.numel() for p in model.parameters()))
    model.train()
    with PeakRSS() as mem:
        model, params = _setup(args.method, model, neurons, space)
        n_trainable = int(sum(p.numel() for p in params))
        steps = _steps(args, model, params, batches, mem)
    times, cpu_times = steps["times"], steps["cpu_times"]
    return {
        "method": args.method,
        "n_trainable": n_trainable,
        "n_params": n_params,
        "median_step_s": statistics.median(times),
        "min_step_s": min(times),
        "max_step_s": max(times),
        "median_step_cpu_s": statistics.median(cpu_times),
        "steps": len(times),
        "peak_extra_mib": (mem.peak - mem.start) / 2**20,
        "tokens": n_tokens,
        "neurons": len(neurons),
        "threads": torch.get_num_threads(),
        "final_loss": steps["final_loss"],
    }


def _run_children(args, methods) -> dict:
    """Each method in its own subprocess; its result dict."""
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            js = Path(tmp) / f"{m}.json"
            cmd = [sys.executable, __file__, "--method", m, "--json", str(js)]
            for key in (
                "task",
                "n_batches",
                "batch_size",
                "max_length",
                "warmup",
                "k",
                "seed",
                "threads",
            ):
                cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            if args.profile:
                cmd.append("--profile")
            print(f"running {m} ...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True)
            results[m] = json.loads(js.read_text())
    return results


def _report(args, results, total_s) -> None:
    first = next(iter(results.values()))
    print(
        f"\ntraining steps on SmolLM2-135M (float32, {first['n_params'] / 1e6:.1f} M parameters), "
        f"{args.n_batches} batches x {args.batch_size} examples of {Path(args.task).name} "
        f"({first['tokens']} tokens, max_length {args.max_length}, seed {args.seed}), "
        f"{args.warmup} warm-up steps, k = {args.k:g} % ffn neurons ({first['neurons']}), "
        f"{first['threads']} threads, {total_s:.0f} s in all\n"
    )
    print(
        "| method | trainable params | median step s (wall) | min-max step s (wall) "
        "| median step s (CPU) | peak extra MiB | last step loss |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m, r in results.items():
        print(
            f"| {m} | {r['n_trainable']:,} | {r['median_step_s']:.3f} | "
            f"{r['min_step_s']:.3f}-{r['max_step_s']:.3f} | {r['median_step_cpu_s']:.3f} | "
            f"{r['peak_extra_mib']:.0f} | {r['final_loss']:.4f} |"
        )
    if "neurons" not in results:
        return
    ours = results["neurons"]
    print()
    for m, r in results.items():
        if m == "neurons":
            continue
        wall = ours["median_step_s"] / r["median_step_s"]
        cpu = ours["median_step_cpu_s"] / r["median_step_cpu_s"]
        mem = ours["peak_extra_mib"] / max(r["peak_extra_mib"], 1e-9)
        print(
            f"neurons / {m}: step time {wall:.2f}x (wall), {cpu:.2f}x (CPU); "
            f"peak extra memory {mem:.2f}x"
        )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default=os.environ.get("TASKNEURONS_TASK", str(DEFAULT_TASK)))
    ap.add_argument("--n-batches", type=int, default=8, help="timed steps (one per batch)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    ap.add_argument("--k", type=float, default=10.0, help="percent of ffn neurons per layer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: on a shared 2-core machine 2 threads spin-wait badly)",
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--profile", action="store_true", help="profile the neurons method's steps")
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.warmup < 0 or args.n_batches < 1 or args.batch_size < 1:
        ap.error("need --warmup >= 0, --n-batches >= 1 and --batch-size >= 1")
    if args.warmup > args.n_batches:
        ap.error(f"--warmup {args.warmup} must not exceed --n-batches {args.n_batches}")
    methods = args.methods.split(",")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown methods {bad}; use some of {','.join(METHODS)}")
    if args.method:  # child process
        res = run_method(args)
        Path(args.json).write_text(json.dumps(res))
        return 0
    t_all = time.perf_counter()
    results = _run_children(args, methods)
    _report(args, results, time.perf_counter() - t_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
