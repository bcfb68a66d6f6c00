"""The ``taskneurons`` argument parser: flags, their checks, and one-line usage errors.

Every flag value is checked here (sizes >= 1, ``--k`` a percentage, ``--max-length`` >= 8, no
empty ``--tasks``), so a typo is refused before anything heavy is imported or loaded. Only the
standard library is imported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = Path("runs")


class UsageError(Exception):
    """A flag the parser refuses; ``main`` prints it as one line and exits with status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block and exit
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _count(value: str) -> int:
    """A whole number >= 1 (examples, batch size, epochs)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _max_length(value: str) -> int:
    n = _count(value)
    if n < 8:
        raise argparse.ArgumentTypeError(f"must be at least 8 tokens, got {n}")
    return n


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None


def _percent(value: str) -> float:
    k = _number(value)
    if not 0 < k <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage in (0, 100], got {value}")
    return k


def _positive(value: str) -> float:
    x = _number(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def _text(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _percents(value: str) -> list[float]:
    """Comma-separated percentages in (0, 100]: ``10,30,50``."""
    out = [_percent(v) for v in value.split(",") if v.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"no percentage in {value!r}; e.g. 10,30,50,70,100")
    return out


def _layers(value: str) -> list[int]:
    """Layer indices: ``10,12`` or ranges ``10-20`` (inclusive), >= 0, each once."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in value.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected layers like 10,12 or 10-20, got {value!r}"
        ) from None
    if not out or min(out) < 0 or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"give distinct layers >= 0, got {value!r}")
    return out


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        "-m",
        type=_text,
        default="smollm2-135m",
        help="smollm2-135m (embedded), a .gguf file, a model folder or a hub id",
    )
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")


def _prompt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template"
    )
    p.add_argument(
        "--max-length",
        type=_max_length,
        default=None,
        help="max tokens per sequence (default: 512, or the model's context length if shorter)",
    )
    p.add_argument("--batch-size", type=_count, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")


def _calibrate_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="contextual calibration of label scores (subtract each label's prior on "
        "content-free inputs; Zhao et al. 2021)",
    )


def _tasks_arg(value: str) -> list[str]:
    tasks = [v.strip() for v in value.split(",") if v.strip()]
    if not tasks:
        raise argparse.ArgumentTypeError(
            f"no task in {value!r}; give comma-separated task folders, built-in names or spec files"
        )
    return tasks


