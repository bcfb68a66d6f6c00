"""Predicted vs measured stage times on this CPU: the demo and one sweep.

For each experiment file (with its overrides) it runs the file as ``taskneurons run`` does
(``run_experiment``), times every stage (from its header to its result), then prints
``taskneurons estimate --device cpu``'s prediction and one Markdown row per stage: predicted seconds,
measured seconds, measured / predicted. The machine's load (``uptime``) is printed before and
after each run, since the measured times depend on it.

    python benchmarks/estimate_check.py                 # the demo and the small sweep
    python benchmarks/estimate_check.py --only sweep

The sweep is ``experiments/specificity-sweep-smollm2-cpu.yaml`` made small (two tasks, 16
scored examples, 20 test examples, k 1 and 10, topk and specific) so that it runs in minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from taskneurons.experiments.estimate.cost_model import human_bytes
from taskneurons.experiments.estimate.plan import estimate
from taskneurons.experiments.experiment_file import DEMO_FILE, ExperimentFile
from taskneurons.experiments.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments/specificity-sweep-smollm2-cpu.yaml"
RUNS = {
    "demo": (DEMO_FILE, []),
    "sweep": (SWEEP, [
        "tasks=[../shared/data/sst2, ../shared/data/agnews]",
        "detect.attribution.n_examples=16", "deactivate.n_test=20",
        "sweep.k=[1, 10]", "sweep.selections=[topk, specific]",
    ]),
}  # fmt: skip


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class StageClock:
    """An ``echo`` for ``run_experiment`` that times each stage from header to result."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def __call__(self, text: str) -> None:
        line = text.strip()
        if line.startswith("== ") and "/" in line.split()[1]:
            self._name = line.split()[2].rstrip(":")
            self._t0 = time.perf_counter()
        elif self._name is not None:
            self.times[self._name] = time.perf_counter() - self._t0
            self._name = None


def measure(name: str, out: Path) -> dict:
    """Run one experiment file; ``{"stages": {name: seconds}, "total", "uptime_before/after"}``."""
    path, overrides = RUNS[name]
    overrides = [*overrides, f"out={out / name}"]
    before = uptime()
    clock = StageClock()
    t0 = time.perf_counter()
    run_experiment(ExperimentFile.read(path, overrides), str(path), progress=False, echo=clock)
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"stages": clock.times, "total": total, "uptime_before": before,
            "uptime_after": uptime(), "peak_rss": rss}  # fmt: skip


def compare(name: str, measured: dict) -> list[str]:
    """The Markdown lines: predicted vs measured seconds per stage."""
    path, overrides = RUNS[name]
    est = estimate(path, "cpu", [*overrides, "out=/tmp/estimate-check"])
    print(est.text, flush=True)
    lines = [f"### {name}: {path.name} {' '.join(overrides)}", "",
             f"load before: `{measured['uptime_before']}`",
             f"load after: `{measured['uptime_after']}`", "",
             "| stage | predicted s | measured s | measured / predicted |", "|---|---:|---:|---:|"]  # fmt: skip
    for e in est.stages:
        got = measured["stages"].get(e.name)
        ratio = f"{got / e.seconds:.2f}" if got and e.seconds else "-"
        lines.append(f"| {e.name} | {e.seconds:.1f} | {got or 0:.1f} | {ratio} |")
    peak = max(e.peak_bytes for e in est.stages)
    lines += ["", f"whole run {measured['total']:.1f} s (model loading included); peak memory "
              f"predicted {human_bytes(peak)}, the process's peak RSS {human_bytes(measured['peak_rss'])}", ""]  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=list(RUNS), default=None)
    ap.add_argument("--save", type=Path, default=None, help="write the measured times here")
    ap.add_argument("--measured", type=Path, default=None,
                    help="compare times measured earlier (--save) instead of running again")  # fmt: skip
    args = ap.parse_args()
    names = [args.only] if args.only else list(RUNS)
    if args.measured is not None:
        measured = json.loads(args.measured.read_text())
    else:
        measured = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                measured[name] = measure(name, Path(tmp))
                print(name, json.dumps(measured[name]), flush=True)
                if args.save is not None:
                    args.save.write_text(json.dumps(measured, indent=1))
    report: list[str] = []
    for name in names:
        report += compare(name, measured[name])
    print("\n".join(report))


if __name__ == "__main__":
    sys.exit(main())
