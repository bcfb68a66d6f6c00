"""Attribution speed and memory: ours vs the naive reference vs captum, same data, one run.

Embedded model (SmolLM2-135M), the same examples of 3 tasks of ../shared/data (train split,
label-stratified, seeded), the ``ffn`` definition, per-example aggregation. Each method runs
in its own subprocess (so one method's freed memory cannot hide another's peak); each reports
its wall time (model load excluded) and its peak resident memory above the level reached
after loading the model and data, sampled every 2 ms from /proc/self/statm.

Methods:
  ours     taskneurons.relevance_scores on each task's examples, as `taskneurons detect`
           runs it: frozen parameters, graph from the first hooked activation, LM head only
           at answer positions, in-backward reduction, examples batched longest first.
  ours-same-batches
           the same function on the in-order batches the baselines get (separates the gain
           of the computation from the gain of batching by length).
  naive    taskneurons.neurons.attribution.reference_relevance_scores on the examples
           batched in order: parameter gradients on, full logits, retain_grad on every
           activation.
  captum   captum.attr.LayerGradientXActivation on the input of every W2 (down_proj),
           attribute_to_layer_input=True, parameters trainable as captum expects; its
           [batch, pos, d_ff] attributions reduced the same way; in-order batches.

Batch building for the in-order methods happens before the clock starts; ours encodes its
examples inside the timed call.

Usage:
  python benchmarks/attribution.py [--n-examples 128] [--batch-size 8] [--tasks sst2,agnews,mnli]
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

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"


def _examples(args):
    from taskneurons.data.load import load_task
    from taskneurons.data.tasks import subset

    tasks = [load_task(Path(args.data) / t) for t in args.tasks.split(",")]
    per = [
        args.n_examples // len(tasks) + (i < args.n_examples % len(tasks))
        for i in range(len(tasks))
    ]
    return [
        (t, subset(t.train, n, seed=args.seed, labels=t.labels))
        for t, n in zip(tasks, per, strict=True)
    ]


def run_method(args) -> dict:
    import torch

    from taskneurons.data.prompts import PromptConfig, iter_batches
    from taskneurons.models.loading import load_model
    from taskneurons.neurons.attribution import AttributionConfig, relevance_scores
    from taskneurons.neurons.space import NeuronSpace
    from taskneurons.testing.oracles import reference_relevance_scores

    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m")
    space = NeuronSpace(model, "ffn")
    prompt = PromptConfig(max_length=args.max_length)
    data = _examples(args)
    grouped = args.method == "ours"
    batches = [
        b
        for task, exs in data
        for b in iter_batches(tok, task, exs, prompt, args.batch_size, group_by_length=grouped)
    ]
    n_tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))
    n_positions = int(sum(b["input_ids"].numel() for b in batches))
    if grouped:
        batches = None  # ours builds its own batches inside the timed call
    # the cached weights are memory-mapped lazily: read them all before the baseline so the
    # model itself is not counted as a method's extra memory
    with torch.no_grad():
        for param in model.parameters():
            param.sum()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        cfg = AttributionConfig(batch_size=args.batch_size, prompt=prompt)
        if args.method == "ours":
            # one call per task, as `taskneurons detect` does; example-weighted mean
            n_all = sum(len(exs) for _, exs in data)
            scores = sum(
                relevance_scores(
                    model, task, space, tokenizer=tok, config=cfg, examples=exs, progress=False
                )
                .scores["ffn"]
                .double()
                * (len(exs) / n_all)
                for task, exs in data
            ).float()
        elif args.method == "ours-same-batches":
            scores = relevance_scores(model, batches, space, config=cfg, progress=False).scores[
                "ffn"
            ]
        elif args.method == "naive":
            scores = reference_relevance_scores(model, batches, space)["ffn"].float()
        else:
            scores = _captum(model, space, batches)
        seconds = time.perf_counter() - t0
    out = Path(args.json)
    torch.save(scores, out.with_suffix(".pt"))
    return {
        "method": args.method,
        "seconds": seconds,
        "peak_extra_mib": (mem.peak - mem.start) / 2**20,
        "tokens": n_tokens,
        "positions": n_positions,
        "tokens_per_s": n_tokens / seconds,
        "examples": sum(len(e) for _, e in data),
    }


def _captum(model, space, batches):
    import torch
    from captum.attr import LayerGradientXActivation

    layers = [space.site_module(i, "ffn") for i in range(space.n_layers)]
    sums = torch.zeros(space.shape("ffn"), dtype=torch.float64)
    n = 0
    for p in model.parameters():
        p.requires_grad_(True)
    for batch in batches:
        labels = batch["labels"]

        def forward(input_ids, attention_mask, labels=labels):
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            logp = torch.log_softmax(logits.float()[:, :-1], dim=-1)
            tgt = labels[:, 1:]
            valid = tgt != -100
            nll = -logp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0] * valid
            return nll.sum(1) / valid.sum(1).clamp(min=1)  # [batch]: per-example loss

        lga = LayerGradientXActivation(forward, layers, multiply_by_inputs=True)
        attrs = lga.attribute(
            batch["input_ids"],
            additional_forward_args=(batch["attention_mask"],),
            attribute_to_layer_input=True,
        )
        mask = batch["attention_mask"][..., None]
        for i, a in enumerate(attrs):
            a = a[0] if isinstance(a, tuple) else a
            sums[i] += (a.detach().double() * mask).sum(1).abs().sum(0)
        n += batch["input_ids"].shape[0]
        model.zero_grad(set_to_none=True)
    return (sums / n).float()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default=os.environ.get("TASKNEURONS_SHARED_DATA", DEFAULT_DATA))
    ap.add_argument("--tasks", default="sst2,agnews,mnli")
    ap.add_argument(
        "--n-examples", type=int, default=128, help="examples in all (split over tasks)"
    )
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="ours,ours-same-batches,naive,captum")
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:  # child process
        res = run_method(args)
        Path(args.json).write_text(json.dumps(res))
        return 0
    import tempfile

    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.methods.split(","):
            js = Path(tmp) / f"{m}.json"
            cmd = [
                sys.executable,
                __file__,
                "--method",
                m,
                "--json",
                str(js),
                "--data",
                str(args.data),
                "--tasks",
                args.tasks,
                "--n-examples",
                str(args.n_examples),
                "--batch-size",
                str(args.batch_size),
                "--max-length",
                str(args.max_length),
                "--seed",
                str(args.seed),
            ]
            print(f"running {m} ...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True)
            results[m] = json.loads(js.read_text())
            results[m]["scores"] = torch.load(js.with_suffix(".pt"))
    ours = results["ours"]
    print(
        f"\nattribution on {ours['examples']} examples ({args.tasks}), {ours['tokens']} tokens, "
        f"batch {args.batch_size}, SmolLM2-135M, {torch.get_num_threads()} threads"
    )
    print(
        "| method | positions in its batches | seconds | tokens/s | peak extra MiB "
        "| max rel. diff vs ours |"
    )
    print("|---|---|---|---|---|---|")
    for m, r in results.items():
        ref = ours["scores"]
        diff = float((r["scores"] - ref).abs().max() / ref.abs().max())
        print(
            f"| {m} | {r['positions']} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} "
            f"| {r['peak_extra_mib']:.0f} | {diff:.1e} |"
        )
    print()
    for m, r in results.items():
        if m == "ours":
            continue
        print(
            f"ours vs {m}: {r['seconds'] / ours['seconds']:.2f}x faster, "
            f"{r['peak_extra_mib'] / max(ours['peak_extra_mib'], 1e-9):.2f}x less peak memory"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
