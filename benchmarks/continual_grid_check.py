"""The continual lr grid against its estimate: each finished candidate, predicted vs measured.

For an experiment file with ``continual.tune``: the predicted minutes of every grid candidate
(``taskneurons.experiments.estimate.continual_work.tuning_runs`` priced on this machine's CPU
calibration, as ``taskneurons estimate`` does) beside the measured ones, read from the
candidates' ``continual_config.json`` (``created``: when each finished; the candidates run one
after another, so a candidate's time is the gap to the one before; the first one's gap runs
from the run's start, ``run_settings.json``, and includes the validation references).
Candidates that finished in another sitting than the one before them are marked (gap over 2x
the prediction plus an hour: not a measurement), as is the first one once a later sitting
resumed the run (``run_settings.json`` is rewritten then: a negative gap).

    python benchmarks/continual_grid_check.py experiments/continual-fair-order1-smollm2-cpu.yaml
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from taskneurons.experiments.continual.tune_config import candidate_folder, candidate_tag
from taskneurons.experiments.estimate.continual_work import tuning_runs
from taskneurons.experiments.estimate.cost_model import job_seconds
from taskneurons.experiments.estimate.devices import device
from taskneurons.experiments.estimate.plan import estimate, run_configs


def _created(path: Path) -> datetime:
    return datetime.fromisoformat(json.loads(path.read_text(encoding="utf-8"))["created"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    args = parser.parse_args(argv)
    config = run_configs(args.file, None)[0]
    cfg = config.continual
    est = estimate(args.file, "cpu")
    dev = device("cpu")
    # every candidate, chosen or not: price the grid as if no choice were recorded yet
    fresh = cfg.replace(tune=cfg.tune.replace(choice_file=None))
    runs, refs = tuning_runs(fresh, {s.id: s for s in est.sizes}, est.shape, Path(config.out))
    minutes = lambda jobs: sum(job_seconds(j, est.shape, dev, 4) for j in jobs) / 60  # noqa: E731
    done = []
    for label, values, jobs, _ in runs:
        path = candidate_folder(cfg.tune, Path(config.out), label, values) / "continual_config.json"
        if path.is_file():
            done.append((_created(path), label, values, minutes(jobs)))
    previous = _created(Path(config.out) / "run_settings.json")
    print("| method | candidate | predicted min | measured min | measured / predicted |")
    print("|---|---|---:|---:|---:|")
    for i, (created, label, values, predicted) in enumerate(sorted(done, key=lambda d: d[0])):
        if i == 0:
            predicted += minutes(refs)
        measured = (created - previous).total_seconds() / 60
        previous = created
        note = " (+ references)" if i == 0 else ""
        if measured < 0 or measured > 2 * predicted + 60:
            print(
                f"| {label} | {candidate_tag(values)}{note} | {predicted:.1f} | another sitting | |"
            )
            continue
        ratio = measured / predicted
        print(
            f"| {label} | {candidate_tag(values)}{note} | {predicted:.1f} | {measured:.1f} | {ratio:.2f} |"
        )
    print(f"\n{len(done)} of {len(runs)} candidates finished")


if __name__ == "__main__":
    main()