def _add_info_tasks_eval(sub) -> None:
    p = sub.add_parser("info", help="architecture, FFN size and neuron counts of a model")
    p.add_argument("model", nargs="?", type=_text, default="smollm2-135m")
    p.add_argument("--dtype", default="float32")
    sub.add_parser("tasks", help="list the built-in demo tasks")
    p = sub.add_parser("eval", help="evaluate a model on a task")
    _model_args(p)
    p.add_argument(
        "--task", "-t", type=_text, required=True, help="task folder, built-in name or hf:NAME"
    )
    p.add_argument("--limit", type=_count, default=None, help="test examples (label-stratified)")
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
    p.add_argument("--k", type=_percent, default=10.0, help="percent of neurons per task")
    p.add_argument("--scope", choices=["model", "layer"], default="model")
    p.add_argument("--definition", choices=["ffn", "linear"], default="ffn")
    p.add_argument("--loss", choices=["answer", "all"], default="answer")
    p.add_argument("--aggregate", choices=["example", "task", "token_abs"], default="example")
    p.add_argument("--n-examples", type=_count, default=128, help="train examples scored per task")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "detect")
    _prompt_args(p)

    p = sub.add_parser("deactivate", help="Table 1 rows and the task x task deactivation matrix")
    _model_args(p)
    p.add_argument("--neurons", type=Path, required=True, help="output folder of `detect`")
    p.add_argument("--tasks", "-t", type=_tasks_arg, required=True, help="comma-separated")
    p.add_argument("--mode", choices=["activation", "parameters"], default="activation")
    p.add_argument("--n-test", type=_count, default=200, help="test examples per task")
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
    p.add_argument("--model", "-m", type=_text, default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--tasks", "-t", type=_tasks_arg, default=None, help="comma-separated")
    p.add_argument("--experiment", choices=["table2", "multitask", "all"], default=None)
    p.add_argument("--neurons", default=None, help="output folder of `detect` (default: detect)")
    p.add_argument("--k", type=_percent, default=None)
    p.add_argument("--n-detect", type=_count, default=None, help="examples scored per task")
    p.add_argument("--n-train", type=_count, default=None, help="train examples per task")
    p.add_argument("--n-test", type=_count, default=None, help="test examples per task")
    p.add_argument("--lr", type=_positive, default=None)
    p.add_argument("--epochs", type=_count, default=None)
    p.add_argument("--batch-size", type=_count, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None)


def _add_continual(sub) -> None:
    p = sub.add_parser(
        "continual",
        help="learn tasks in order with one continual-learning method (Table 5 row, Figure 4)",
    )
    p.add_argument("--config", type=Path, default=None, help="YAML or JSON experiment file")
    p.add_argument("--model", "-m", type=_text, default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument(
        "--tasks", "-t", type=_tasks_arg, default=None, help="the order, comma-separated"
    )
    p.add_argument(
        "--method",
        choices=["seqft", "seqlora", "olora", "epi", "pertask", "ncft", "wncft", "wncft-inferred"],
        default=None,
        help="the method (default: ncft, or the file's continual.methods)",
    )
    p.add_argument("--k", type=_percent, default=None, help="NCFT/W-NCFT: percent of neurons")
    p.add_argument("--n-train", type=_count, default=None, help="train examples per task")
    p.add_argument("--n-test", type=_count, default=None, help="test examples per task")
    p.add_argument("--lr", type=_positive, default=None)
    p.add_argument("--epochs", type=_count, default=None)
    p.add_argument("--batch-size", type=_count, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--out", default=None)


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="tables and figures from finished runs")
    kinds = p.add_subparsers(dest="analysis", required=True)
    t5 = kinds.add_parser(
        "table5",
        help="Table 5 over task orders: CL of every method on each finished continual run",
    )
    t5.add_argument("runs", nargs="+", type=Path, help="folders of `experiment: continual` runs")
    t5.add_argument("--out", type=Path, default=None, help="also write table5_orders.{md,csv,json}")
    sw = kinds.add_parser(
        "sweep", help="one k x selection grid from the cells of finished or interrupted sweeps"
    )
    sw.add_argument("runs", nargs="+", type=Path, help="folders of `experiment: sweep` runs")
    sw.add_argument("--out", type=Path, default=None, help="default: RUN/analyze-sweep (first)")
    helps = {
        "overlap": "Table 8 again from a finished generalization run's scores (other selection)",
        "figure2": "Figure 2 again from a finished generalization run (change from zero-shot, CIs)",
        "similarity": "Figure 3 again from a finished similarity run (mean over other layers)",
        "correlate": "Table 4 again from a finished similarity run (layers, raw or gain)",
    }
    for name, text in helps.items():
        q = kinds.add_parser(name, help=text)
        q.add_argument("run", type=Path, help="the run folder")
        q.add_argument("--out", type=Path, default=None, help="default: RUN/analyze-" + name)
        if name == "overlap":
            q.add_argument("--selection", choices=("topk", "specific", "contrastive", "lape"))
            q.add_argument("--proportions", type=_percents, default=None, help="e.g. 10,30,50")
            continue
        if name == "figure2":
            q.add_argument("--n-boot", type=_count, default=None, help="bootstrap resamples")
            q.add_argument("--seed", type=int, default=None, help="bootstrap seed")
            continue
        q.add_argument("--layers", type=_layers, default=None, help="e.g. 10-20 (default: all)")
        if name == "correlate":
            q.add_argument("--score", choices=("raw", "gain"), default=None)
            q.add_argument("--n-boot", type=_count, default=None, help="bootstrap resamples")
            q.add_argument("--seed", type=int, default=None, help="bootstrap seed")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole flow on the embedded model and built-in tasks")
    p.add_argument(
        "--model", "-m", type=_text, default=None, help="default: the embedded smollm2-135m"
    )
    p.add_argument("--out", default=None, help="default: runs/demo")
    p.add_argument("--n-test", type=_count, default=None, help="test examples per task (30)")
    p.add_argument("--n-detect", type=_count, default=None, help="examples scored per task (32)")
    p.add_argument("--k", type=_percent, default=None, help="percent of neurons per task (10)")
    p.add_argument("--n-train", type=_count, default=None, help="train examples per task (32)")
    p.add_argument("--seed", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    """The ``taskneurons`` argument parser."""
    parser = _Parser(
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
    _add_continual(sub)
    _add_analyze(sub)
    _add_demo(sub)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("taskneurons")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree
        return "unknown"
