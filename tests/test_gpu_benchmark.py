"""``benchmarks/gpu.py --dry-run`` (issue 26, build 5): the GPU benchmark's code runs on the CPU.

The dry run uses a tiny Llama; its figures mean nothing, so the test checks that every section
and every row is printed with a number, and that checkpointed and plain attribution run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_dry_run():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPT.parents[1] / "src"), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    rows = ["ours", "ours + checkpointing", "captum (frozen)", "naive (parameter gradients)",
            "neurons (delta)",
            "neurons (masked step)", "lora r 8", "full", "forward (label scoring)",
            "greedy generation"]  # fmt: skip
    for row in rows:
        match = re.search(rf"^\| {re.escape(row)} \| ([\d,.eE+-]+) \| ([\d.]+) \|$", out, re.M)
        assert match, row
        assert float(match.group(1).replace(",", "")) > 0, row
    assert out.count(" vs ") == 5  # one ratio line per reference figure
