"""The ``taskneurons`` command: commands of a few lines that call the library.

``run`` runs any experiment file; ``detect``, ``deactivate``, ``finetune`` and ``demo`` turn
their flags into an experiment config and hand it to the same runner
(:mod:`taskneurons.experiments.runner`). The parser and its flag checks are in
:mod:`taskneurons.cli_parser`. Run ``taskneurons --help`` or ``taskneurons SUBCOMMAND --help``.
Heavy libraries (torch, transformers) are imported only when a command runs, so ``--help`` and
refused flags answer at once; every refused input is one line ``taskneurons CMD: error: ...``
and exit status 2 (see docs/bad-inputs.md).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

from taskneurons._ranks import console_process, quiet_other_processes
from taskneurons.cli_estimate import cmd_estimate
from taskneurons.cli_flags import FlagUse
from taskneurons.cli_parser import (
    DEFAULT_OUT,
    FINETUNE,
    UsageError,
    build_parser,
    check_required,
    command_of,
    eval_flags,
    stage_command_flags,
)
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.experiment_file import (
    DEMO_FILE,
    ExperimentFile,
    put_key,
    read_mapping,
    set_key,
    with_defaults,
)

__all__ = ["DEFAULT_OUT", "UsageError", "build_parser", "cli_message", "main"]


# -- flags -> experiment settings ----------------------------------------------------------------
def flag_settings(args, uses: list[FlagUse]) -> list[tuple[str, object]]:
    """``(dotted key, value)`` for every flag in ``uses`` that was given."""
    return [
        (key, getattr(args, use.dest))
        for use in uses
        for key in use.keys
        if getattr(args, use.dest, None) is not None
    ]


# -- commands ------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from taskneurons.experiments.zero_shot.inspection import model_summary
    from taskneurons.models.loading import load_model

    model, _ = load_model(args.model, dtype=args.dtype)
    print(model_summary(model, args.model))
    return 0


def cmd_tasks(args) -> int:
    from taskneurons.experiments.zero_shot.inspection import builtin_table

    print(builtin_table())
    return 0


def cmd_eval(args) -> int:
    from taskneurons.data.load import load_task
    from taskneurons.data.prompts import truncation_report
    from taskneurons.evaluation.dispatch import check_task_metric
    from taskneurons.experiments.runner import fit_context
    from taskneurons.experiments.zero_shot.inspection import evaluate_task

    task = load_task(args.task, seed=args.seed or 0)
    check_task_metric(task)
    _check_eval_out(args.out)
    data: dict = {}
    for key, value in flag_settings(args, eval_flags()):
        put_key(data, key, value)
    keys = ("model", "dtype", "device", "device_map", "offload_folder", "seed")
    model_flags = {k: data.pop(k) for k in keys if k in data}
    evaluation = data.get("eval", {})
    evaluation["prompt"] = data.get("prompt", {})
    config = EvalConfig.from_dict(evaluation, where="taskneurons eval")
    _check_device(model_flags.get("device", "cpu"))
    model, tok = _load(model_flags.get("model", "smollm2-135m"), model_flags)
    fit = "max_length" not in evaluation["prompt"]
    config = fit_context(config, model, "taskneurons eval", fit)
    seed = model_flags.get("seed", 0)
    print(evaluate_task(model, tok, task, args.limit, seed, args.mode, config.to_dict(), args.out))
    truncation_report()
    return 0


def _check_device(device: str) -> None:
    from taskneurons.models.loading import check_device

    try:
        check_device(device)
    except ValueError as exc:
        raise ValueError(f"--device: {exc}") from None


def _check_eval_out(out: Path | None) -> None:
    """``--out`` must name a JSON file in a folder that can be written, before the model loads."""
    from taskneurons._io import folder_problem

    if out is not None and out.is_dir():
        raise ValueError(
            f"--out {out} is a folder; eval writes one JSON file there, e.g. --out "
            f"{out / 'eval.json'}"
        )
    problem = folder_problem(out.parent if out is not None else DEFAULT_OUT / "eval")
    if problem:
        raise ValueError(f"--out: {problem}")


def cmd_run(args) -> int:
    from taskneurons.experiments.runner import run_file

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    overrides += ["overwrite=true"] if args.overwrite else []
    run = run_file(args.config, overrides)
    from taskneurons.cli_report import finished

    return finished(run)


def cmd_stages(args) -> int:
    """A stage's own command, ``finetune`` or ``demo``: its flags over a file's settings."""
    command = args.command
    if command == "demo":
        data = read_mapping(DEMO_FILE)
    elif args.config is not None:
        data = read_mapping(args.config)
    else:
        data = {}
    if command == "finetune":
        data["experiment"] = args.experiment or _finetune_stages(data, args.config)
    elif command != "demo":
        data["experiment"] = command
    neurons = args.neurons if args.neurons is not None else data.get("neurons")
    if "out" not in data:
        data["out"] = str(Path(neurons) / command if neurons else DEFAULT_OUT / command)
    source = (
        "taskneurons demo" if command == "demo" else str(args.config or f"taskneurons {command}")
    )
    return _run_settings(data, source, flag_settings(args, stage_command_flags(command)), args)


def _finetune_stages(data: dict, config: Path | None):
    """The ``experiment`` of a file given to ``finetune --config``: only its stages (``table2``,
    ``multitask``, ``all``; ``detect`` before them), never another experiment's."""
    given = data.get("experiment", "table2")
    names = [given] if isinstance(given, str) else given
    if not isinstance(names, list) or any(n not in ("detect", *FINETUNE, "all") for n in names):
        raise ValueError(
            f"--config {config}: its experiment is {given!r}, not one finetune runs (table2, "
            f"multitask or all): run that file with taskneurons run {config}"
        )
    return given


