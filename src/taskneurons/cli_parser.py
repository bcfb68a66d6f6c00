"""The ``taskneurons`` argument parser, generated from the stage registry and the configs.

Each registered stage is a command (``taskneurons detect``, ``taskneurons sweep``, ...) whose
flags are those its settings declare (``field(metadata=flag(...))`` in the configs, see
:func:`taskneurons.config.flag`): the file-level ones (``--model``, ``--tasks``, ``--out``,
the prompt's), then every flag in the sections the stage reads. A flag sets every field that
declares it there (``--n-test`` sets ``table2.n_test`` and ``deactivate.n_test`` in
``finetune``). Values are checked here by their kind (sizes >= 1, ``--k`` a percentage, ...),
choices come from ``Literal`` types and variant families, defaults and help from the fields, so
a typo is refused before anything heavy is imported. Only a command's own flags are built (the
top-level ``--help`` reads the stage titles only), and no module here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from taskneurons.config import Flag, Variant
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.experiment_file import ALIASES, DEMO_FILE, ExperimentFile
from taskneurons.experiments.stage import stage as stage_named
from taskneurons.experiments.stage import stages

DEFAULT_OUT = Path("runs")


class UsageError(Exception):
    """A flag the parser refuses; ``main`` prints it as one line and exits with status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block and exit
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


# -- value kinds ----------------------------------------------------------------------------------
def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None


def _count(value: str) -> int:
    """A whole number >= 1 (examples, batch size, epochs)."""
    n = _integer(value)
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


def _tasks_arg(value: str) -> list[str]:
    tasks = [v.strip() for v in value.split(",") if v.strip()]
    if not tasks:
        raise argparse.ArgumentTypeError(
            f"no task in {value!r}; give comma-separated task folders, built-in names or spec files"
        )
    return tasks


