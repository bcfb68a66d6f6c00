"""Evaluation speed: label scoring vs greedy generation + exact match, same examples, one run.

Embedded model (SmolLM2-135M) by default, the same seeded label-stratified subset of a
classification task's test split (SST-2 of ../shared/data by default). Methods:

  score      taskneurons.evaluate(mode="score"): each prompt once with use_cache=True, the KV
             cache repeated per label, only the label tokens forwarded on top of it.
  generate   taskneurons.evaluate(mode="generate"): left-padded prompts, model.generate
             (greedy, max_new_tokens = longest label + 4 unless given), cut at newline/EOS,
             exact match after normalisation.
  concat     (with --concat) evaluate(mode="score", scoring="concat"): one prompt+label row
             per label, the naive batched way to score labels.

Each method's wall time excludes model and data loading; a one-batch warm-up runs first;
torch runs with ``--threads`` intra-op threads (default 2). The script prints accuracies (%),
times (s), examples/s and the time ratios against ``score``.

Usage:
  python benchmarks/eval_speed.py [--n 200] [--batch-size 8] [--threads 2] [--task PATH]
                                  [--chat-template] [--concat] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TASK = HERE.parent.parent / "shared" / "data" / "sst2"


def _parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="smollm2-135m", help="model spec for load_model")
    parser.add_argument("--task", default=str(DEFAULT_TASK), help="task spec for load_task")
    parser.add_argument("--n", type=int, default=200, help="test examples (stratified subset)")
    parser.add_argument("--seed", type=int, default=0, help="subset seed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--chat-template", action="store_true", help="use the chat template")
    parser.add_argument("--concat", action="store_true", help="also time concat label scoring")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    return parser, parser.parse_args(argv)


def _time_runs(model, tok, task, examples, runs) -> dict:
    """Each run on ``examples``, printing one line per run; name -> EvalResult."""
    from taskneurons.evaluation.dispatch import evaluate

    results = {}
    for name, (mode, cfg) in runs.items():
        r = evaluate(model, tok, task, examples, mode=mode, config=cfg, progress=False)
        results[name] = r
        extra = ""
        if mode == "generate":
            preds = [p["prediction"] for p in r.predictions]
            empty = sum(not p for p in preds)
            common = max(set(preds), key=preds.count)
            extra = (
                f"  (max_new_tokens {r.config.max_new_tokens}; {empty} empty predictions; "
                f"most common {common!r})"
            )
        print(
            f"{name:>9}: accuracy {r.score:5.1f}%  time {r.seconds:7.1f} s  "
            f"{r.examples_per_s:6.2f} examples/s{extra}"
        )
    return results


def _write_json(path, results, model, task, examples, args, base) -> None:
    from taskneurons._io import write_json_atomic
    from taskneurons.provenance import model_fingerprint, provenance

    t_score = results["score"].seconds
    write_json_atomic(
        path,
        {
            "figures": {
                name: {
                    "accuracy": r.score,
                    "seconds": r.seconds,
                    "examples_per_s": r.examples_per_s,
                    "ratio_to_score": r.seconds / t_score,
                }
                for name, r in results.items()
            },
            "provenance": provenance(
                model=model_fingerprint(model),
                task=task.id,
                task_source=task.source,
                n=len(examples),
                seed=args.seed,
                config=base.to_dict(),
            ),
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser, args = _parse(argv)

    import torch

    from taskneurons.data.load import load_task
    from taskneurons.data.prompt_config import PromptConfig
    from taskneurons.data.tasks import subset
    from taskneurons.evaluation.dispatch import evaluate
    from taskneurons.evaluation.eval_config import EvalConfig
    from taskneurons.evaluation.metrics import majority_rate
    from taskneurons.models.loading import load_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = load_task(args.task)
    if task.kind != "classification":
        parser.error(f"{args.task}: label scoring needs a classification task, got {task.kind}")
    examples = subset(task.test, args.n, seed=args.seed, labels=task.labels)
    model, tok = load_model(args.model)
    prompt = PromptConfig(chat_template=args.chat_template)
    base = EvalConfig(prompt=prompt, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)

    runs = {
        "score": ("score", base),
        "generate": ("generate", base),
    }
    if args.concat:
        runs["concat"] = ("score", replace(base, scoring="concat"))

    warm = examples[: args.batch_size]
    for mode, cfg in runs.values():
        evaluate(model, tok, task, warm, mode=mode, config=cfg, progress=False)

    print(
        f"model {args.model} ({torch.get_num_threads()} threads), task {task.id}, "
        f"{len(examples)} test examples (stratified, seed {args.seed}), "
        f"majority rate {majority_rate(examples):.1f}%, batch {args.batch_size}, "
        f"chat template {args.chat_template}"
    )
    results = _time_runs(model, tok, task, examples, runs)
    t_score = results["score"].seconds
    for name, r in results.items():
        if name != "score":
            print(f"time ratio {name} / score: {r.seconds / t_score:.2f}x")
    if "concat" in results:
        pairs = zip(results["score"].predictions, results["concat"].predictions, strict=True)
        agree = sum(a["prediction"] == b["prediction"] for a, b in pairs)
        print(f"score and concat agree on {agree}/{len(examples)} predictions")
    if args.json:
        _write_json(args.json, results, model, task, examples, args, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
