"""One prepared GPU benchmark (issue 26, build 5): attribution, a training step, evaluation.

On a Llama-2-7b-shaped model with random weights in bf16 (batch 8 x 512 by default), on one
GPU, in well under 8 minutes:

* attribution tok/s and peak memory: ours (``relevance_scores``), ours with activation
  checkpointing, captum's ``LayerGradientXActivation`` with every parameter frozen (as in
  ``benchmarks/attribution.py``, ``captum_scores``; the row says so when captum is not
  installed), and the naive reference with parameter gradients
  (``reference_relevance_scores``);
* one training step (forward, backward, AdamW) of a NeuronDelta on 10 % of the ``ffn``
  neurons, of the same neurons by the masked step, of LoRA r 8, of full fine-tuning: seconds
  and peak memory (``OOM`` when it does not fit);
* evaluation: no-grad forward tok/s (label scoring) and greedy generation tokens/s;
* the ratios against the issue's reference figures (H100: forward 32,985 tok/s, attribution
  14,320 tok/s / 49.3 GiB, naive 10,819 tok/s / 67.4 GiB; H200: 15,503 tok/s / 31.8 GiB,
  checkpointed 11,340 tok/s / 17.1 GiB).

``--dry-run`` runs the same code on the CPU with a tiny Llama (2 layers, d_model 64, float32,
batch 2 x 32) in seconds: what CI runs, and a check of the script before a GPU is spent on it.
Its figures mean nothing. Prints Markdown ready to paste into docs/performance.md.

    python benchmarks/gpu.py             # on a GPU
    python benchmarks/gpu.py --dry-run   # anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from taskneurons.data.prompts import EncodedExample, collate  # noqa: E402
from taskneurons.losses import per_example_loss  # noqa: E402
from taskneurons.neurons.attribution import relevance_scores  # noqa: E402
from taskneurons.neurons.attribution_config import AttributionConfig  # noqa: E402
from taskneurons.neurons.neuron_set import NeuronSet  # noqa: E402
from taskneurons.neurons.space import NeuronSpace  # noqa: E402
from taskneurons.provenance import model_fingerprint  # noqa: E402
from taskneurons.testing.oracles import reference_relevance_scores  # noqa: E402
from taskneurons.training.methods import make_method  # noqa: E402
from taskneurons.training.neuron_delta import NeuronDelta  # noqa: E402
from taskneurons.training.train_config import TrainConfig  # noqa: E402

from _memory import PeakRSS  # noqa: E402

GIB = 1024**3
#: the issue's reference figures: name -> (tok/s, peak GiB or None)
REFERENCE = {
    "forward (H100)": (32_985, None),
    "ours (H100, activation-only)": (14_320, 49.3),
    "naive (H100)": (10_819, 67.4),
    "ours (H200, LM head at answers)": (15_503, 31.8),
    "ours + checkpointing (H200)": (11_340, 17.1),
}
SEVEN_B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)  # fmt: skip
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=256)  # fmt: skip


def build(dry: bool) -> tuple[torch.nn.Module, torch.device, list[dict]]:
    """The random model on its device, and the batches (8 x 512, answers the last 4 tokens)."""
    dev = torch.device("cpu" if dry else "cuda")
    dtype = torch.float32 if dry else torch.bfloat16
    config = LlamaConfig(**(TINY if dry else SEVEN_B), max_position_embeddings=4096,
                         attn_implementation="sdpa")  # fmt: skip
    torch.manual_seed(0)
    with dev:
        model = LlamaForCausalLM(config).to(dtype).eval()
    batch, length, n = (2, 32, 2) if dry else (8, 512, 4)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n):
        ids = [tuple(torch.randint(3, config.vocab_size, (length,), generator=g).tolist())
               for _ in range(batch)]  # fmt: skip
        batches.append(collate([EncodedExample(x, length - 4) for x in ids], pad_id=0))
    return model, dev, batches


@contextlib.contextmanager
def peak(dev: torch.device):
    """``{"gib": peak memory}`` of the block: GPU allocator peak, or resident memory (CPU)."""
    out: dict[str, float] = {}
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        yield out
        torch.cuda.synchronize()
        out["gib"] = torch.cuda.max_memory_allocated() / GIB
    else:
        with PeakRSS() as rss:
            yield out
        out["gib"] = rss.peak / GIB


def timed(fn, dev: torch.device) -> tuple[float, float]:
    """``(seconds, peak GiB)`` of ``fn()`` after one warm-up call."""
    fn()
    with peak(dev) as mem:
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return seconds, mem["gib"]


def attribution_rows(model, dev, batches) -> list[tuple[str, float, float]]:
    """``(method, tok/s, peak GiB)`` of each attribution method."""
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    space = NeuronSpace(model, "ffn")
    plain, ckpt = AttributionConfig(), AttributionConfig(checkpointing=True)
    on_device = [{k: v.to(dev) for k, v in b.items()} for b in batches]
    methods = {
        "ours": lambda: relevance_scores(model, batches, space, config=plain, progress=False),
        "ours + checkpointing": lambda: relevance_scores(
            model, batches, space, config=ckpt, progress=False
        ),
        "captum (frozen)": lambda: _captum(model, space, on_device),
        "naive (parameter gradients)": lambda: reference_relevance_scores(model, batches, space),
    }
    rows = []
    for name, fn in methods.items():
        rows.append(_guarded(name, lambda fn=fn: timed(fn, dev), tokens))
    return rows


def _captum(model, space, batches):
    from attribution import captum_scores  # benchmarks/attribution.py: needs captum

    return captum_scores(model, space, batches)


def _guarded(name: str, run, tokens: float) -> tuple[str, float, float]:
    """``(name, per second, peak GiB)``; nan for both when it ran out of memory or its
    library (captum) is not installed (the row's name says which)."""
    try:
        seconds, gib = run()
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return (name, float("nan"), float("nan"))
    except ModuleNotFoundError as err:
        return (f"{name}: {err.name} not installed", float("nan"), float("nan"))
    return (name, tokens / seconds, gib)


def _neurons(model) -> NeuronSet:
    space = NeuronSpace(model, "ffn")
    pick = torch.randperm(space.size, generator=torch.Generator().manual_seed(0))
    return NeuronSet.from_ids(space, pick[: space.size // 10],
                              {"model_fingerprint": model_fingerprint(model)})  # fmt: skip


def training_rows(model, dev, batches) -> list[tuple[str, float, float]]:
    """``(method, seconds per step, peak GiB)``: one AdamW step on one batch (8 x 512)."""
    batch = {k: v.to(dev) for k, v in batches[0].items()}
    rows = []
    for name, update in (("neurons (delta)", "delta"), ("neurons (masked step)", "masked"),
                         ("lora r 8", None), ("full", None)):  # fmt: skip
        method_name = "neurons" if update else name.split()[0]
        cfg = TrainConfig(method=method_name, neuron_update=update or "delta", lora_r=8)
        neurons = _neurons(model) if update else None
        method = make_method(cfg, neurons)
        params = [p for _, p in method.setup(model, neurons)]
        opt = torch.optim.AdamW(params, lr=1e-7)

        def step(method=method, opt=opt):
            opt.zero_grad(set_to_none=True)
            per_example_loss(method.model, batch).mean().backward()
            if method.grad_filter is not None:
                method.grad_filter()
            opt.step()

        steps_per_s, gib = _guarded(name, lambda step=step: timed(step, dev), 1.0)[1:]
        rows.append((name, 1.0 / steps_per_s, gib))  # seconds per step (nan: out of memory)
        opt.zero_grad(set_to_none=True)
        del opt
        model = _undo(method, model)
    return rows


def _undo(method, model):
    """Take the method off the model again (the delta's hooks, LoRA's layers, the flags)."""
    method.restore()
    if isinstance(method.delta, NeuronDelta):
        method.delta.detach()
    if method.name == "lora":
        model = method.model.unload()
    if method.name == "neurons" and hasattr(method, "_put_back"):
        method._put_back()
    return model


def evaluation_rows(model, dev, batches) -> list[tuple[str, float, float]]:
    """``(what, tok/s, peak GiB)``: no-grad forward, and greedy generation of 32 tokens."""
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    def forward():
        with torch.no_grad():
            for b in batches:
                model(input_ids=b["input_ids"].to(dev), logits_to_keep=1, use_cache=False)

    ids = batches[0]["input_ids"][:, :64].to(dev)
    new = 32

    def generate():
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                           max_new_tokens=new, min_new_tokens=new, do_sample=False,
                           pad_token_id=0)  # fmt: skip

    return [_guarded("forward (label scoring)", lambda: timed(forward, dev), tokens),
            _guarded("greedy generation", lambda: timed(generate, dev), ids.shape[0] * new)]  # fmt: skip


def markdown(title: str, head: str, rows) -> list[str]:
    lines = [f"### {title}", "", f"| {head} | peak GiB |", "|---|---:|---:|"]
    lines += [f"| {n} | {v:,.4g} | {g:.2f} |" for n, v, g in rows]
    return [*lines, ""]


def ratios(attr, evals) -> list[str]:
    """Ratios of the measured figures to the reference ones (this device / reference)."""
    got = {n: (v, g) for n, v, g in attr + evals}
    pairs = [("forward (label scoring)", "forward (H100)"),
             ("ours", "ours (H100, activation-only)"), ("ours", "ours (H200, LM head at answers)"),
             ("ours + checkpointing", "ours + checkpointing (H200)"),
             ("naive (parameter gradients)", "naive (H100)")]  # fmt: skip
    lines = ["### Against the reference figures (measured / reference)", ""]
    for ours, ref in pairs:
        (v, g), (rv, rg) = got[ours], REFERENCE[ref]
        mem = f", peak memory {g / rg:.2f}x" if rg else ""
        lines.append(f"- {ours} vs {ref}: tok/s {v / rv:.2f}x{mem}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny model on the CPU (CI)")
    args = ap.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("no GPU here: use --dry-run (or run on a machine with one)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    model, dev, batches = build(args.dry_run)
    where = "CPU, tiny Llama (dry run: the figures mean nothing)" if args.dry_run else (
        f"{torch.cuda.get_device_name()}, Llama-2-7b shape, random weights, bf16")  # fmt: skip
    shape = f"batch {batches[0]['input_ids'].shape[0]} x {batches[0]['input_ids'].shape[1]}"
    attr = attribution_rows(model, dev, batches)
    evals = evaluation_rows(model, dev, batches)
    train = training_rows(model, dev, batches)
    lines = [f"## benchmarks/gpu.py: {where}, {shape}", ""]
    lines += markdown("Attribution", "method | tok/s", attr)
    lines += markdown("One training step (AdamW, one batch)", "method | s per step", train)
    lines += markdown("Evaluation", "what | tok/s", evals)
    lines += ratios(attr, evals)
    lines += ["", f"{time.perf_counter() - t0:.0f} s in all"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
