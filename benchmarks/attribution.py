"""Attribution speed and memory: ours vs naive references vs captum, same data, one run.

Embedded model (SmolLM2-135M, float32), the same examples of 3 tasks of ../shared/data (train
split, label-stratified, seeded), the ``ffn`` definition, per-example aggregation, torch with
``--threads`` intra-op threads. Each method runs in its own subprocess (so one method's freed
memory cannot hide another's peak); each reports its wall time (model load excluded) and its
peak resident memory above the level reached after loading the model and data and reading
every weight once, sampled every 2 ms from /proc/self/statm. Every parameter's
``requires_grad`` is as the method leaves it: only ``naive`` turns parameter gradients on.

Methods:
  ours     taskneurons.relevance_scores on each task's examples, as `taskneurons detect`
           runs it: frozen parameters, graph from the first hooked activation, model run up
           to the last answer-predicting position, LM head only at answer positions,
           in-backward reduction, examples batched longest first.
  ours-same-batches
           the same function on the in-order batches the baselines get (separates the gain
           of the computation from the gain of batching by length).
  naive    taskneurons.testing.oracles.reference_relevance_scores (the test oracle) on the
           in-order batches: every parameter's gradient on, logits at every position,
           retain_grad on every activation.
  naive-frozen
           the same computation with every parameter frozen (requires_grad False): layer 0's
           hooked activation is made a leaf that requires grad, later ones retain_grad; still
           full-vocabulary logits at every position of the whole batch.
  captum   captum.attr.LayerGradientXActivation on the input of every W2 (down_proj),
           attribute_to_layer_input=True, every parameter frozen (captum's forward pre-hooks
           make layer 0's input require grad), forward function = ours's loss
           (taskneurons.losses.per_example_loss: positions up to the last answer-predicting
           one, LM head only at answer positions via logits_to_keep); its [batch, pos, d_ff]
           attributions reduced the same way; in-order batches.

Batch building for the in-order methods happens before the clock starts; ours encodes its
examples inside the timed call. The parent prints a Markdown table (seconds, tokens/s, peak
extra MiB, max relative difference of the scores vs ours) and ratio lines against ours and
ours-same-batches.

Usage:
  python benchmarks/attribution.py [--n-examples 128] [--batch-size 8] [--max-length 256]
                                   [--tasks sst2,agnews,mnli] [--threads 2] [--methods ...]
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
METHODS = ("ours", "ours-same-batches", "naive", "naive-frozen", "captum")
IN_ORDER = ("naive", "naive-frozen", "captum")  # the baselines, all on in-order batches


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


def _ours(model, tok, space, data, cfg):
    """One relevance_scores call per task, as `taskneurons detect` does; example-weighted."""
    from taskneurons.neurons.attribution import relevance_scores

    n_all = sum(len(exs) for _, exs in data)
    return sum(
        relevance_scores(
            model, task, space, tokenizer=tok, config=cfg, examples=exs, progress=False
        )
        .scores["ffn"]
        .double()
        * (len(exs) / n_all)
        for task, exs in data
    ).float()


def run_method(args) -> dict:
    import torch

    from taskneurons.data.prompt_config import PromptConfig
    from taskneurons.data.prompts import iter_batches
    from taskneurons.models.loading import load_model
    from taskneurons.neurons.attribution import relevance_scores
    from taskneurons.neurons.attribution_config import AttributionConfig
    from taskneurons.neurons.space import NeuronSpace
    from taskneurons.testing.oracles import reference_relevance_scores

    torch.set_num_threads(args.threads)
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
    cfg = AttributionConfig(batch_size=args.batch_size, prompt=prompt)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        if args.method == "ours":
            scores = _ours(model, tok, space, data, cfg)
        elif args.method == "ours-same-batches":
            scores = relevance_scores(model, batches, space, config=cfg, progress=False)
            scores = scores.scores["ffn"]
        elif args.method == "naive":
            scores = reference_relevance_scores(model, batches, space)["ffn"].float()
        elif args.method == "naive-frozen":
            scores = _naive_frozen(model, space, batches)
        else:
            scores = captum_scores(model, space, batches)
        seconds = time.perf_counter() - t0
    torch.save(scores, Path(args.json).with_suffix(".pt"))
    return {
        "method": args.method,
        "seconds": seconds,
        "peak_extra_mib": (mem.peak - mem.start) / 2**20,
        "tokens": n_tokens,
        "positions": n_positions,
        "tokens_per_s": n_tokens / seconds,
        "examples": sum(len(e) for _, e in data),
        "threads": torch.get_num_threads(),
    }


def _frozen(model):
    """Every parameter frozen (requires_grad False) for the duration."""
    from taskneurons.neurons.attribution import frozen_parameters

    return frozen_parameters(model)


def _naive_frozen(model, space, batches):
    """The naive reference with frozen parameters: gradients reach the activations only.

    Full-vocabulary logits at every position of the whole batch and ``retain_grad`` on every
    hooked activation, as in ``reference_relevance_scores``; layer 0's activation does not
    require grad (nothing upstream does), so it is made one (a leaf: its ``.grad`` fills).
    """
    import torch

    from taskneurons.neurons.sites import hook_sites

    sums = torch.zeros(space.shape("ffn"), dtype=torch.float64)  # [layers, d_ff]
    n = 0

    def keep(layer, module, acts):
        def fn(act):
            if act.requires_grad:
                act.retain_grad()
            else:
                act.requires_grad_(True)  # a leaf: the graph starts here
            acts[layer] = act
            return act

        return fn

    with _frozen(model):
        for batch in batches:
            acts: dict[int, torch.Tensor] = {}
            handles = hook_sites(space, lambda layer, m, acts=acts: keep(layer, m, acts))
            try:
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits  # [batch, pos, vocab]
            finally:
                for h in handles:
                    h.remove()
            logp = torch.log_softmax(logits.float()[:, :-1], dim=-1)  # [batch, pos-1, vocab]
            labels = batch["labels"][:, 1:]
            valid = labels != -100
            nll = -logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * valid
            (nll.sum(1) / valid.sum(1).clamp(min=1)).sum().backward()
            mask = batch["attention_mask"][..., None].double()  # [batch, pos, 1]
            for layer, a in acts.items():
                prod = a.grad.double() * a.detach().double() * mask  # [batch, pos, d_ff]
                sums[layer] += prod.sum(1).abs().sum(0)
            n += batch["input_ids"].shape[0]
    return (sums / n).float()


def captum_scores(model, space, batches):
    """captum's LayerGradientXActivation at every down_proj input, parameters frozen.

    The batches on the model's device; the scores float32 ``[layers, d_ff]`` on the CPU (also
    ``benchmarks/gpu.py``'s captum row)."""
    import torch
    from captum.attr import LayerGradientXActivation

    from taskneurons.losses import loss_width, per_example_loss

    layers = [space.site_module(i, "ffn") for i in range(space.n_layers)]
    sums = torch.zeros(space.shape("ffn"), dtype=torch.float64)  # [layers, d_ff]
    n = 0
    with _frozen(model):
        for batch in batches:
            labels = batch["labels"]

            def forward(input_ids, attention_mask, labels=labels):
                # ours's loss: [batch] per-example answer NLL, the model run up to the last
                # answer-predicting position, the LM head only at answer positions
                batch = {"input_ids": input_ids, "attention_mask": attention_mask}
                return per_example_loss(model, {**batch, "labels": labels})

            lga = LayerGradientXActivation(forward, layers, multiply_by_inputs=True)
            attrs = lga.attribute(
                batch["input_ids"],
                additional_forward_args=(batch["attention_mask"],),
                attribute_to_layer_input=True,
            )
            width = loss_width(labels)  # the positions the loss ran on
            mask = batch["attention_mask"][:, :width, None]  # [batch, width, 1]
            for i, a in enumerate(attrs):
                a = a[0] if isinstance(a, tuple) else a  # [batch, width, d_ff]
                sums[i] += (a.detach().double() * mask).sum(1).abs().sum(0).cpu()
            n += batch["input_ids"].shape[0]
    return (sums / n).float()


