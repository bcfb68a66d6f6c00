"""Continual-learning cost per method: time and peak memory of the same stage, vs SeqFT.

Embedded model (SmolLM2-135M, float32), two ``../shared/data`` tasks in order (default sst2 then
agnews), the same label-stratified train subsets for every method (seed 0). Each method runs in
its own subprocess (so one method's freed memory cannot hide another's peak) through the
library's method interface (``make_method`` + ``run_stage``, as ``taskneurons continual``
does): stage 1 untimed, then stage 2 timed (wall clock, and the peak resident memory above the
level reached before it, sampled every 2 ms). Stage 2 is where the methods differ most: O-LoRA
adds its orthogonality loss against stage 1's adapter, NCFT and W-NCFT detect the new task's
neurons on the tuned model first, EPI and W-NCFT keep per-task state. Also printed: what each
method stores per task for inference (``stored_bytes_per_task``, MB).

Learning rates: each method's chosen one from ``--lr-choice`` (an ``lr_choice.json`` written by
a continual run's ``tune`` section, default the fair runs' file
``results/continual-fair-lr-smollm2-cpu/lr_choice.json``; W-NCFT inferred takes W-NCFT's), else
``--lr`` (1e-4) for every method; the table says which. The time of a step hardly depends on
the learning rate, but the rates are those the comparison runs with.

Usage:
  python benchmarks/continual.py [--tasks sst2,agnews] [--n-train 32] [--batch-size 8]
                                 [--methods seqft,migu] [--lr-choice PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _memory import PeakRSS  # benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
METHODS = ("seqft", "seqlora", "olora", "epi", "migu", "pertask", "ncft", "wncft")
DEFAULT_CHOICE = REPO / "results" / "continual-fair-lr-smollm2-cpu" / "lr_choice.json"


def chosen_lrs(path: Path, fallback: float) -> tuple[dict[str, float], str]:
    """Method -> learning rate from an ``lr_choice.json`` (its chosen ``lr``), and the source."""
    if not path.is_file():
        return {m: fallback for m in METHODS}, f"lr {fallback:g} for every method (no {path})"
    methods = json.loads(path.read_text())["methods"]
    lrs = {m: float(v["choice"].get("lr", fallback)) for m, v in methods.items()}
    return {m: lrs.get(m, fallback) for m in METHODS}, f"chosen lrs from {path}"


def run_method(args) -> dict:
    """One method: stage 1 untimed, stage 2 timed (in this process)."""
    import torch

    from taskneurons.config import build
    from taskneurons.continual.base import run_stage
    from taskneurons.continual.method_config import MethodConfig
    from taskneurons.continual.registry import make_method
    from taskneurons.data.load import load_task
    from taskneurons.models.loading import load_model
    from taskneurons.training.train_config import TrainConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tok = load_model("smollm2-135m")
    tasks = [
        load_task(str(Path(args.data) / t)).limit(n_train=args.n_train, seed=args.seed)
        for t in args.tasks.split(",")
    ]
    prompt = {"max_length": args.max_length}
    train = TrainConfig.from_dict(
        {
            "lr": args.lr,
            "epochs": 1,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "prompt": prompt,
        }
    )
    options = {
        "k": 10.0,
        "attribution": {"n_examples": args.n_train, "prompt": prompt},
        "n_vector_samples": args.n_train,
    }
    keys = MethodConfig.keys(args.method)
    options = {k: v for k, v in options.items() if k in keys}
    method_cfg = build(MethodConfig, {"name": args.method, **options})
    method = make_method(method_cfg, model, tok, train)
    run_stage(method, tasks[0], 0)
    start = time.perf_counter()
    with PeakRSS() as mem:
        run_stage(method, tasks[1], 1)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_extra_mib": (mem.peak - mem.start) / 2**20,
        "stored_mb": method.stored_bytes_per_task() / 2**20,
    }


def _child(args, method: str) -> dict:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-continual-{os.getpid()}-{method}.json"
    cmd = [sys.executable, __file__, "--method", method, "--json", str(out)]
    cmd += ["--tasks", args.tasks, "--n-train", str(args.n_train), "--data", args.data]
    cmd += ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
    cmd += ["--seed", str(args.seed), "--threads", str(args.threads)]
    cmd += ["--lr", str(args.lrs[method])]
    subprocess.run(cmd, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def _report(args, results: dict, total: float) -> None:
    print(
        f"\ncontinual stage 2 of {args.tasks.replace(',', ' -> ')} on SmolLM2-135M float32, "
        f"{args.n_train} train examples per task, batch {args.batch_size}, max_length "
        f"{args.max_length}, {args.threads} threads, {args.lr_source}, {total:.0f} s in all\n"
    )
    base = results.get("seqft")
    print(
        "| method | lr | stage 2 s | peak extra MiB | stored MB/task | time / SeqFT "
        "| memory / SeqFT |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m, r in results.items():
        t = r["seconds"] / base["seconds"] if base else float("nan")
        mem = r["peak_extra_mib"] / max(base["peak_extra_mib"], 1e-9) if base else float("nan")
        print(
            f"| {m} | {args.lrs[m]:g} | {r['seconds']:.1f} | {r['peak_extra_mib']:.0f} | "
            f"{r['stored_mb']:.1f} | "
            f"{t:.2f}x | {mem:.2f}x |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default=os.environ.get("TASKNEURONS_SHARED_DATA", DEFAULT_DATA))
    ap.add_argument("--tasks", default="sst2,agnews")
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--lr-choice", type=Path, default=DEFAULT_CHOICE)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:  # child process
        Path(args.json).write_text(json.dumps(run_method(args)))
        return 0
    args.lrs, args.lr_source = chosen_lrs(args.lr_choice, args.lr)
    start = time.perf_counter()
    results = {}
    for m in args.methods.split(","):
        print(f"running {m} ...", file=sys.stderr)
        results[m] = _child(args, m)
    _report(args, results, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
