"""The ``taskneurons`` argument parser, generated from the stage registry and the configs.

Each registered stage is a command (``taskneurons detect``, ``taskneurons sweep``, ...) whose
flags are those its settings declare (:mod:`taskneurons.cli_flags`): the file-level ones
(``--model``, ``--tasks``, ``--out``, the prompt's), then every flag in the sections the stage
reads. A flag sets every field that declares it there (``--n-test`` sets ``table2.n_test`` and
``deactivate.n_test`` in ``finetune``); a typo is refused before anything heavy is imported. Only a command's own flags are built (the
top-level ``--help`` reads the stage titles only), and no module here imports torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from taskneurons.cli_estimate import add_estimate
from taskneurons.cli_flags import (
    FlagUse,
    add_flags,
    flags_of,
    read_count,
    read_layers,
    read_percents,
    read_text,
)
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.experiment_file import ALIASES, DEMO_FILE
from taskneurons.experiments.stage import stage as stage_named
from taskneurons.experiments.stage import stages

DEFAULT_OUT = Path("runs")


class UsageError(Exception):
    """A flag the parser refuses; ``main`` prints it as one line and exits with status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block and exit
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="YAML or JSON experiment file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set any key of the experiment file, e.g. --set detect.selection.m=3")  # fmt: skip


def command_sections(names: list[str]) -> dict[str, type]:
    """The sections (name -> config class) that running the stages ``names`` reads."""
    wanted = [section for name in names for section in stage_named(name).sections()]
    return {name: stage_named(name).config for name in dict.fromkeys(wanted)}


#: the stages ``finetune`` runs, by ``--experiment``
FINETUNE = ("table2", "multitask")


def stage_command_flags(command: str) -> list[FlagUse]:
    """The flags of a command that runs stages (a stage's own command, ``finetune``, ``demo``)."""
    if command == "finetune":
        return flags_of(command_sections(list(FINETUNE)))
    if command == "demo":
        return flags_of(command_sections(demo_stages()))
    return flags_of(command_sections([command]))


def demo_stages() -> list[str]:
    """The stages of the demo's experiment file."""
    import yaml  # the demo file's stages, read when the demo command is built

    names = yaml.safe_load(DEMO_FILE.read_text())["experiment"]
    return [
        n
        for name in ([names] if isinstance(names, str) else names)
        for n in ALIASES.get(name, [name])
    ]


# -- commands -------------------------------------------------------------------------------------
def _add_stage(p: argparse.ArgumentParser, name: str) -> None:
    add_flags(p, stage_command_flags(name), f"runs/{name} (NEURONS/{name} with --neurons)")
    _settings_args(p)


def _add_finetune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", choices=[*FINETUNE, "all"], default=None)
    add_flags(p, stage_command_flags("finetune"), "runs/finetune")
    _settings_args(p)


def _add_demo(p: argparse.ArgumentParser) -> None:
    add_flags(p, stage_command_flags("demo"), "runs/demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


#: the top-level keys ``eval`` takes: how the model is loaded, the seed, the prompt
MODEL_KEYS = ("model", "dtype", "device", "device_map", "offload_folder", "seed", "prompt")


def eval_flags() -> list[FlagUse]:
    """``eval``'s flags: the model's, the prompt's and the evaluation config's."""
    uses = [u for u in flags_of({}) if u.keys[0].split(".")[0] in MODEL_KEYS]
    return uses + flags_of({"eval": EvalConfig}, top=None)


def _add_eval(p: argparse.ArgumentParser) -> None:
    add_flags(p, eval_flags(), "runs/eval/TASK-MODE.json")
    p.add_argument(
        "--task",
        "-t",
        type=read_text,
        required=True,
        help="task folder, built-in name or spec file",
    )
    p.add_argument(
        "--limit", type=read_count, default=None, help="test examples (label-stratified)"
    )
    p.add_argument("--mode", choices=["score", "generate"], default=None,
                   help="score: label log-likelihood; generate: greedy + exact match / ROUGE-L")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="JSON file for per-example results")


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", type=read_text, default="smollm2-135m")
    p.add_argument("--dtype", default="float32")


