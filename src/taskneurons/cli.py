"""The ``taskneurons`` command: one subcommand per stage, and ``demo`` for the whole flow.

Run ``taskneurons --help`` or ``taskneurons SUBCOMMAND --help``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path("runs")


def _model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    from taskneurons import __version__

    parser = argparse.ArgumentParser(
        prog="taskneurons",
        description="Find the neurons a language model uses for a task, prove they matter, "
        "and use them (Leng & Xiong 2024).",
    )
    parser.add_argument("--version", action="version", version=f"taskneurons {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser(
        "finetune",
        help="neuron-level fine-tuning experiments: Table 2 (+ Figure 5 a), Table 1 on a "
        "multi-task fine-tuned model (+ Figure 5 b)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML or JSON experiment file (see experiments/); flags override it",
    )
    p.add_argument("--model", "-m", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--tasks", "-t", type=_tasks_arg, default=None, help="comma-separated")
    p.add_argument("--experiment", choices=["table2", "multitask", "all"], default=None)
    p.add_argument(
        "--neurons",
        type=Path,
        default=None,
        help="output folder of `detect` (default: detect into OUT/detect first)",
    )
    p.add_argument("--k", type=float, default=None)
    p.add_argument("--n-detect", type=int, default=None, help="examples scored per task")
    p.add_argument("--n-train", type=int, default=None, help="train examples per task")
    p.add_argument("--n-test", type=int, default=None, help="test examples per task")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)

    p = sub.add_parser("demo", help="the whole flow on the embedded model and built-in tasks")
    _model_args(p)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "demo")
    p.add_argument("--n-test", type=int, default=40, help="test examples per task")
    p.add_argument("--n-detect", type=int, default=32, help="examples scored per task")
    p.add_argument("--k", type=float, default=10.0)
    p.add_argument("--n-train", type=int, default=32, help="train examples per trained task")
    p.add_argument("--n-train-tasks", type=int, default=2, help="tasks trained in step 3")
    p.add_argument("--seed", type=int, default=0)
    return parser


def _load(args):
    from taskneurons.models.loading import load_model

    t0 = time.perf_counter()
    model, tok = load_model(args.model, dtype=args.dtype, device=getattr(args, "device", "cpu"))
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return model, tok


def _prompt_config(args):
    from taskneurons.data.prompts import PromptConfig

    return PromptConfig(chat_template=args.chat_template, max_length=args.max_length)


def cmd_info(args) -> int:
    from taskneurons.models.loading import load_model
    from taskneurons.neurons.space import NeuronSpace
    from taskneurons.provenance import model_fingerprint
    from taskneurons.report.tables import markdown_table

    model, _ = load_model(args.model, dtype=args.dtype)
    ffn = NeuronSpace(model, "ffn")
    lin = NeuronSpace(model, "linear")
    ad = ffn.adapter
    fp = model_fingerprint(model)
    rows = [
        ["model", args.model],
        ["family", ad.family],
        ["model_type", fp["model_type"]],
        ["parameters", f"{fp['n_params']:,}"],
        ["layers", ad.n_layers],
        ["d_model", ad.d_model],
        ["d_ff", ad.d_ff],
        ["gated FFN", ad.spec.gated],
        ["FFN linears", ", ".join(f"{m} ({lin.units[m]} out)" for m in lin.modules)],
        ["ffn neurons", f"{ffn.size:,}"],
        ["linear neurons", f"{lin.size:,}"],
        ["fingerprint", f"arch {fp['arch']} weights {fp['weights']}"],
    ]
    print(markdown_table(["", "value"], rows))
    return 0


def cmd_tasks(args) -> int:
    from taskneurons.data.builtin import builtin_task, builtin_task_names
    from taskneurons.report.tables import markdown_table

    rows = []
    for name in builtin_task_names():
        t = builtin_task(name)
        labels = ", ".join(t.labels) if t.labels else "-"
        rows.append([name, t.kind, t.metric, labels, len(t.train), len(t.test), t.instruction])
    print(
        markdown_table(["name", "kind", "metric", "labels", "train", "test", "instruction"], rows)
    )
    return 0


def cmd_eval(args) -> int:
    from taskneurons.data.load import load_task
    from taskneurons.data.tasks import subset
    from taskneurons.evaluation.dispatch import evaluate
    from taskneurons.evaluation.metrics import majority_rate
    from taskneurons.evaluation.result import EvalConfig
    from taskneurons.report.tables import markdown_table

    task = load_task(args.task, seed=args.seed)
    model, tok = _load(args)
    examples = task.test
    if not examples:
        raise ValueError(f"task {task.id!r} has no test examples")
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        labels = task.labels if task.kind == "classification" else None
        examples = subset(examples, args.limit, seed=args.seed, labels=labels)
    cfg = EvalConfig(
        prompt=_prompt_config(args),
        batch_size=args.batch_size,
        length_normalize=args.length_normalize,
        calibrate=args.calibrate,
    )
    res = evaluate(model, tok, task, examples, mode=args.mode, config=cfg)
    header = ["task", "mode", "metric", "score", "n", "majority %", "seconds"]
    maj = majority_rate(examples) if task.kind == "classification" else float("nan")
    print(
        markdown_table(
            header,
            [
                [
                    task.id,
                    res.mode,
                    res.metric,
                    res.score,
                    res.n,
                    maj,
                    res.seconds if hasattr(res, "seconds") else "",
                ]
            ],
        )
    )
    out = args.out or DEFAULT_OUT / "eval" / f"{task.id}-{res.mode}.json"
    res.save(out)
    print(f"per-example predictions: {out}")
    return 0


def _attribution_config(args):
    from taskneurons.neurons.attribution import AttributionConfig

    return AttributionConfig(
        definition=args.definition,
        loss=args.loss,
        aggregate=args.aggregate,
        batch_size=args.batch_size,
        n_examples=args.n_examples,
        seed=args.seed,
        prompt=_prompt_config(args),
    )


def cmd_detect(args) -> int:
    from taskneurons.data.load import load_task
    from taskneurons.experiments.detect import DetectConfig, detect_neurons
    from taskneurons.neurons.selection import _check_k

    _check_k(args.k)
    tasks = [load_task(t, seed=args.seed) for t in args.tasks]
    model, tok = _load(args)
    cfg = DetectConfig(k=args.k, scope=args.scope, attribution=_attribution_config(args))
    sets = detect_neurons(model, tok, tasks, cfg, args.out)
    for name, ns in sets.items():
        print(f"{name}: {len(ns):,} neurons ({ns.fraction() * 100:.1f} %)")
    print((args.out / "layer_counts.md").read_text())
    print((args.out / "iou.md").read_text())
    print(f"results in {args.out}")
    return 0


def _print_deactivation(folder: Path, res: dict) -> None:
    """Print a deactivation experiment's tables and summaries (accuracy, then gold NLL)."""
    from taskneurons.experiments.analysis import deactivation_summary

    print((folder / "table1.md").read_text())
    print((folder / "matrix.md").read_text())
    print(deactivation_summary(res) + "\n")
    if "nll" in res:
        print((folder / "table1_nll.md").read_text())
        print((folder / "matrix_nll.md").read_text())
        print(deactivation_summary(res["nll"], higher_is_better=False) + "\n")


