"""The ``taskneurons`` command: a parser, and commands of a few lines that call the library.

``run`` runs any experiment file; ``detect``, ``deactivate``, ``finetune`` and ``demo`` turn
their flags into an experiment config and hand it to the same runner
(:mod:`taskneurons.experiments.runner`). Run ``taskneurons --help`` or
``taskneurons SUBCOMMAND --help``. Heavy libraries are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path("runs")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        "-m",
        default="smollm2-135m",
        help="smollm2-135m (embedded), a .gguf file, a model folder or a hub id",
    )
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--device", default="cpu")


def _prompt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template"
    )
    p.add_argument("--max-length", type=int, default=512, help="max tokens per sequence")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")


def _calibrate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="contextual calibration of label scores (subtract each label's prior on "
        "content-free inputs; Zhao et al. 2021)",
    )


def _tasks_arg(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_info_tasks_eval(sub) -> None:
    p = sub.add_parser("info", help="architecture, FFN size and neuron counts of a model")
    p.add_argument("model", nargs="?", default="smollm2-135m")
    p.add_argument("--dtype", default="float32")
    sub.add_parser("tasks", help="list the built-in demo tasks")
    p = sub.add_parser("eval", help="evaluate a model on a task")
    _model_args(p)
    p.add_argument("--task", "-t", required=True, help="task folder, built-in name or hf:NAME")
    p.add_argument("--limit", type=int, default=None, help="test examples (label-stratified)")
    p.add_argument(
        "--mode",
        choices=["score", "generate"],
        default=None,
        help="score: label log-likelihood; generate: greedy + exact match / ROUGE-L",
    )
    p.add_argument("--length-normalize", action="store_true")
    _calibrate_arg(p)
    p.add_argument("--out", type=Path, default=None, help="JSON file for per-example results")
    _prompt_args(p)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run an experiment file (see experiments/)")
    p.add_argument("config", type=Path, help="YAML or JSON experiment file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set detect.k=5 --set table2.train.lr=1e-3",
    )
    p.add_argument("--out", default=None, help="run folder (default: the file's `out`)")


def _add_detect_deactivate(sub) -> None:
    p = sub.add_parser("detect", help="score neurons and keep each task's top-k%%")
    _model_args(p)
    p.add_argument("--tasks", "-t", type=_tasks_arg, required=True, help="comma-separated")
    p.add_argument("--k", type=float, default=10.0, help="percent of neurons per task")
    p.add_argument("--scope", choices=["model", "layer"], default="model")
    p.add_argument("--definition", choices=["ffn", "linear"], default="ffn")
    p.add_argument("--loss", choices=["answer", "all"], default="answer")
    p.add_argument("--aggregate", choices=["example", "task", "token_abs"], default="example")
    p.add_argument("--n-examples", type=int, default=128, help="train examples scored per task")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "detect")
    _prompt_args(p)

    p = sub.add_parser("deactivate", help="Table 1 rows and the task x task deactivation matrix")
    _model_args(p)
    p.add_argument("--neurons", type=Path, required=True, help="output folder of `detect`")
    p.add_argument("--tasks", "-t", type=_tasks_arg, required=True, help="comma-separated")
    p.add_argument("--mode", choices=["activation", "parameters"], default="activation")
    p.add_argument("--n-test", type=int, default=200, help="test examples per task")
    p.add_argument("--out", type=Path, default=None, help="default: NEURONS/deactivate")
    p.add_argument(
        "--no-strict",
        action="store_true",
        help="accept neuron sets detected on other weights of the same architecture",
    )
    _calibrate_arg(p)
    _prompt_args(p)


def _add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="neuron-training experiments from a file with flag overrides: Table 2 (+ Figure "
        "5 a), Table 1 on a multi-task fine-tuned model (+ Figure 5 b)",
    )
    p.add_argument("--config", type=Path, default=None, help="YAML or JSON experiment file")
    p.add_argument("--model", "-m", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--tasks", "-t", type=_tasks_arg, default=None, help="comma-separated")
    p.add_argument("--experiment", choices=["table2", "multitask", "all"], default=None)
    p.add_argument("--neurons", default=None, help="output folder of `detect` (default: detect)")
    p.add_argument("--k", type=float, default=None)
    p.add_argument("--n-detect", type=int, default=None, help="examples scored per task")
    p.add_argument("--n-train", type=int, default=None, help="train examples per task")
    p.add_argument("--n-test", type=int, default=None, help="test examples per task")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole flow on the embedded model and built-in tasks")
    p.add_argument("--model", "-m", default=None, help="default: the embedded smollm2-135m")
    p.add_argument("--out", default=None, help="default: runs/demo")
    p.add_argument("--n-test", type=int, default=None, help="test examples per task (40)")
    p.add_argument("--n-detect", type=int, default=None, help="examples scored per task (32)")
    p.add_argument("--k", type=float, default=None, help="percent of neurons per task (10)")
    p.add_argument("--n-train", type=int, default=None, help="train examples per task (32)")
    p.add_argument("--seed", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    """The ``taskneurons`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="taskneurons",
        description="Find the neurons a language model uses for a task, prove they matter, "
        "and use them (Leng & Xiong 2024).",
    )
    parser.add_argument("--version", action="version", version=f"taskneurons {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_info_tasks_eval(sub)
    _add_run(sub)
    _add_detect_deactivate(sub)
    _add_finetune(sub)
    _add_demo(sub)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("taskneurons")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree
        return "unknown"


# -- flags -> experiment settings ----------------------------------------------------------------
def _prompt(args) -> dict:
    return {"chat_template": args.chat_template, "max_length": args.max_length}


def _common(args, experiment: str | list[str]) -> dict:
    return {
        "experiment": experiment,
        "model": args.model,
        "dtype": args.dtype,
        "device": args.device,
        "tasks": args.tasks,
        "seed": args.seed,
        "prompt": _prompt(args),
    }


def detect_settings(args) -> dict:
    """``taskneurons detect``'s flags as an experiment file's settings."""
    attribution = {
        "definition": args.definition,
        "loss": args.loss,
        "aggregate": args.aggregate,
        "batch_size": args.batch_size,
        "n_examples": args.n_examples,
    }
    detect = {"k": args.k, "scope": args.scope, "attribution": attribution}
    return {**_common(args, "detect"), "out": str(args.out), "detect": detect}


def deactivate_settings(args) -> dict:
    """``taskneurons deactivate``'s flags as an experiment file's settings."""
    evals = {"batch_size": args.batch_size, "calibrate": args.calibrate}
    return {
        **_common(args, "deactivate"),
        "neurons": str(args.neurons),
        "strict": not args.no_strict,
        "out": str(args.out or Path(args.neurons) / "deactivate"),
        "deactivate": {"mode": args.mode, "n_test": args.n_test, "eval": evals},
    }


#: ``taskneurons finetune`` flag -> the experiment-file keys it sets
FINETUNE_FLAGS = {
    "model": ["model"],
    "dtype": ["dtype"],
    "device": ["device"],
    "tasks": ["tasks"],
    "experiment": ["experiment"],
    "neurons": ["neurons"],
    "seed": ["seed"],
    "out": ["out"],
    "k": ["detect.k"],
    "n_detect": ["detect.attribution.n_examples"],
    "n_train": ["table2.n_train", "multitask.n_train"],
    "n_test": ["table2.n_test", "deactivate.n_test"],
    "lr": ["table2.train.lr"],
    "epochs": ["table2.train.epochs"],
    "batch_size": ["table2.train.batch_size"],
}

#: ``taskneurons demo`` flag -> the experiment-file keys it sets
DEMO_FLAGS = {
    "model": ["model"],
    "out": ["out"],
    "seed": ["seed"],
    "k": ["detect.k"],
    "n_detect": ["detect.attribution.n_examples"],
    "n_test": ["deactivate.n_test", "table2.n_test"],
    "n_train": ["table2.n_train"],
}


def _flag_overrides(args, table: dict[str, list[str]]) -> list[tuple[str, object]]:
    """``(dotted key, value)`` for every flag in ``table`` that was given."""
    return [
        (key, getattr(args, flag))
        for flag, keys in table.items()
        for key in keys
        if getattr(args, flag) is not None
    ]


# -- commands ------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from taskneurons.experiments.inspection import model_summary
    from taskneurons.models.loading import load_model

    model, _ = load_model(args.model, dtype=args.dtype)
    print(model_summary(model, args.model))
    return 0


def cmd_tasks(args) -> int:
    from taskneurons.experiments.inspection import builtin_table

    print(builtin_table())
    return 0


def cmd_eval(args) -> int:
    from taskneurons.data.load import load_task
    from taskneurons.experiments.inspection import evaluate_task

    task = load_task(args.task, seed=args.seed)
    model, tok = _load(args)
    config = {
        "prompt": _prompt(args),
        "batch_size": args.batch_size,
        "length_normalize": args.length_normalize,
        "calibrate": args.calibrate,
    }
    print(evaluate_task(model, tok, task, args.limit, args.seed, args.mode, config, args.out))
    return 0


def cmd_run(args) -> int:
    from taskneurons.experiments.runner import run_file

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    run = run_file(args.config, overrides)
    print(f"finished in {run.seconds:.0f} s; results in {run.out_dir}")
    return 0


def cmd_detect(args) -> int:
    return _run_settings(detect_settings(args), "taskneurons detect")


def cmd_deactivate(args) -> int:
    return _run_settings(deactivate_settings(args), "taskneurons deactivate")


def cmd_finetune(args) -> int:
    from taskneurons.experiments.config import read_mapping

    data = read_mapping(args.config) if args.config else {"out": str(DEFAULT_OUT / "finetune")}
    data.setdefault("experiment", "table2")
    source = str(args.config or "taskneurons finetune")
    return _run_settings(data, source, _flag_overrides(args, FINETUNE_FLAGS))


def cmd_demo(args) -> int:
    from taskneurons.experiments.config import read_mapping
    from taskneurons.experiments.runner import DEMO_FILE

    data = read_mapping(DEMO_FILE)
    code = _run_settings(data, "taskneurons demo", _flag_overrides(args, DEMO_FLAGS))
    print("demo finished")
    return code


def _run_settings(data: dict, source: str, overrides: list | None = None) -> int:
    from taskneurons.experiments.config import ExperimentFile, put_key, with_defaults
    from taskneurons.experiments.runner import run_experiment

    for key, value in overrides or []:
        put_key(data, key, value)
    config = ExperimentFile.from_dict(with_defaults(data), where=source)
    run = run_experiment(config, source=source)
    print(f"finished in {run.seconds:.0f} s; results in {run.out_dir}")
    return 0


def _load(args):
    from taskneurons.models.loading import load_model

    t0 = time.perf_counter()
    model, tok = load_model(args.model, dtype=args.dtype, device=getattr(args, "device", "cpu"))
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return model, tok


COMMANDS = {
    "info": cmd_info,
    "tasks": cmd_tasks,
    "eval": cmd_eval,
    "run": cmd_run,
    "detect": cmd_detect,
    "deactivate": cmd_deactivate,
    "finetune": cmd_finetune,
    "demo": cmd_demo,
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from taskneurons.data.tasks import TaskFormatError
    from taskneurons.models.adapters import UnsupportedModelError
    from taskneurons.models.loading import ModelLoadError
    from taskneurons.provenance import ModelMismatchError

    return (
        ModelLoadError,
        TaskFormatError,
        UnsupportedModelError,
        ModelMismatchError,
        FileNotFoundError,
        ValueError,
    )


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``taskneurons`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except _user_errors() as exc:
        if args.verbose:
            raise
        print(f"taskneurons {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
