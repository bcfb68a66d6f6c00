"""The probe of issue 22: every case of root causes 4 (knobs) and 6 (messages), tried as a user
would, through ``main([...])`` with a model that loads.

Each ends in exactly one line on stderr, ``taskneurons CMD: error: ...``, and exit status 2; where
the inputs alone decide it (the settings, the files given, the flags), before the model loads:
a spy on ``load_model`` records every model it returned, and it must have returned none. The
messages are listed in docs/bad-inputs.md (``python tests/bad_input_messages.py``).
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import yaml

from taskneurons.cli import main
from test_bad_inputs import _copy_model, _write_task
from test_knob_checks import KNOB_CASES, MATRIX

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def loaded(monkeypatch) -> list[str]:
    """The model specs ``load_model`` returned a model for during the test."""
    import taskneurons.experiments.runner as runner
    import taskneurons.models.loading as loading

    real, done = loading.load_model, []

    def spy(spec, *args, **kwargs):
        out = real(spec, *args, **kwargs)
        done.append(str(spec))
        return out

    monkeypatch.setattr(loading, "load_model", spy)
    monkeypatch.setattr(runner, "load_model", spy)
    return done


def one_line(capsys, argv: list[str], after_work: bool = False) -> str:
    """Run ``taskneurons argv``: exit 2 and stderr exactly one line, the error (``after_work``:
    the run's progress lines may come first; the error is the last line and the only one).
    """
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert "Traceback" not in "\n".join(lines)
    assert [line for line in lines if ": error: " in line] == lines[-1:], lines
    if not after_work:
        assert len(lines) == 1, lines
    assert lines[-1].startswith(f"taskneurons {argv[0]}: error: "), lines[-1]
    return lines[-1]


def _tasks(folders) -> str:
    return ",".join(str(f) for f in folders)


# -- root cause 4: knobs ---------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", KNOB_CASES)
def test_knob_cases(settings, message, tiny_folder, task_folders, tmp_path, capsys, loaded):
    out = tmp_path / "run"
    data = {"model": str(tiny_folder), "tasks": [str(f) for f in task_folders], "out": str(out)}
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({**data, **settings}))
    assert message in one_line(capsys, ["run", str(exp)])
    assert loaded == [] and not out.exists()


@pytest.mark.parametrize("stage", ["deactivate", "sweep", "crosstrain", "multitask", "continual"])
def test_knob_cases_one_task(stage, tiny_folder, task_folders, tmp_path, capsys, loaded):
    """A stage that compares tasks, given one: through its command and through a file."""
    why = MATRIX if stage != "continual" else "BWT, FWT and forgetting compare tasks"
    argv = [stage, "-m", str(tiny_folder), "-t", str(task_folders[0])]
    line = one_line(capsys, [*argv, "--out", str(tmp_path / "c")])
    assert f"--tasks: {stage} needs at least 2 tasks ({why}" in line
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"experiment": stage, "model": str(tiny_folder),
                                   "tasks": [str(task_folders[0])], "out": str(tmp_path / "f")}))  # fmt: skip
    assert f"{exp}: tasks: {stage} needs at least 2 tasks ({why}" in one_line(
        capsys, ["run", str(exp)]
    )
    assert loaded == [] and not (tmp_path / "c").exists() and not (tmp_path / "f").exists()


def test_knob_cases_methods_twice(tiny_folder, task_folders, tmp_path, capsys, loaded):
    argv = ["continual", "-m", str(tiny_folder), "-t", _tasks(task_folders)]
    line = one_line(capsys, [*argv, "--method", "seqft,seqft", "--out", str(tmp_path / "c")])
    assert "--method: ['seqft'] listed twice" in line
    assert loaded == [] and not (tmp_path / "c").exists()


# -- root cause 6: messages ------------------------------------------------------------------------
def _sweep(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    """A finished sweep whose evaluations.json was cut short; the rerun that reads it."""
    data = {
        "experiment": "sweep", "model": str(tiny_folder), "out": str(tmp_path / "sw"),
        "tasks": [str(f) for f in task_folders],
        "detect": {"k": 20, "attribution": {"n_examples": 4}},
        "deactivate": {"n_test": 4, "n_boot": 10, "n_permutations": 10},
        "sweep": {"k": [20], "selections": ["topk"]},
    }  # fmt: skip
    exp = tmp_path / "sweep.yaml"
    exp.write_text(yaml.safe_dump(data))
    assert main(["run", str(exp)]) == 0
    evaluations = tmp_path / "sw" / "topk-k20" / "evaluations.json"
    evaluations.write_text(evaluations.read_text()[:500])
    return ["run", str(exp), "--set", "resume=true"]


def _continual(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    """A finished continual run (it leaves a checkpoint); the same command again."""
    argv = ["continual", "-m", str(tiny_folder), "-t", _tasks(task_folders), "--method", "seqft"]
    argv += ["--n-train", "2", "--n-test", "2", "--out", str(tmp_path / "cl")]
    assert main(argv) == 0
    return argv


def _continual_file(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    _continual(tmp_path, tiny_folder, task_folders)
    exp = tmp_path / "cl.yaml"
    exp.write_text((tmp_path / "cl" / "config.yaml").read_text())
    return ["run", str(exp)]


def _dtype(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    base = ["-m", str(tiny_folder), "-t", _tasks(task_folders)]
    assert main(["detect", *base, "--n-examples", "4", "--out", str(tmp_path / "d")]) == 0
    argv = ["deactivate", *base, "--neurons", str(tmp_path / "d"), "--out", str(tmp_path / "x")]
    return [*argv, "--dtype", "bfloat16"]


def _t5(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=100, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_folder / name, tmp_path / "t5" / name)
    return ["info", str(tmp_path / "t5")]


def _untyped(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    untyped = _copy_model(tiny_folder, tmp_path / "untyped")
    config = json.loads((untyped / "config.json").read_text())
    del config["model_type"]
    (untyped / "config.json").write_text(json.dumps(config))
    return ["info", str(untyped)]


def _broken_config(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    broken = _copy_model(tiny_folder, tmp_path / "broken")
    (broken / "config.json").write_text((tiny_folder / "config.json").read_text()[:50])
    return ["eval", "-m", str(broken), "-t", str(task_folders[0])]


def _json_array(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    folder = _write_task(
        tmp_path / "arr", "arr", [("good", "good"), ("bad", "bad")], ["good", "bad"]
    )
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    (folder / "train.jsonl").write_text(json.dumps(rows, indent=1))
    return ["eval", "-m", str(tiny_folder), "-t", str(folder), "--out", str(tmp_path / "e.json")]


def _duplicate_key(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"experiment: detect\nmodel: {tiny_folder}\ntasks: [{task_folders[0]}]\n"
                   "detect: {k: 5}\nseed: 1\ndetect: {k: 10}\n")  # fmt: skip
    return ["run", str(exp)]


def _duplicate_spec_key(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    spec = tmp_path / "mytask.yaml"
    spec.write_text("hf: data.jsonl\ninput_field: a\noutput_field: b\ninput_field: c\n")
    return ["eval", "-m", str(tiny_folder), "-t", str(spec), "--out", str(tmp_path / "e.json")]


def _finetune_sweep(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"experiment: sweep\nmodel: {tiny_folder}\ntasks: [{task_folders[0]}]\n")
    return ["finetune", "--config", str(sweep)]


def _analyze_out(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    (tmp_path / "a-file").write_text("x")
    return ["analyze", "sweep", str(tmp_path), "--out", str(tmp_path / "a-file")]


def _eval_key(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"experiment": "deactivate", "model": str(tiny_folder),
                                   "tasks": [str(f) for f in task_folders],
                                   "deactivate": {"eval": {"batch_size": 0}}}))  # fmt: skip
    return ["run", str(exp)]


def _eval_flag(tmp_path: Path, tiny_folder, task_folders) -> list[str]:
    argv = ["deactivate", "-m", str(tiny_folder), "-t", _tasks(task_folders)]
    return [*argv, "--set", "deactivate.eval.batch_size=0", "--out", str(tmp_path / "d")]


#: case -> (builder of the argv, a text of the message); the inputs alone decide each
MESSAGE_CASES = {
    "truncated evaluations.json": (_sweep, "evaluations.json: not readable JSON (line "),
    "--resume named as a flag": (_continual, "pass --resume, or another --out"),
    "resume named as a key": (_continual_file, "set resume: true in the experiment file"),
    "batch_size named as a key": (_eval_key, "deactivate.eval: batch_size must be >= 1"),
    "batch_size named as a flag": (_eval_flag, "--batch-size must be >= 1, got 0"),
    "T5": (_t5, "unsupported architecture 't5'"),
    "config.json without model_type": (_untyped, "names no model_type"),
    "broken config.json": (_broken_config, "config.json is not valid JSON at line "),
    "--dtype against float32 sets": (_dtype, "but this run loads it as bfloat16"),
    "JSON array in a .jsonl file": (_json_array, "this is a JSON array, not JSON Lines"),
    "duplicate key in an experiment file": (_duplicate_key, ":6: duplicate key 'detect'"),
    "duplicate key in a task spec": (_duplicate_spec_key, ":4: duplicate key 'input_field'"),
    "finetune --config of a sweep file": (_finetune_sweep, "its experiment is 'sweep'"),
    "analyze --out that is a file": (_analyze_out, "is a file, not a folder"),
}


@pytest.mark.parametrize("case", MESSAGE_CASES)
def test_message_cases(case, tiny_folder, task_folders, tmp_path, capsys, loaded):
    build, text = MESSAGE_CASES[case]
    argv = build(tmp_path, tiny_folder, task_folders)
    loaded.clear()  # what the setup runs loaded
    assert text in one_line(capsys, argv)
    assert loaded == [], "the model was loaded before the refusal"


def test_message_case_full_disk(tiny_folder, task_folders, tmp_path, capsys, monkeypatch):
    """A full disk is met when the result is written, after the work: the file is named."""
    out = tmp_path / "e.json"
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".e.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    argv = ["eval", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--out", str(out)]
    line = one_line(capsys, argv, after_work=True)
    assert line == f"taskneurons eval: error: No space left on device: {out}"
