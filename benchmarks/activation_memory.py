"""Activation memory of a backward pass against the estimate's per-token model.

``taskneurons estimate`` prices the memory a backward keeps as ``act_values = 8 d_model +
4 d_ff`` values per token and layer (``ModelShape.act_values``) over a batch's *padded*
tokens. This script measures it: for each sequence length, in a fresh subprocess, the embedded
model (SmolLM2-135M, float32, frozen weights) runs one forward with the LM loss over every
position and one backward from input embeddings that require a gradient (so every layer keeps
its activations, as in neuron training), batch 8 of random token ids; the peak resident memory
above the level after loading and reading every weight once is sampled every 2 ms (``_memory.PeakRSS``). A least-squares line
over the lengths gives the measured bytes per token (to compare with the model's) and a fixed
part (the LM loss over the vocabulary, allocator arenas: not in the model).

    python benchmarks/activation_memory.py                 # lengths 64 128 256
    python benchmarks/activation_memory.py --lengths 128 256 --batch 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def measure(length: int, batch: int) -> float:
    """Peak extra bytes of one forward + backward at ``batch x length`` (in this process)."""
    import torch

    from taskneurons import load_model

    sys.path.insert(0, str(HERE))
    from _memory import PeakRSS

    torch.set_num_threads(1)
    model, _ = load_model("smollm2-135m")
    model.requires_grad_(False)
    for p in model.parameters():  # read every weight once: the cached weights are memory-
        p.sum()  # mapped lazily, so the first forward would count the whole model as extra
    ids = torch.randint(
        0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)  # [batch, pos, d_model]
    with PeakRSS() as rss:
        model(inputs_embeds=emb, labels=ids).loss.backward()
    return float(rss.peak - rss.start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(measure(args.one, args.batch)))
        return
    from taskneurons.experiments.estimate.shapes import KNOWN_SHAPES

    shape = KNOWN_SHAPES["smollm2-135m"]
    per_token = shape.act_values() * shape.n_layers * 4  # float32 bytes
    rows = []
    for length in args.lengths:
        cmd = [sys.executable, __file__, "--one", str(length), "--batch", str(args.batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append((length, args.batch * length, json.loads(out.strip().splitlines()[-1])))
    mib = 2**20
    print("| length | tokens | measured peak extra MiB | model (act_values) MiB |")
    print("|---:|---:|---:|---:|")
    for length, tokens, peak in rows:
        print(f"| {length} | {tokens} | {peak / mib:.0f} | {tokens * per_token / mib:.0f} |")
    tokens = np.array([r[1] for r in rows], float)
    slope, fixed = np.polyfit(tokens, np.array([r[2] for r in rows]), 1)
    print(f"\nmeasured {slope / 2**10:.0f} KiB per token (model {per_token / 2**10:.0f} KiB: "
          f"{slope / per_token:.2f}x); fixed part {fixed / mib:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