def _run_settings(data: dict, source: str, overrides: list, args) -> int:
    """Run the settings ``data`` (a file, flags) with ``(key, value)`` flag overrides and the
    ``--set KEY=VALUE`` ones. A ``max_length`` the user did not set (the demo's, or none) is
    fitted to the model.
    """
    from taskneurons.experiments.runner import mentions_key, run_experiment

    for key, value in overrides:
        put_key(data, key, value)
    for item in args.overrides:
        set_key(data, item)
    fit = source == "taskneurons demo" or not mentions_key(data, "max_length")
    config = ExperimentFile.from_dict(with_defaults(data), where=source)
    run = run_experiment(config, source=source, fit_max_length=fit)
    from taskneurons.cli_report import finished

    return finished(run, source)


def _load(spec: str, flags: dict):
    from taskneurons.models.device_map import Placement
    from taskneurons.models.loading import load_model

    t0 = time.perf_counter()
    dtype, device = flags.get("dtype", "float32"), flags.get("device", "cpu")
    placement = Placement(flags.get("device_map"), flags.get("offload_folder"))
    model, tok = load_model(spec, dtype=dtype, device=device, placement=placement)
    print(f"loaded {spec} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return model, tok


COMMANDS = {
    "info": cmd_info,
    "tasks": cmd_tasks,
    "eval": cmd_eval,
    "run": cmd_run,
    "estimate": cmd_estimate,
}


def _command(name: str):
    """The function that runs command ``name`` (every stage command runs its stages;
    ``export``, ``report`` and ``analyze`` are in their own modules)."""
    if name in ("export", "report", "analyze"):
        from taskneurons import cli_analyze, cli_export, cli_report

        runs = {"export": cli_export.run_export, "report": cli_report.run_report}
        return runs.get(name, cli_analyze.cmd_analyze)
    return COMMANDS.get(name, cmd_stages)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a refused input raises; imports nothing (it may run during an interrupt).

    Every taskneurons error is a ``ValueError`` (``ConfigError``, ``TaskFormatError``,
    ``UnsupportedModelError``, ``ModelMismatchError``, ...) but ``ModelLoadError``, which only
    exists once its module has been imported.
    """
    loading = sys.modules.get("taskneurons.models.loading")
    extra = (loading.ModelLoadError,) if loading is not None else ()
    return (
        *extra,
        ValueError,
        OSError,  # FileNotFoundError, PermissionError, IsADirectoryError, a full disk, ...
    )


#: phrases of library messages (regular expressions) -> what a command-line user types
#: instead, per command ("": every other command)
_PHRASES = {
    r"pass strict=False": {
        "deactivate": "pass --no-strict",
        "": "set strict: false in the experiment file",
    },
    r"pass resume=True or another folder": {
        "run": "set resume: true in the experiment file, or another out:",
        "": "pass --resume, or another --out",
    },
    r"pass resume=True": {
        "run": "set resume: true in the experiment file",
        "": "pass --resume",
    },
    r"load the model with dtype=(\w+)": {
        "run": r"set dtype: \1 in the experiment file",
        "": r"pass --dtype \1",
    },
}


def _flag_of(key: str, command: str) -> str | None:
    """The flag of ``command`` that sets the experiment-file ``key`` (``None``: none does)."""
    if key.endswith("max_length") and "prompt" in key:
        return "--max-length"
    try:
        uses = eval_flags() if command == "eval" else stage_command_flags(command)
    except ValueError:  # not a command that runs stages
        return None
    return next((u.flag.names[0] for u in uses if key in u.keys), None)


def cli_message(text: str, command: str) -> str:
    """A library message in command-line terms: flags instead of experiment-file keys.

    Only a message about the command's own flags (one that starts with ``taskneurons
    COMMAND:``, the source of the settings the flags made) is re-worded; one about a file
    keeps the file's keys.

    Example:
        >>> cli_message("taskneurons detect: detect: k must be in (0, 100], got 0", "detect")
        '--k must be in (0, 100], got 0'
    """
    for phrase, words in _PHRASES.items():
        text = re.sub(phrase, words.get(command, words[""]), text)
    prefix = f"taskneurons {command}: "
    if not text.startswith(prefix):
        return text
    text = text[len(prefix) :].removeprefix("ExperimentFile: ")
    match = re.match(r"([\w.]+): (?:(\w+)(:?) )?", text)
    if match is None:
        return text
    key, field, colon = match.groups()
    flag = _flag_of(f"{key}.{field}", command) if field else None
    if flag:  # "detect: k must be ...", "continual: methods: ..."
        return f"{flag}{colon} {text[match.end() :]}"
    flag = _flag_of(key, command)
    return f"{flag}: {text[len(key) + 2 :]}" if flag else text


def _describe(exc: BaseException, command: str) -> str:
    """One line for ``exc``: an ``OSError`` as "what: file", anything else by its message."""
    if isinstance(exc, OSError) and exc.strerror:
        files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        text = f"{exc.strerror}: {files}" if files else str(exc)
    else:
        text = str(exc)
    lines = text.strip().splitlines() or [type(exc).__name__]
    return cli_message(" ".join(line.strip() for line in lines), command)


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``taskneurons`` console script; returns the exit status.

    A refused input (a bad flag, a missing or unreadable file, a model that does not load, ...)
    prints one line ``taskneurons COMMAND: error: ...`` and returns 2; ``-v`` shows the
    traceback instead. Programming errors are never caught. An interrupt (Ctrl-C) anywhere,
    start-up included, prints one line ``interrupted`` and returns 130 (nothing is imported
    while handling it). A process group the command started (``torchrun``: training makes an
    ``Accelerator``) is ended when it returns; one the caller started is left to the caller.
    """
    try:
        from taskneurons.training.process_group import ending_started_group

        with ending_started_group():
            return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    """:func:`main` but for interrupts and the process group."""
    try:
        args = build_parser(command_of(argv)).parse_args(argv)
        check_required(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    quiet_other_processes()  # torchrun: the main process prints (taskneurons._ranks)
    try:
        if not args.verbose:
            _quiet_libraries()
        return _command(args.command)(args)
    except _user_errors() as exc:
        if args.verbose:
            raise
        message = f"taskneurons {args.command}: error: {_describe(exc, args.command)}"
        if console_process():  # every process refuses alike; one says so
            print(message, file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
