"""The device table of the cost model: how fast each kind of work runs, and how much memory.

A rate is in FLOP/s of :meth:`ModelShape.flops_per_token` (forward FLOPs, LM head left out):
a kind of work that does a backward too has a lower rate. ``seconds = batches x overhead +
tokens x FLOPs/token / rate``; a generation step also reads every weight once
(``weight bytes / bandwidth``).

* ``cpu``: this machine, measured by ``benchmarks/calibrate_cpu.py`` (the table file
  ``cpu_calibration.json`` beside this module, with the machine's load when it ran).
* ``h100``, ``h200``: from the reference figures of issue 26 (random Llama-2-7b-shaped weights,
  bf16, batch 8 x 512): H100 forward 32,985 tok/s, activation-only attribution 14,320 tok/s;
  H200 attribution with the LM head only at answer positions 15,503 tok/s, with activation
  checkpointing 11,340 tok/s. At 13.09 GFLOP/token (7B at 512 positions) that is 431.8, 187.5,
  202.9 and 148.4 TFLOP/s.
* ``a100``, ``24gb``: assumptions, not measurements: the H100 rates scaled by dense bf16 peak
  (312 and 165 of H100's 989 TFLOP/s), HBM 2.0 and 1.0 TB/s.

Every GPU rate the references do not give is an assumption, printed by ``estimate``:
training the neurons runs at the attribution rate (the same forward and activation backward;
the deltas' matmuls are small), full fine-tuning at a third of the forward rate (forward and two
backward matmuls per weight), LoRA at 1/2.2 of it, generation steps read the weights at 60 % of
the memory bandwidth.

Example:
    >>> d = device("h100")
    >>> round(d.rates["attribution"].flops_per_s / 1e12, 1)
    187.5
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CALIBRATION = Path(__file__).with_name("cpu_calibration.json")
GIB = 1024**3
#: FLOPs per token of Llama-2-7b at 512 positions (ModelShape.flops_per_token, no LM head)
REF_FLOPS = 13.086e9
KINDS = ("forward", "attribution", "train_neurons", "train_full", "train_lora", "decode")
#: the H200 ratio of checkpointed to plain attribution (11,340 / 15,503), for every device
CHECKPOINT_SLOWDOWN = 11_340 / 15_503


@dataclass(frozen=True)
class Rate:
    """``overhead_s`` per batch (or generation step) and ``flops_per_s``."""

    overhead_s: float
    flops_per_s: float


@dataclass(frozen=True)
class Device:
    """One row of the device table.

    Attributes:
        name, what: key and description.
        memory_bytes: what a run may use (GPU memory; the CPU's RAM).
        rates: kind of work -> :class:`Rate`.
        bandwidth: bytes/s at which a generation step reads the weights.
        assumptions: what is assumed rather than measured.
    """

    name: str
    what: str
    memory_bytes: float
    rates: dict[str, Rate]
    bandwidth: float
    base_bytes: float = 0.0
    assumptions: list[str] = field(default_factory=list)


def _gpu(name: str, what: str, memory_gib: float, scale: float, bw_tbs: float, h200=False):
    fwd = 32_985 * REF_FLOPS * scale
    attr = (15_503 if h200 else 14_320) * REF_FLOPS * scale
    rates = {
        "forward": Rate(0.0, fwd),
        "attribution": Rate(0.0, attr),
        "train_neurons": Rate(0.0, attr),
        "train_full": Rate(0.0, fwd / 3),
        "train_lora": Rate(0.0, fwd / 2.2),
        "decode": Rate(0.0, fwd),
    }
    assumed = [
        "training the neurons runs at the attribution rate; full FT at 1/3 and LoRA at 1/2.2 "
        "of the forward rate (not measured)",
        "a generation step reads every weight at 60 % of the memory bandwidth (not measured)",
        f"checkpointed attribution and training at {CHECKPOINT_SLOWDOWN:.2f}x the plain rate "
        "(H200 attribution ratio)",
    ]
    if h200:
        assumed.insert(0, "H200 forward rate taken as H100's (same bf16 compute; not measured)")
    if scale != 1.0:
        assumed.insert(0, f"every rate is H100's x {scale:.3f} (dense bf16 peak ratio)")
    return Device(name, what, memory_gib * GIB, rates, bw_tbs * 1e12 * 0.6, 0.0, assumed)


GPUS: dict[str, Device] = {
    "h100": _gpu("h100", "NVIDIA H100 80 GB (issue 26 reference figures)", 80, 1.0, 3.35),
    "h200": _gpu("h200", "NVIDIA H200 141 GB (issue 26 reference figures)", 141, 1.0, 4.8, True),
    "a100": _gpu("a100", "NVIDIA A100 80 GB (assumed: H100 x 312/989)", 80, 312 / 989, 2.0),
    "24gb": _gpu("24gb", "a 24 GB card (assumed: H100 x 165/989, 1 TB/s)", 24, 165 / 989, 1.0),
}


def _ram_bytes() -> float:
    try:
        with open("/proc/meminfo") as f:
            return float(f.readline().split()[1]) * 1024
    except OSError:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def cpu_device(path: Path = CALIBRATION) -> Device:
    """The ``cpu`` row, read from the calibration table file.

    Raises:
        ValueError: the table file is missing (run ``benchmarks/calibrate_cpu.py``).
    """
    if not path.is_file():
        raise ValueError(f"no CPU calibration at {path}; run benchmarks/calibrate_cpu.py")
    table = json.loads(path.read_text())
    rates = {
        k: Rate(float(v["overhead_s"]), float(v["flops_per_s"])) for k, v in table["kinds"].items()
    }
    decode = rates["decode"]
    # the calibration model's weights (float32) are read once per step: its fitted overhead
    bandwidth = 134.5e6 * 4 / decode.overhead_s if decode.overhead_s > 0 else 1e10
    what = (
        f"this machine's CPU ({table.get('cores')} cores, {table.get('torch_threads')} torch "
        f"threads), measured by benchmarks/calibrate_cpu.py; load then: "
        f"{table.get('uptime_before', '?').split('load average:')[-1].strip()}"
    )
    assumed = [
        "CPU rates measured on SmolLM2-135M float32 and scaled by FLOPs to other shapes",
        f"checkpointed attribution and training at {CHECKPOINT_SLOWDOWN:.2f}x the plain rate "
        "(H200 attribution ratio)",
    ]
    base = float(table.get("base_rss_bytes", 0.6 * GIB))
    return Device("cpu", what, _ram_bytes(), rates, bandwidth, base, assumed)


def device(name: str) -> Device:
    """The device table's row ``name`` (``cpu``, ``h100``, ``h200``, ``a100``, ``24gb``)."""
    if name == "cpu":
        return cpu_device()
    if name not in GPUS:
        raise ValueError(f"unknown device {name!r}; known: cpu, {', '.join(GPUS)}")
    return GPUS[name]


def device_names() -> list[str]:
    return ["cpu", *GPUS]