def _add_run(p: argparse.ArgumentParser) -> None:
    known = ", ".join(s.name for s in stages())
    p.add_argument("config", type=Path, help=f"YAML or JSON experiment file (stages: {known})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set detect.k=5 --set table2.train.lr=1e-3")  # fmt: skip
    p.add_argument("--out", default=None, help="run folder (default: the file's `out`)")
    p.add_argument("--overwrite", action="store_true",
                   help="empty the run folder first if it holds a run of other settings")  # fmt: skip


#: the help of ``analyze table5/sweep --mixed``
MIXED = "lay out runs of other models, tasks or settings together (refused without it)"


def _add_analyze(p: argparse.ArgumentParser) -> None:
    kinds = p.add_subparsers(dest="analysis", required=True)
    t5 = kinds.add_parser("table5", help="Table 5 over task orders: CL of every method on each "
                          "finished continual run")  # fmt: skip
    t5.add_argument("runs", nargs="+", type=Path, help="folders of `experiment: continual` runs")
    t5.add_argument("--out", type=Path, default=None, help="also write table5_orders.{md,csv,json}")
    t5.add_argument("--mixed", action="store_true", help=MIXED)
    reuse = kinds.add_parser("reuse", help="neurons of each task that later tasks train again "
                             "(NCFT, W-NCFT), against chance and forgetting")  # fmt: skip
    reuse.add_argument("runs", nargs="+", type=Path, help="folders of continual runs")
    reuse.add_argument("--out", type=Path, default=None, help="also write neuron_reuse{,_layers}.*")
    temp = kinds.add_parser("temperature", help="W-NCFT's final scores again at other softmax "
                            "temperatures, from its last checkpoint (no training)")  # fmt: skip
    temp.add_argument("runs", nargs="+", type=Path, help="W-NCFT folders of finished continual "
                      "runs (e.g. RUN/seed0/wncft)")  # fmt: skip
    temp.add_argument("--temperatures", nargs="+", type=float, default=[1.0, 0.1, 0.03, 0.01])
    temp.add_argument("--modes", nargs="+", choices=["given", "inferred"],
                      default=["given", "inferred"], help="answering modes to score")  # fmt: skip
    temp.add_argument("--out", type=Path, default=None, help="also write wncft_temperature*.*")
    temp.add_argument("--choose-on-validation", type=int, default=None, metavar="N_VAL",
                      help="choose T per run and mode on N_VAL validation examples per task "
                      "(the best mean; ties within --ties points to the larger T), then "
                      "score only that T on the test examples")  # fmt: skip
    temp.add_argument("--ties", type=float, default=0.0, help="with --choose-on-validation: "
                      "the tie margin in points (default 0)")  # fmt: skip
    sw = kinds.add_parser(
        "sweep", help="one k x selection grid from finished or interrupted sweeps"
    )
    sw.add_argument("runs", nargs="+", type=Path, help="folders of `experiment: sweep` runs")
    sw.add_argument("--out", type=Path, default=None, help="default: RUN/analyze-sweep (first)")
    sw.add_argument("--mixed", action="store_true", help=MIXED)
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
        _add_analysis_options(q, name)
    losses = kinds.add_parser(
        "losses", help="training loss, early and late, of every training run in a finished run"
    )
    losses.add_argument("run", type=Path, help="the run folder")
    losses.add_argument("--out", type=Path, default=None, help="default: RUN/analyze-losses")


