"""``taskneurons estimate FILE [--device NAME]``: predicted time, peak memory and disk per stage.

Nothing runs and no weight is read: the model's shape comes from its ``config.json`` (or the
embedded model's), the data sizes from the task files, the speeds from the device table
(:mod:`taskneurons.experiments.estimate.devices`). The assumptions are printed under the table.

Example::

    taskneurons estimate experiments/paper-scale-llama2-7b.yaml --device h100
"""

from __future__ import annotations

import argparse
from pathlib import Path

from taskneurons.experiments.estimate.plan import estimate_file

#: the device table's rows (kept here so that ``--help`` imports nothing heavy)
DEVICES = ("cpu", "h100", "h200", "a100", "24gb")


def add_estimate(p: argparse.ArgumentParser) -> None:
    """The arguments of ``taskneurons estimate``."""
    p.add_argument("config", type=Path, help="YAML or JSON experiment file")
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="the device to price the run on (default: this machine's CPU)")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, as in `taskneurons run`")  # fmt: skip


def cmd_estimate(args) -> int:
    """Print the estimate of ``args.config`` on ``args.device``."""
    print(estimate_file(args.config, args.device, list(args.overrides)))
    return 0
