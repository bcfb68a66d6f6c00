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

from taskneurons.cli_parser import DEFAULT_OUT, UsageError, build_parser

__all__ = ["DEFAULT_OUT", "UsageError", "build_parser", "cli_message", "main"]


# -- flags -> experiment settings ----------------------------------------------------------------
def _prompt(args) -> dict:
    """The prompt settings of the flags; ``max_length`` only when ``--max-length`` is given."""
    prompt = {"chat_template": args.chat_template}
    if args.max_length is not None:
        prompt["max_length"] = args.max_length
    return prompt


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

#: ``taskneurons continual`` flag -> the experiment-file keys it sets
CONTINUAL_FLAGS = {
    "model": ["model"],
    "dtype": ["dtype"],
    "device": ["device"],
    "tasks": ["tasks"],
    "seed": ["seed"],
    "out": ["out"],
    "k": ["continual.method.k"],
    "n_train": ["continual.n_train"],
    "n_test": ["continual.n_test"],
    "lr": ["continual.train.lr"],
    "epochs": ["continual.train.epochs"],
    "batch_size": ["continual.train.batch_size"],
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
    from taskneurons.experiments.zero_shot.inspection import evaluate_task

    task = load_task(args.task, seed=args.seed)
    check_task_metric(task)
    _check_eval_out(args.out)
    _check_device(args.device)
    model, tok = _load(args)
    config = {
        "prompt": {**_prompt(args), "max_length": _fit_max_length(args.max_length, model)},
        "batch_size": args.batch_size,
        "length_normalize": args.length_normalize,
        "calibrate": args.calibrate,
    }
    print(evaluate_task(model, tok, task, args.limit, args.seed, args.mode, config, args.out))
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


def _fit_max_length(max_length: int | None, model) -> int:
    """``--max-length``, checked against the model; when not given, 512 or the context length."""
    from taskneurons.data.prompt_config import PromptConfig
    from taskneurons.data.prompts import fit_max_length
    from taskneurons.models.loading import context_length

    value = PromptConfig().max_length if max_length is None else max_length
    return fit_max_length(value, context_length(model), max_length is not None, "--max-length")


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
    from taskneurons.experiments.experiment_file import read_mapping

    data = read_mapping(args.config) if args.config else {"out": str(DEFAULT_OUT / "finetune")}
    data.setdefault("experiment", "table2")
    source = str(args.config or "taskneurons finetune")
    return _run_settings(data, source, _flag_overrides(args, FINETUNE_FLAGS))


def cmd_continual(args) -> int:
    from taskneurons.experiments.experiment_file import read_mapping

    data = read_mapping(args.config) if args.config else {"out": str(DEFAULT_OUT / "continual")}
    data["experiment"] = "continual"
    overrides = _flag_overrides(args, CONTINUAL_FLAGS)
    if args.method:
        overrides.append(("continual.methods", [args.method]))
    if args.resume:
        overrides.append(("resume", True))
    source = str(args.config or "taskneurons continual")
    return _run_settings(data, source, overrides)


def cmd_analyze(args) -> int:
    from taskneurons.experiments.continual.table5 import continual_orders_table
    from taskneurons.experiments.generalization.reanalysis import analyze_run

    if args.analysis == "sweep":
        from taskneurons.experiments.specificity.sweep_grid import sweep_summary

        print(sweep_summary(args.runs, args.out).markdown())
        return 0
    if args.analysis != "table5":  # overlap, figure2, similarity, correlate
        print(analyze_run(args.analysis, vars(args)).markdown())
        return 0

    result = continual_orders_table(args.runs, args.out)
    print(result.markdown())
    print("\nFG_j per stage (%):\n")
    print(result.forgetting_markdown())
    if args.out is not None:
        print(f"written to {args.out}: table5_orders and forgetting_orders (.md, .csv, .json)")
        print("and forgetting_<run>.png per run")
    return 0


def cmd_demo(args) -> int:
    from taskneurons.experiments.experiment_file import read_mapping
    from taskneurons.experiments.runner import DEMO_FILE

    data = read_mapping(DEMO_FILE)
    code = _run_settings(data, "taskneurons demo", _flag_overrides(args, DEMO_FLAGS))
    print("demo finished")
    return code


def _run_settings(data: dict, source: str, overrides: list | None = None) -> int:
    """Run the settings ``data`` (flags, a file) with ``(key, value)`` flag overrides.

    A ``max_length`` the user did not set (demo's, or none) is fitted to the model.
    """
    from taskneurons.experiments.experiment_file import ExperimentFile, put_key, with_defaults
    from taskneurons.experiments.runner import mentions_key, run_experiment

    fit = source == "taskneurons demo" or not mentions_key(data, "max_length")
    for key, value in overrides or []:
        put_key(data, key, value)
    config = ExperimentFile.from_dict(with_defaults(data), where=source)
    run = run_experiment(config, source=source, fit_max_length=fit)
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
    "continual": cmd_continual,
    "analyze": cmd_analyze,
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
        ValueError,
        OSError,  # FileNotFoundError, PermissionError, IsADirectoryError, a full disk, ...
    )


#: experiment-file key -> the flag that sets it, for messages of the commands built from flags
_KEY_FLAGS = {
    "model": "--model",
    "dtype": "--dtype",
    "device": "--device",
    "tasks": "--tasks",
    "seed": "--seed",
    "out": "--out",
    "neurons": "--neurons",
    "detect.k": "--k",
    "detect.attribution.n_examples": "--n-examples",
    "detect.attribution.batch_size": "--batch-size",
    "deactivate.n_test": "--n-test",
    "deactivate.eval.batch_size": "--batch-size",
}

#: phrases of library messages -> what a command-line user types instead, per command
_PHRASES = {
    "pass strict=False": {
        "deactivate": "pass --no-strict",
        "": "set strict: false in the experiment file",
    },
}


def _flag_of(key: str, command: str) -> str | None:
    if key.endswith("max_length") and "prompt" in key:
        return "--max-length"
    table = {"finetune": FINETUNE_FLAGS, "demo": DEMO_FLAGS, "continual": CONTINUAL_FLAGS}.get(
        command
    )
    if table is not None:
        flags = {k: "--" + flag.replace("_", "-") for flag, keys in table.items() for k in keys}
        return flags.get(key)
    return _KEY_FLAGS.get(key)


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
        text = text.replace(phrase, words.get(command, words[""]))
    prefix = f"taskneurons {command}: "
    if not text.startswith(prefix):
        return text
    text = text[len(prefix) :].removeprefix("ExperimentFile: ")
    match = re.match(r"([\w.]+): (?:(\w+) )?", text)
    if match is None:
        return text
    key, field = match.groups()
    if field and _flag_of(f"{key}.{field}", command):  # "detect: k must be ..."
        return f"{_flag_of(f'{key}.{field}', command)} {text[len(key) + 2 + len(field) + 1 :]}"
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
    traceback instead. Programming errors are never caught.
    """
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
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
        print(f"taskneurons {args.command}: error: {_describe(exc, args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