def cmd_deactivate(args) -> int:
    from taskneurons.data.load import load_task
    from taskneurons.evaluation.result import EvalConfig
    from taskneurons.experiments.common import load_neuron_sets
    from taskneurons.experiments.deactivation import DeactivateConfig, deactivation_experiment

    tasks = [load_task(t, seed=args.seed) for t in args.tasks]
    model, tok = _load(args)
    sets = load_neuron_sets(args.neurons, tasks, model, strict=not args.no_strict)
    cfg = DeactivateConfig(
        mode=args.mode,
        n_test=args.n_test,
        seed=args.seed,
        random_seed=args.seed,
        eval=EvalConfig(
            prompt=_prompt_config(args), batch_size=args.batch_size, calibrate=args.calibrate
        ),
    )
    out = args.out or args.neurons / "deactivate"
    res = deactivation_experiment(model, tok, tasks, sets, cfg, out)
    _print_deactivation(out, res)
    print(f"results in {out}")
    return 0


def cmd_demo(args) -> int:
    from taskneurons.data.builtin import builtin_task, builtin_task_names
    from taskneurons.data.prompts import PromptConfig
    from taskneurons.evaluation.result import EvalConfig
    from taskneurons.experiments.deactivation import DeactivateConfig, deactivation_experiment
    from taskneurons.experiments.detect import DetectConfig, detect_neurons
    from taskneurons.experiments.neuron_training import FinetuneConfig, neuron_training_experiment
    from taskneurons.neurons.attribution import AttributionConfig
    from taskneurons.training.config import TrainConfig

    start = time.perf_counter()
    model, tok = _load(args)
    tasks = [builtin_task(n, seed=args.seed) for n in builtin_task_names()]
    out = Path(args.out)
    prompt = PromptConfig(max_length=256)
    # generation tasks are scored on at most 24 new tokens: the built-in answers are short, and
    # a model with its task neurons off may otherwise ramble up to the default 64
    eval_cfg = EvalConfig(prompt=prompt, batch_size=16, max_new_tokens=24)
    print(
        f"\n== 1/3 detect: top {args.k} % neurons of {len(tasks)} built-in tasks "
        f"({args.n_detect} examples each)"
    )
    dcfg = DetectConfig(
        k=args.k,
        attribution=AttributionConfig(n_examples=args.n_detect, seed=args.seed, prompt=prompt),
    )
    sets = detect_neurons(model, tok, tasks, dcfg, out / "detect")
    print((out / "detect" / "iou.md").read_text())
    print(f"== 2/3 evaluate and deactivate ({args.n_test} test examples per task)")
    xcfg = DeactivateConfig(
        n_test=args.n_test, seed=args.seed, random_seed=args.seed, eval=eval_cfg
    )
    res = deactivation_experiment(model, tok, tasks, sets, xcfg, out / "deactivate")
    print(res["table"])
    print()
    print((out / "deactivate" / "matrix.md").read_text())
    trained = [t for t in tasks if t.kind == "classification"][: args.n_train_tasks]
    print(
        f"== 3/3 train only the task's neurons vs as many random neurons "
        f"({', '.join(t.id for t in trained)}; {args.n_train} train examples, 1 epoch)"
    )
    fcfg = FinetuneConfig(
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        random_seed=args.seed,
        matrix=False,
        train=TrainConfig(lr=1e-3, epochs=1, batch_size=8, seed=args.seed, prompt=prompt),
        eval=eval_cfg,
    )
    res = neuron_training_experiment(model, tok, trained, sets, fcfg, out / "finetune")
    print(res["table"])
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; results in {out}")
    return 0