def _add_analysis_options(q: argparse.ArgumentParser, name: str) -> None:
    if name == "overlap":
        q.add_argument("--selection", default=None, help="another selection method")
        q.add_argument("--proportions", type=read_percents, default=None, help="e.g. 10,30,50")
        return
    if name != "figure2":
        q.add_argument("--layers", type=read_layers, default=None, help="e.g. 10-20 (default: all)")
    if name == "correlate":
        q.add_argument("--score", choices=("raw", "gain"), default=None)
    if name in ("figure2", "correlate"):
        q.add_argument("--n-boot", type=read_count, default=None, help="bootstrap resamples")
        q.add_argument("--seed", type=int, default=None, help="bootstrap seed")


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="a detect folder or a run folder holding detect/")
    p.add_argument("--out", type=Path, required=True,
                   help="FILE.pth / .pt (LAPE's list of unit-index tensors) or FILE.json")  # fmt: skip
    p.add_argument("--tasks", type=lambda v: [t for t in v.split(",") if t], default=None,
                   help="comma-separated task ids (default: every set)")  # fmt: skip
    p.add_argument("--general", action="store_true", help="add the general set (specific)")


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", type=Path, help="run folders (side by side)")
    p.add_argument("--out", type=Path, default=None, help="FILE.html (default: RUN/report.html)")
    p.add_argument("--neuron", action="append", default=[], type=_read_neuron, metavar="L.U",
                   help="a neuron card for FFN unit U of layer L (repeatable)")  # fmt: skip
    p.add_argument("--cards", type=int, default=2, metavar="N",
                   help="neuron cards of each task's N most relevant neurons (0: none)")  # fmt: skip


def _read_neuron(value: str) -> tuple[int, int]:
    layer, dot, unit = value.partition(".")
    if not (dot and layer.isdigit() and unit.isdigit()):
        raise argparse.ArgumentTypeError(f"expected LAYER.UNIT such as 12.803, got {value!r}")
    return int(layer), int(unit)


def commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]]:
    """Command name -> (one-line help, the function that adds its arguments)."""
    out: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
        "info": ("architecture, FFN size and neuron counts of a model", _add_info),
        "tasks": ("list the built-in demo tasks", lambda p: None),
        "eval": ("evaluate a model on a task", _add_eval),
        "run": ("run an experiment file (see experiments/)", _add_run),
        "estimate": ("predicted time, peak memory and disk of every stage of a file", add_estimate),
    }
    for s in stages():
        out[s.name] = (s.title, lambda p, name=s.name: _add_stage(p, name))
    out["finetune"] = (
        "neuron-training experiments: Table 2 (+ Figure 5 a), Table 1 on a multi-task "
        "fine-tuned model (+ Figure 5 b)",
        _add_finetune,
    )
    out["analyze"] = ("tables and figures from finished runs", _add_analyze)
    out["report"] = ("one self-contained HTML page of finished runs", _add_report)
    out["export"] = ("neuron sets as LAPE .pth or JSON files other tools read", _add_export)
    out["demo"] = ("the whole flow on the embedded model and built-in tasks", _add_demo)
    return out


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``taskneurons`` parser; only ``command``'s own arguments are built (all with ``None``
    when ``command`` is ``"*"``)."""
    parser = _Parser(
        prog="taskneurons",
        description="Find the neurons a language model uses for a task, prove they matter, "
        "and use them (Leng & Xiong 2024).",
    )
    parser.add_argument("--version", action="version", version=f"taskneurons {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, add) in commands().items():
        p = sub.add_parser(name, help=text.replace("%", "%%"), description=text)
        if command in (name, "*"):
            add(p)
    return parser


def check_required(args: argparse.Namespace) -> None:
    """A command that runs stages needs ``--tasks`` unless a ``--config`` file gives them."""
    if getattr(args, "config", "") is None and getattr(args, "tasks", "") is None:
        prog = f"taskneurons {args.command}"
        raise UsageError(
            f"{prog}: error: the following arguments are required: --tasks/-t (see {prog} --help)"
        )


def command_of(argv: list[str]) -> str | None:
    """The command ``argv`` names (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("taskneurons")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree
        return "unknown"