def _run_children(args, methods) -> dict:
    """Each method in its own subprocess; its result dict plus its ``scores``."""
    import tempfile

    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            js = Path(tmp) / f"{m}.json"
            cmd = [sys.executable, __file__, "--method", m, "--json", str(js)]
            for key in ("data", "tasks", "n_examples", "batch_size", "max_length", "seed"):
                cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            cmd += ["--threads", str(args.threads)]
            print(f"running {m} ...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True)
            results[m] = json.loads(js.read_text())
            results[m]["scores"] = torch.load(js.with_suffix(".pt"))
    return results


def _ratio_line(name, ref, r) -> str:
    return (
        f"{name} vs {r['method']}: {r['seconds'] / ref['seconds']:.2f}x faster, "
        f"{r['peak_extra_mib'] / max(ref['peak_extra_mib'], 1e-9):.2f}x less peak memory"
    )


def _report(args, results, total_s) -> None:
    ours = results["ours"]
    print(
        f"\nattribution on {ours['examples']} examples ({args.tasks}, train split, "
        f"label-stratified, seed {args.seed}), {ours['tokens']} tokens, batch "
        f"{args.batch_size}, max_length {args.max_length}, SmolLM2-135M float32, "
        f"{ours['threads']} threads, {total_s:.0f} s in all\n"
    )
    print(
        "| method | positions in its batches | seconds | tokens/s | peak extra MiB "
        "| max rel. diff vs ours |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    ref = ours["scores"]
    for m, r in results.items():
        diff = float((r["scores"] - ref).abs().max() / ref.abs().max())
        print(
            f"| {m} | {r['positions']} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} "
            f"| {r['peak_extra_mib']:.0f} | {diff:.1e} |"
        )
    print()
    for m, r in results.items():
        if m != "ours":
            print(_ratio_line("ours", ours, r))
    same = results.get("ours-same-batches")
    for m, r in results.items():
        if same is not None and m in IN_ORDER:
            print(_ratio_line("ours-same-batches", same, r))


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
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--methods", default=",".join(METHODS), help="ours must be among them")
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    methods = args.methods.split(",")
    bad = [m for m in methods if m not in METHODS]
    if bad or "ours" not in methods:
        ap.error(f"--methods: some of {','.join(METHODS)}, ours included (got {args.methods})")
    if args.method:  # child process
        res = run_method(args)
        Path(args.json).write_text(json.dumps(res))
        return 0
    t0 = time.perf_counter()
    results = _run_children(args, methods)
    _report(args, results, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
