"""Bad inputs through the command line: each is one line ``taskneurons CMD: error: ...``, exit 2.

Every case here is listed in docs/bad-inputs.md ("The command line: bad inputs").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from taskneurons import _io
from taskneurons.cli import cli_message, main
from taskneurons.config import ConfigError
from taskneurons.data.prompts import truncation_report


def _write_task(folder: Path, task_id: str, pairs, labels, test_pairs=None) -> Path:
    """A classification task folder (``pairs`` in both splits, or ``test_pairs`` as test)."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"id": task_id, "kind": "classification", "labels": labels, "instruction": "Classify ."}
    (folder / "task.json").write_text(json.dumps(meta))
    for split, rows in (("train", pairs), ("test", pairs if test_pairs is None else test_pairs)):
        lines = "".join(json.dumps({"input": f"Text : {x}", "output": y}) + "\n" for x, y in rows)
        (folder / f"{split}.jsonl").write_text(lines)
    return folder


def refused(capsys, argv: list[str], *expected: str) -> str:
    """Run the command; it must exit 2 with one error line holding every ``expected`` text."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    line = errors[0]
    assert line == err.strip().splitlines()[-1]  # nothing after it
    assert line.startswith(f"taskneurons {command}: error: "), line
    for text in expected:
        assert text in line, (text, line)
    return line


def _copy_model(tiny_folder: Path, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    dest.mkdir(parents=True)
    for f in tiny_folder.iterdir():
        if f.name not in drop:
            shutil.copy(f, dest / f.name)
    return dest


# -- model folders, devices ----------------------------------------------------------------------
def test_model_folder_without_weights(tiny_folder, tmp_path, capsys):
    folder = _copy_model(tiny_folder, tmp_path / "m", drop=("model.safetensors",))
    refused(capsys, ["info", str(folder)], f"{folder} has a config.json but no model weights")


def test_truncated_weights_file(tiny_folder, tmp_path, capsys):
    folder = _copy_model(tiny_folder, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    refused(capsys, ["info", str(folder)], f"could not read the model in {folder}", "incomplete")


def test_model_folder_without_tokenizer(tiny_folder, tmp_path, capsys):
    folder = _copy_model(
        tiny_folder, tmp_path / "m", drop=("tokenizer.json", "tokenizer_config.json")
    )
    line = refused(capsys, ["info", str(folder)], f"{folder} has no tokenizer files")
    assert "sentencepiece" not in line


def test_mistyped_local_paths_are_not_sent_to_the_hub(tmp_path, capsys, monkeypatch):
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    refused(
        capsys,
        ["info", "./my-modle"],
        "model path ./my-modle does not exist; did you mean my-model?",
    )
    refused(
        capsys,
        ["info", "/path/that/doesnt/exist"],
        "model path /path/that/doesnt/exist does not exist (no folder /path)",
    )


def _no_hub(monkeypatch):
    """The hub cannot be reached (and must not be asked twice)."""
    import huggingface_hub

    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    return calls


def test_embedded_name_with_wrong_case_fails_at_once(capsys, monkeypatch):
    calls = _no_hub(monkeypatch)
    refused(
        capsys,
        ["info", "SmolLM2-135M"],
        "unknown model 'SmolLM2-135M': not a local path (did you mean the embedded model "
        "'smollm2-135m'?)",
    )
    assert calls == []  # the hub is not asked


def test_unreachable_hub_fails_fast_with_the_close_name(capsys, monkeypatch):
    calls = _no_hub(monkeypatch)  # then only the local cache is tried (no such model there)
    refused(
        capsys,
        ["info", "smolm2-135m"],
        "could not load 'smolm2-135m' from the Hugging Face hub (the hub cannot be reached",
        "(did you mean the embedded model 'smollm2-135m'?)",
    )
    assert len(calls) == 1  # asked once, no retries


def test_unknown_hub_model(capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def not_found(*args, **kwargs):
        exc = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(exc, "404 Client Error. Repository Not Found for url: ...")
        raise exc

    monkeypatch.setattr(huggingface_hub, "model_info", not_found)
    refused(
        capsys,
        ["info", "someorg/no-such-model"],
        "could not load 'someorg/no-such-model': it is not a local path and the Hugging Face "
        "hub has no such model, or it is private or gated",
    )


@pytest.mark.parametrize("command", ["eval", "detect"])
def test_unknown_and_missing_devices(command, tiny_folder, task_folders, tmp_path, capsys):
    flag = "--task" if command == "eval" else "--tasks"
    argv = [command, "-m", str(tiny_folder), flag, str(task_folders[0]), "--out"]
    argv.append(str(tmp_path / ("e.json" if command == "eval" else "d")))
    refused(
        capsys,
        [*argv, "--device", "gpu"],
        "--device: unknown device 'gpu'; use cpu, cuda, cuda:N (a GPU) or mps (Apple)",
    )
    if not torch.cuda.is_available():
        line = refused(capsys, [*argv, "--device", "cuda"], "--device: 'cuda'", "use cpu")
        assert "built without it" in line or "no CUDA GPU is visible" in line
    assert not (tmp_path / "d").exists() and not (tmp_path / "e.json").exists()


# -- output paths --------------------------------------------------------------------------------
def test_out_that_is_a_file_or_under_a_file(tiny_folder, task_folders, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    detect = ["detect", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--out"]
    refused(capsys, [*detect, str(blocker)], f"--out: {blocker} is a file, not a folder")
    refused(capsys, [*detect, str(blocker / "sub")], f"--out: {blocker} is a file, not a folder")
    evaluate = ["eval", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--out"]
    refused(capsys, [*evaluate, str(blocker / "e.json")], f"--out: {blocker} is a file")


def test_eval_out_that_is_a_folder(tiny_folder, task_folders, tmp_path, capsys):
    argv = ["eval", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--out", str(tmp_path)]
    refused(
        capsys,
        argv,
        f"--out {tmp_path} is a folder; eval writes one JSON file there, e.g. --out "
        f"{tmp_path / 'eval.json'}",
    )


def test_out_that_is_not_writable(tiny_folder, task_folders, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(
        _io.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode)
    )
    detect = ["detect", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--out"]
    refused(capsys, [*detect, str(locked / "run")], f"--out: {locked} is not writable")
    evaluate = ["eval", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--out"]
    refused(capsys, [*evaluate, str(locked / "e.json")], f"--out: {locked} is not writable")


def test_an_os_error_is_one_line(tiny_folder, task_folders, tmp_path, capsys, monkeypatch):
    from taskneurons.experiments.zero_shot import inspection

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "e.json"))

    monkeypatch.setattr(inspection, "evaluate_task", denied)
    argv = ["eval", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--out"]
    refused(capsys, [*argv, str(tmp_path / "e.json")], f"Permission denied: {tmp_path}/e.json")
    with pytest.raises(PermissionError):  # -v shows the traceback
        main(["-v", *argv, str(tmp_path / "e.json")])


# -- flags checked before anything loads ---------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["detect", "--tasks", ""], "argument --tasks/-t: no task in ''; give comma-separated"),
        (["detect", "--tasks", " , "], "argument --tasks/-t: no task in ' , '"),
        (["detect", "-t", "x", "--k", "0"], "argument --k: must be a percentage in (0, 100]"),
        (["detect", "-t", "x", "--k", "150"], "argument --k: must be a percentage in (0, 100]"),
        (["detect", "-t", "x", "--n-examples", "0"], "argument --n-examples: must be at least 1"),
        (["detect", "-t", "x", "--max-length", "4"], "--max-length: must be at least 8 tokens"),
        (["deactivate", "-t", "x", "--neurons", "n", "--n-test", "0"], "--n-test: must be at"),
        (["eval", "-t", "x", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["eval", "-t", "x", "--limit", "0"], "argument --limit: must be at least 1, got 0"),
        (["eval", "-t", ""], "argument --task/-t: must not be empty"),
        (["eval", "-t", "x", "-m", ""], "argument --model/-m: must not be empty"),
        (["finetune", "--n-train", "0"], "argument --n-train: must be at least 1, got 0"),
        (["finetune", "--lr", "-1"], "argument --lr: must be > 0, got -1"),
        (["finetune", "--epochs", "two"], "argument --epochs: expected a whole number, got 'two'"),
        (["demo", "--n-detect", "0"], "argument --n-detect: must be at least 1, got 0"),
        (["detect"], "the following arguments are required: --tasks/-t"),
    ],
)
def test_bad_flags_are_refused_by_the_parser(argv, message, capsys):
    line = refused(capsys, argv, message)
    assert line.endswith(f"(see taskneurons {argv[0]} --help)")


def test_experiment_file_sizes_and_device_before_the_model(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "experiment: detect\nmodel: /no/such/model\ntasks: [sentiment]\n"
        f"detect: {{attribution: {{n_examples: 0}}}}\nout: {tmp_path / 'run'}\n"
    )
    refused(
        capsys,
        ["run", str(path)],
        f"{path}: detect.attribution.n_examples: must be at least 1 (or null for all "
        "examples), got 0",
    )
    path.write_text(f"experiment: detect\ntasks: [sentiment]\ndevice: gpu\nout: {tmp_path}\n")
    refused(capsys, ["run", str(path)], f"{path}: device: unknown device 'gpu'")
    with pytest.raises(ConfigError):  # -v re-raises
        main(["-v", "run", str(path)])


# -- task ids ------------------------------------------------------------------------------------
def _pairs():
    return [("the movie was good", "good"), ("the film was bad", "bad")] * 2


@pytest.mark.parametrize(
    "task_id, why",
    [
        ("../evil", "it holds a path separator"),
        ("/tmp/evil", "it holds a path separator"),
        ("a/b", "it holds a path separator"),
        ("..", "it starts with a dot"),
        ("", "it is empty"),
    ],
)
def test_task_ids_that_are_not_plain_file_names(task_id, why, tiny_folder, tmp_path, capsys):
    folder = _write_task(tmp_path / "tasks" / "evil", task_id, _pairs(), ["good", "bad"])
    out = tmp_path / "sub" / "out"
    argv = ["detect", "-m", str(tiny_folder), "-t", str(folder), "--out", str(out)]
    if task_id == "":  # task.json needs a non-empty id: refused there
        refused(capsys, argv, "'id' must be a non-empty string")
        return
    refused(
        capsys,
        argv,
        f"tasks[0]: task id {task_id!r} (from {folder.resolve()}) is not a plain file name ({why})",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks"]  # nothing written


def test_two_task_folders_with_one_id(tiny_folder, task_folders, tmp_path, capsys):
    twin = _write_task(tmp_path / "mood-copy", "mood", _pairs(), ["good", "bad"])
    tasks = f"{task_folders[0]},{twin}"
    argv = ["detect", "-m", str(tiny_folder), "-t", tasks, "--out", str(tmp_path / "d")]
    refused(
        capsys,
        argv,
        f"--tasks: {task_folders[0]} (tasks[0]) and {twin} (tasks[1]) have the same task id "
        "'mood'; results are stored by task id, so one would overwrite the other",
    )


def test_task_json_that_is_a_folder(tiny_folder, tmp_path, capsys):
    folder = _write_task(tmp_path / "odd", "odd", _pairs(), ["good", "bad"])
    (folder / "task.json").unlink()
    (folder / "task.json").mkdir()
    argv = ["eval", "-m", str(tiny_folder), "-t", str(folder), "--out", str(tmp_path / "e.json")]
    refused(capsys, argv, f"{folder / 'task.json'}: is a folder, not a file")


# -- context length and truncation ---------------------------------------------------------------
def test_max_length_beyond_the_context(tiny_folder, task_folders, tmp_path, capsys):
    message = "--max-length: 128 is more than the model's context length 64"
    detect = ["detect", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--n-examples", "2"]
    refused(capsys, [*detect, "--max-length", "128", "--out", str(tmp_path / "d")], message)
    assert not (tmp_path / "d" / "mood").exists()  # no work done
    evaluate = ["eval", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--limit", "2"]
    argv = [*evaluate, "--max-length", "128", "--out", str(tmp_path / "e.json")]
    refused(capsys, argv, message)  # eval goes through the runner's one context rule
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        f"experiment: detect\nmodel: {tiny_folder}\ntasks: [{task_folders[0]}]\n"
        f"prompt: {{max_length: 100}}\nout: {tmp_path / 'r'}\n"
    )
    refused(
        capsys,
        ["run", str(exp)],
        f"{exp}: prompt.max_length: 100 is more than the model's context length 64 "
        "(config.max_position_embeddings); use at most 64",
    )
    # without --max-length the default 512 is lowered to the context length, and recorded
    assert main([*detect, "--out", str(tmp_path / "d")]) == 0
    resolved = yaml.safe_load((tmp_path / "d" / "config.yaml").read_text())
    assert resolved["prompt"]["max_length"] == 64
    assert resolved["detect"]["attribution"]["prompt"]["max_length"] == 64


def test_truncated_inputs_are_counted(tiny_folder, tmp_path, caplog):
    long = " ".join(["the movie was very good and fun"] * 12)
    pairs = [(long, "good"), (long + " !", "good"), ("the film was bad", "bad")] * 2
    folder = _write_task(tmp_path / "long", "long", pairs, ["good", "bad"])
    argv = ["eval", "-m", str(tiny_folder), "-t", str(folder), "--out", str(tmp_path / "e.json")]
    truncation_report(warn=False)  # forget what earlier tests in this process cut
    with caplog.at_level(logging.WARNING, logger="taskneurons.data.prompts"):
        assert main(argv) == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "taskneurons.data.prompts"]
    assert warnings == [
        "task 'long': 2 input(s) were cut to fit max_length=64 tokens; raise max_length "
        "(--max-length, prompt.max_length in an experiment file) to keep them whole"
    ]


# -- metrics -------------------------------------------------------------------------------------
def test_declared_metric_is_used_or_refused(tiny_folder, tmp_path, capsys):
    from taskneurons.data.load import load_task
    from taskneurons.data.prompt_config import PromptConfig
    from taskneurons.evaluation.dispatch import evaluate
    from taskneurons.evaluation.eval_config import EvalConfig
    from taskneurons.models.loading import load_model

    def task(name, kind, metric, output):
        folder = tmp_path / name
        folder.mkdir()
        meta = {"id": name, "kind": kind, "instruction": "x", "metric": metric}
        if kind == "classification":
            meta["labels"] = ["good", "bad"]
        (folder / "task.json").write_text(json.dumps(meta))
        for split in ("train", "test"):
            line = json.dumps({"input": "the cat", "output": output})
            (folder / f"{split}.jsonl").write_text(line + "\n")
        return folder

    bad = task("crouge", "classification", "rougeL", "good")
    argv = ["eval", "-m", str(tiny_folder), "-t", str(bad), "--out", str(tmp_path / "e.json")]
    refused(
        capsys,
        argv,
        "task 'crouge' declares metric 'rougeL', which a classification task cannot be "
        "scored by; use one of ['accuracy']",
    )
    model, tok = load_model(str(tiny_folder))
    gen = load_task(str(task("gacc", "generation", "accuracy", "dog")))
    cfg = EvalConfig(max_new_tokens=4, prompt=PromptConfig(max_length=48))
    result = evaluate(model, tok, gen, config=cfg, progress=False)
    assert result.metric == "accuracy" and "correct" in result.predictions[0]
    assert result.score in (0.0, 100.0)


# -- messages in command-line terms, file modes, a light import ----------------------------------
def test_library_phrases_become_flags():
    text = "neuron set was made on another model (pass strict=False to accept ...)"
    assert "(pass --no-strict to accept" in cli_message(text, "deactivate")
    assert "(set strict: false in the experiment file to accept" in cli_message(text, "run")
    assert cli_message("taskneurons detect: detect: k must be in (0, 100]", "detect") == (
        "--k must be in (0, 100]"
    )
    assert cli_message("exp.yaml: detect: k must be", "run") == "exp.yaml: detect: k must be"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        path = _io.write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_eval_results_are_readable_by_others(tiny_folder, task_folders, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "e.json"
        argv = ["eval", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--limit", "2"]
        assert main([*argv, "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_importing_the_cli_does_not_import_torch():
    code = (
        "import sys, taskneurons.cli, taskneurons\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "from taskneurons import load_model, load_task, Task, NeuronSet\n"  # lazily, on use
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