FINETUNE_DEFAULTS = {
    "model": "smollm2-135m",
    "dtype": "float32",
    "device": "cpu",
    "tasks": None,
    "experiment": "table2",
    "neurons": None,
    "k": 10.0,
    "n_detect": 128,
    "n_train": 512,
    "n_test": 200,
    "seed": 0,
    "out": str(DEFAULT_OUT / "finetune"),
    "max_length": 512,
    "matrix": True,
    "train": {},
    "multitask_train": {"method": "full", "lr": 2e-5},
    "eval": {},
}


def read_experiment_config(path: Path | None) -> dict:
    """An experiment file (YAML or JSON) merged over :data:`FINETUNE_DEFAULTS`."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in FINETUNE_DEFAULTS.items()}
    if path is None:
        return cfg
    import json

    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an experiment file is a mapping of settings")
    unknown = sorted(set(data) - set(FINETUNE_DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(FINETUNE_DEFAULTS)}")
    cfg.update(data)
    return cfg


def cmd_finetune(args) -> int:
    from taskneurons.data.load import load_task
    from taskneurons.data.prompts import PromptConfig
    from taskneurons.evaluation.result import EvalConfig
    from taskneurons.experiments.common import load_neuron_sets
    from taskneurons.experiments.deactivation import DeactivateConfig
    from taskneurons.experiments.detect import DetectConfig, detect_neurons
    from taskneurons.experiments.multitask import MultitaskConfig, multitask_experiment
    from taskneurons.experiments.neuron_training import FinetuneConfig, neuron_training_experiment
    from taskneurons.neurons.attribution import AttributionConfig
    from taskneurons.training.config import TrainConfig

    cfg = read_experiment_config(args.config)
    for key in (
        "model",
        "dtype",
        "device",
        "tasks",
        "experiment",
        "neurons",
        "k",
        "n_detect",
        "n_train",
        "n_test",
        "seed",
        "out",
    ):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    for key in ("lr", "epochs", "batch_size"):
        value = getattr(args, key)
        if value is not None:
            cfg["train"][key] = value
    if not cfg["tasks"]:
        raise ValueError("no tasks: give --tasks or `tasks:` in the experiment file")
    out = Path(cfg["out"])
    prompt = PromptConfig(max_length=cfg["max_length"])
    seed = cfg["seed"]
    tasks = [load_task(t, seed=seed) for t in cfg["tasks"]]
    args.model, args.dtype, args.device = cfg["model"], cfg["dtype"], cfg["device"]
    model, tok = _load(args)
    eval_cfg = EvalConfig(prompt=prompt, **cfg["eval"])
    detect_cfg = DetectConfig(
        k=cfg["k"],
        attribution=AttributionConfig(n_examples=cfg["n_detect"], seed=seed, prompt=prompt),
    )
    if cfg["experiment"] in ("table2", "all"):
        if cfg["neurons"]:
            sets = load_neuron_sets(cfg["neurons"], tasks, model)
        else:
            print(f"== detect the task neurons of the base model ({cfg['n_detect']} examples)")
            sets = detect_neurons(model, tok, tasks, detect_cfg, out / "detect")
        train_cfg = TrainConfig(
            **{"seed": seed, **cfg["train"], "method": "neurons", "prompt": prompt}
        )
        fcfg = FinetuneConfig(
            n_train=cfg["n_train"],
            n_test=cfg["n_test"],
            seed=seed,
            random_seed=seed,
            matrix=bool(cfg["matrix"]),
            train=train_cfg,
            eval=eval_cfg,
        )
        print("== train each task's neurons vs as many random neurons (Table 2)")
        res = neuron_training_experiment(model, tok, tasks, sets, fcfg, out / "table2")
        print(res["table"])
        if res.get("matrix"):
            print((out / "table2" / "train_matrix.md").read_text())
    if cfg["experiment"] in ("multitask", "all"):
        mt_train = TrainConfig(**{"seed": seed, **cfg["multitask_train"], "prompt": prompt})
        mcfg = MultitaskConfig(
            n_train=cfg["n_train"],
            seed=seed,
            train=mt_train,
            detect=detect_cfg,
            deactivate=DeactivateConfig(
                n_test=cfg["n_test"], seed=seed, random_seed=seed, eval=eval_cfg
            ),
        )
        print("== multi-task fine-tuning, then detect and deactivate (Table 1)")
        res = multitask_experiment(model, tok, tasks, mcfg, out / "multitask")
        _print_deactivation(out / "multitask" / "deactivate", res)
    print(f"results in {out}")
    return 0


COMMANDS = {
    "info": cmd_info,
    "tasks": cmd_tasks,
    "eval": cmd_eval,
    "detect": cmd_detect,
    "deactivate": cmd_deactivate,
    "finetune": cmd_finetune,
    "demo": cmd_demo,
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from taskneurons.data.tasks import TaskFormatError
    from taskneurons.models.adapters import UnsupportedModelError
    from taskneurons.models.loading import ModelLoadError
    from taskneurons.neurons.neuron_set import NeuronSetMismatchError

    return (
        ModelLoadError,
        TaskFormatError,
        UnsupportedModelError,
        NeuronSetMismatchError,
        FileNotFoundError,
        ValueError,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``taskneurons`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
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