def _names(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no value in {value!r}; give a comma-separated list")
    return names


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


#: a flag's ``kind`` -> how its value is read and checked
KINDS: dict[str, Callable[[str], Any]] = {
    "count": _count,
    "max_length": _max_length,
    "percent": _percent,
    "positive": _positive,
    "text": _text,
    "tasks": _tasks_arg,
}


# -- flags from the configs -----------------------------------------------------------------------
@dataclass
class FlagUse:
    """One flag of a command and the settings it sets (dotted keys of the experiment file)."""

    flag: Flag
    keys: list[str]
    read: Callable[[str], Any] | None
    choices: tuple | None
    default: Any
    boolean: bool

    @property
    def dest(self) -> str:
        return self.flag.names[0].lstrip("-").replace("-", "_")


def _plain_type(tp: Any) -> Any:
    """``X`` of ``X | None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _config_type(tp: Any) -> type | None:
    """The config dataclass a field holds (``None`` for a plain value)."""
    tp = _plain_type(tp)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _walk(cls: type, prefix: str, top: bool) -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, field, type)`` of every field of ``cls`` that declares a flag.

    Nested configs are walked too, except a prompt inside a section (the file-level prompt
    has the prompt flags) and fields marked :data:`~taskneurons.config.NO_FLAGS`.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "flag" in f.metadata:
            yield prefix + f.name, f, hints[f.name]
        inner = _config_type(hints[f.name])
        if inner is None or f.metadata.get("flags") is False or (inner is PromptConfig and not top):
            continue
        classes = [inner]
        if issubclass(inner, Variant) and "variants" in inner.__dict__:
            classes = [inner.variant(n) for n in inner.names()]
        for c in classes:
            yield from _walk(c, f"{prefix}{f.name}.", False)


def _use(f: dataclasses.Field, tp: Any, key: str) -> FlagUse:
    spec: Flag = f.metadata["flag"]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    tp = _plain_type(tp)
    choices = None
    inner = _config_type(tp)
    if inner is not None and issubclass(inner, Variant):  # the flag names the variant
        choices, key, default = tuple(inner.names()), f"{key}.{inner.tag}", inner.default
    elif typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
    if tp is bool:
        return FlagUse(spec, [key], None, None, default, True)
    read = KINDS.get(spec.kind) if spec.kind else None
    if read is None:
        origin = typing.get_origin(tp)
        read = {int: _integer, float: _number}.get(tp, _names if origin is list else None)
    return FlagUse(spec, [key], read, choices, default, False)


def flags_of(sections: Mapping[str, type], top: type | None = ExperimentFile) -> list[FlagUse]:
    """Every flag of the settings: ``top``'s fields (file level) and each section's.

    A flag declared by several fields is one :class:`FlagUse` that sets them all.

    Raises:
        ValueError: one flag is declared with different kinds or choices (a clash in the
            configs, found when the command is built).
    """
    found: dict[str, FlagUse] = {}
    places = ([("", top, True)] if top is not None else []) + [
        (f"{name}.", cls, False) for name, cls in sections.items()
    ]
    for prefix, cls, is_top in places:
        for key, f, tp in _walk(cls, prefix, is_top):
            use = _use(f, tp, key)
            have = found.get(use.flag.names[0])
            if have is None:
                found[use.flag.names[0]] = use
                continue
            if (have.read, have.choices, have.boolean) != (use.read, use.choices, use.boolean):
                raise ValueError(f"flag {use.flag.names[0]} is declared unlike by {have.keys[0]} "
                                 f"and {use.keys[0]}")  # fmt: skip
            have.keys.extend(use.keys)
    return list(found.values())


def add_flags(parser: argparse.ArgumentParser, uses: list[FlagUse], out_default: str) -> None:
    """One argument per flag (default ``None``: a flag not given sets nothing); a long alias is
    an argument of its own (hidden), so a message names the flag as it was typed."""
    for use in uses:
        shown = out_default if use.dest == "out" else use.default
        text = use.flag.help if use.boolean else f"{use.flag.help} (default: {shown})".strip()
        main = [n for n in use.flag.names if not n.startswith("--")]
        aliases = [n for n in use.flag.names if n.startswith("--")]
        for i, name in enumerate(aliases):
            names = [name, *main] if i == 0 else [name]
            shown_help = text.replace("%", "%%") if i == 0 else argparse.SUPPRESS
            _add_one(parser, use, names, shown_help)


def _add_one(parser: argparse.ArgumentParser, use: FlagUse, names: list[str], text: str) -> None:
    if use.boolean:
        parser.add_argument(*names, dest=use.dest, action="store_const",
                            const=not use.flag.negate, default=None, help=text)  # fmt: skip
        return
    parser.add_argument(*names, dest=use.dest, type=use.read, choices=use.choices,
                        default=None, help=text)  # fmt: skip


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


def eval_flags() -> list[FlagUse]:
    """``eval``'s flags: the model's, the prompt's and the evaluation config's."""
    uses = [u for u in flags_of({}) if u.keys[0].split(".")[0] in ("model", "dtype", "device",
                                                                   "seed", "prompt")]  # fmt: skip
    return uses + flags_of({"eval": EvalConfig}, top=None)


def _add_eval(p: argparse.ArgumentParser) -> None:
    add_flags(p, eval_flags(), "runs/eval/TASK-MODE.json")
    p.add_argument(
        "--task", "-t", type=_text, required=True, help="task folder, built-in name or spec file"
    )
    p.add_argument("--limit", type=_count, default=None, help="test examples (label-stratified)")
    p.add_argument("--mode", choices=["score", "generate"], default=None,
                   help="score: label log-likelihood; generate: greedy + exact match / ROUGE-L")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="JSON file for per-example results")


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", type=_text, default="smollm2-135m")
    p.add_argument("--dtype", default="float32")


def _add_run(p: argparse.ArgumentParser) -> None:
    known = ", ".join(s.name for s in stages())
    p.add_argument("config", type=Path, help=f"YAML or JSON experiment file (stages: {known})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set detect.k=5 --set table2.train.lr=1e-3")  # fmt: skip
    p.add_argument("--out", default=None, help="run folder (default: the file's `out`)")


def _add_analyze(p: argparse.ArgumentParser) -> None:
    kinds = p.add_subparsers(dest="analysis", required=True)
    t5 = kinds.add_parser("table5", help="Table 5 over task orders: CL of every method on each "
                          "finished continual run")  # fmt: skip
    t5.add_argument("runs", nargs="+", type=Path, help="folders of `experiment: continual` runs")
    t5.add_argument("--out", type=Path, default=None, help="also write table5_orders.{md,csv,json}")
    sw = kinds.add_parser(
        "sweep", help="one k x selection grid from finished or interrupted sweeps"
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
        _add_analysis_options(q, name)


def _add_analysis_options(q: argparse.ArgumentParser, name: str) -> None:
    if name == "overlap":
        q.add_argument("--selection", default=None, help="another selection method")
        q.add_argument("--proportions", type=_percents, default=None, help="e.g. 10,30,50")
        return
    if name != "figure2":
        q.add_argument("--layers", type=_layers, default=None, help="e.g. 10-20 (default: all)")
    if name == "correlate":
        q.add_argument("--score", choices=("raw", "gain"), default=None)
    if name in ("figure2", "correlate"):
        q.add_argument("--n-boot", type=_count, default=None, help="bootstrap resamples")
        q.add_argument("--seed", type=int, default=None, help="bootstrap seed")


def commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]]:
    """Command name -> (one-line help, the function that adds its arguments)."""
    out: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
        "info": ("architecture, FFN size and neuron counts of a model", _add_info),
        "tasks": ("list the built-in demo tasks", lambda p: None),
        "eval": ("evaluate a model on a task", _add_eval),
        "run": ("run an experiment file (see experiments/)", _add_run),
    }
    for s in stages():
        out[s.name] = (s.title, lambda p, name=s.name: _add_stage(p, name))
    out["finetune"] = (
        "neuron-training experiments: Table 2 (+ Figure 5 a), Table 1 on a multi-task "
        "fine-tuned model (+ Figure 5 b)",
        _add_finetune,
    )
    out["analyze"] = ("tables and figures from finished runs", _add_analyze)
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
