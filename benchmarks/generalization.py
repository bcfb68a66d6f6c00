"""The proportion sweep's time split, its one scoring pass, and a similarity pass without forwards.

Runs ``taskneurons.experiments.generalization.proportion_sweep.generalization_experiment`` (PAPER.md Figure 2)
on the embedded model (SmolLM2-135M, float32, CPU) and real tasks of ../shared/data (by default
one group: train ``amazonfood``, ``qqp``; out-of-domain ``sst2``), small sizes, and prints:

* how many times each task was scored (relevance, ``relevance_scores`` is wrapped and
  counted): once, however many proportions the sweep has; and what scoring again at every
  proportion would have cost (proportions x the scoring time);
* the sweep's time split: scoring / selection (deriving every proportion's sets) / training /
  evaluation, in seconds and % of the total;
* the similarity pass (``taskneurons.experiments.generalization.similarity.model_similarity``: per layer, the
  cosine of the sets' mean parameter vectors, read from the weights): its time and the number
  of forward calls of the model while it runs (a forward pre-hook counts them: it must be 0),
  next to the time of one forward pass of one batch for scale.

Usage:
  python benchmarks/generalization.py [--train amazonfood,qqp] [--test sst2]
      [--proportions 10,50,100] [--n-examples 16] [--n-train 16] [--n-test 20]
      [--threads 1] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from taskneurons.data.load import load_task
from taskneurons.experiments.generalization import task_groups
from taskneurons.experiments.generalization.generalization_stage import GeneralizationConfig
from taskneurons.experiments.generalization.proportion_sweep import generalization_experiment
from taskneurons.experiments.generalization.similarity import model_similarity
from taskneurons.experiments.generalization.similarity_report import VARIANTS
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.models.loading import load_model
from taskneurons.neurons import scoring

DATA = Path(
    os.environ.get(
        "TASKNEURONS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--train", default="amazonfood,qqp", help="training tasks of the group")
    p.add_argument("--test", default="sst2", help="out-of-domain test tasks")
    p.add_argument("--proportions", default="10,50,100")
    p.add_argument("--k", type=float, default=10.0)
    p.add_argument("--n-examples", type=int, default=16, help="examples scored per task")
    p.add_argument("--n-train", type=int, default=16)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def main() -> int:
    a = _args()
    torch.set_num_threads(a.threads)
    train, test = a.train.split(","), a.test.split(",")
    tasks = [load_task(str(DATA / t), seed=0) for t in [*train, *test]]
    model, tok = load_model(a.model)
    calls: list[str] = []
    real = scoring.relevance_scores  # what score_tasks calls, once per task

    def counted(m, task, *args, **kwargs):
        calls.append(task.id)
        return real(m, task, *args, **kwargs)

    scoring.relevance_scores = counted
    prompt = {"max_length": 256}
    detect = DetectConfig.from_dict(
        {"k": a.k, "attribution": {"n_examples": a.n_examples, "prompt": prompt}}
    )
    config = GeneralizationConfig.from_dict({
        "groups": [{"name": "a", "train": train, "test": test}],
        "proportions": [float(p) for p in a.proportions.split(",")],
        "n_train": a.n_train, "n_test": a.n_test,
        "train": {"lr": 5e-4, "batch_size": 8, "prompt": prompt}, "eval": {"prompt": prompt},
    })  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        ctx = RunContext.of(model, tok, tasks, progress=False, detect=detect)
        res = generalization_experiment(ctx, config, out)
        sets = task_groups.GroupSets.select(res.scored.scores, detect)
    t = res.timings
    print(f"model {a.model}; tasks {[x.id for x in tasks]}; proportions {config.proportions}")
    print(f"relevance passes: {len(calls)} for {len(tasks)} tasks ({sorted(calls)}); scoring again "
          f"at every proportion would take ~{len(config.proportions) * t.scoring:.1f} s instead of "
          f"{t.scoring:.1f} s ({len(config.proportions)}x)")  # fmt: skip
    print("| part | seconds | share |\n|---|---|---|")
    for name in ("scoring", "selection", "training", "evaluation"):
        v = getattr(t, name)
        print(f"| {name} | {v:.2f} | {100 * v / max(t.total, 1e-9):.1f} % |")
    print(f"| total | {t.total:.2f} | 100 % |")

    forwards = []
    handle = model.register_forward_pre_hook(lambda *_: forwards.append(1))
    t0 = time.perf_counter()
    model_similarity(model, sets, train[0], test, 100.0)
    sim_s = time.perf_counter() - t0
    handle.remove()
    ids = torch.randint(
        0, model.config.vocab_size, (8, 128), generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(input_ids=ids)
        fwd_s = time.perf_counter() - t0
    print(f"similarity pass (every layer, {len(test)} test tasks x {len(VARIANTS)} variants): {sim_s:.2f} s, "
          f"{len(forwards)} forward calls; one forward of 8 x 128 tokens: {fwd_s:.2f} s")  # fmt: skip
    return 0 if len(forwards) == 0 and sorted(calls) == sorted(x.id for x in tasks) else 1


if __name__ == "__main__":
    sys.exit(main())
