"""How many of the scored examples a fine-tuning trained on, before and with disjoint scoring.

The multitask stage fine-tunes on ``Task.limit(n_train, seed)``'s train examples; relevance
scoring draws ``n_examples`` train examples (label-stratified, ``seed``). Before scoring left
the fine-tuning examples out (issue 23, build 4), both draws came from the whole split with the
same seed, so they overlapped. This prints, per task, the overlap of the old draw and of the
default one now::

    python experiments/scoring_overlap.py ../shared/data/{sst2,agnews,amazon,dbpedia} \
        --n-train 128 --n-examples 64 128
"""

from __future__ import annotations

import argparse

from taskneurons.data.load import load_task
from taskneurons.data.tasks import example_key
from taskneurons.neurons.attribution import scoring_examples, tuned_overlap
from taskneurons.neurons.attribution_config import AttributionConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="+")
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--n-examples", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| task | train examples | n scored | overlap before | overlap now |")
    print("|---|---|---|---|---|")
    for source in args.tasks:
        task = load_task(source)
        trained = task.limit(n_train=args.n_train, seed=args.seed).train
        tuned = frozenset(example_key(ex) for ex in trained)
        for n in args.n_examples:
            cfg = AttributionConfig(n_examples=n, seed=args.seed)
            before = scoring_examples(task, cfg.replace(exclude_tuned=False), tuned)
            now = scoring_examples(task, cfg, tuned)
            counts = [tuned_overlap(exs, tuned)["tuned_overlap"] for exs in (before, now)]
            print(f"| {task.id} | {len(task.train)} | {n} | {counts[0]} | {counts[1]} |")


if __name__ == "__main__":
    main()
