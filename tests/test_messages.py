"""Messages that name the file, flag or key at fault, and say the right thing (issue 22, root
cause 6), through the command line.

Every case here is listed in docs/bad-inputs.md ("Messages: the file, the flag, the diagnosis").
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from taskneurons.cli import main
from test_bad_inputs import _copy_model, _write_task, refused

pytestmark = pytest.mark.usefixtures("one_thread")


def _tasks(task_folders) -> str:
    return ",".join(str(f) for f in task_folders)


# -- files named ---------------------------------------------------------------------------------
def test_truncated_evaluations_file_is_named(tiny_folder, task_folders, tmp_path, capsys):
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
    evaluations.write_text(evaluations.read_text()[:500])  # an interrupted copy
    refused(
        capsys,
        ["run", str(exp), "--set", "resume=true"],
        f"taskneurons run: error: {evaluations}: not readable JSON (line ",
        "the file was cut short or edited: delete it to make it again",
    )


def test_a_full_disk_names_the_file(tiny_folder, task_folders, tmp_path, capsys, monkeypatch):
    out = tmp_path / "e.json"
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".e.json."):  # the temporary file beside e.json
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    argv = ["eval", "-m", str(tiny_folder), "-t", str(task_folders[0]), "--out", str(out)]
    refused(capsys, argv, f"taskneurons eval: error: No space left on device: {out}")
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_analyze_out_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for analysis in ("sweep", "table5", "figure2"):
        refused(
            capsys,
            ["analyze", analysis, str(tmp_path), "--out", str(blocker)],
            f"taskneurons analyze: error: --out: {blocker} is a file, not a folder",
        )


# -- flags and keys, not Python ------------------------------------------------------------------
def test_resume_is_named_as_a_flag_or_a_key(tiny_folder, task_folders, tmp_path, capsys):
    argv = ["continual", "-m", str(tiny_folder), "-t", _tasks(task_folders), "--method", "seqft"]
    argv += ["--n-train", "2", "--n-test", "2", "--out", str(tmp_path / "cl")]
    assert main(argv) == 0  # leaves its checkpoint
    line = refused(
        capsys, argv, "holds a checkpoint of an earlier run; pass --resume, or another --out"
    )
    assert "resume=True" not in line
    exp = tmp_path / "cl.yaml"
    exp.write_text(
        yaml.safe_dump({**yaml.safe_load((tmp_path / "cl" / "config.yaml").read_text())})
    )
    refused(
        capsys,
        ["run", str(exp)],
        "holds a checkpoint of an earlier run; set resume: true in the experiment file, or "
        "another out:",
    )


def test_eval_settings_are_named_by_key_and_flag(tiny_folder, task_folders, tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        yaml.safe_dump(
            {
                "experiment": "deactivate",
                "tasks": [str(f) for f in task_folders],
                "deactivate": {"eval": {"batch_size": 0}},
            }
        )  # fmt: skip
    )
    line = refused(capsys, ["run", str(exp)], f"{exp}: deactivate.eval: batch_size must be >= 1")
    assert "EvalConfig" not in line
    argv = ["deactivate", "-t", _tasks(task_folders), "--set", "deactivate.eval.batch_size=0"]
    refused(capsys, argv, "taskneurons deactivate: error: --batch-size must be >= 1, got 0")


# -- the right diagnosis -------------------------------------------------------------------------
def test_unsupported_architectures_are_not_damaged_downloads(tiny_folder, tmp_path, capsys):
    from transformers import T5Config, T5ForConditionalGeneration

    t5 = tmp_path / "t5"
    config = T5Config(vocab_size=100, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    T5ForConditionalGeneration(config).save_pretrained(t5)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_folder / name, t5 / name)
    line = refused(
        capsys,
        ["info", str(t5)],
        f"taskneurons info: error: {t5 / 'config.json'}: unsupported architecture 't5': "
        "taskneurons supports these families (config.model_type in brackets): llama (",
    )
    assert "damaged" not in line
    untyped = _copy_model(tiny_folder, tmp_path / "untyped")
    config = json.loads((untyped / "config.json").read_text())
    del config["model_type"]
    (untyped / "config.json").write_text(json.dumps(config))
    refused(
        capsys,
        ["info", str(untyped)],
        f"error: {untyped / 'config.json'} names no model_type, so the architecture is unknown; "
        "taskneurons needs a Hugging Face causal LM of one of these families: llama, mistral",
    )


def test_broken_config_is_not_a_tokenizer_problem(tiny_folder, tmp_path, capsys):
    broken = _copy_model(tiny_folder, tmp_path / "broken")
    (broken / "config.json").write_text((tiny_folder / "config.json").read_text()[:50])
    line = refused(
        capsys,
        ["info", str(broken)],
        f"error: {broken / 'config.json'} is not valid JSON at line ",
        "the model's config is damaged or was cut short (an interrupted download or copy): save "
        "or download the model again",
    )
    assert "tokenizer" not in line


def test_another_dtype_is_not_another_model(tiny_folder, task_folders, tmp_path, capsys):
    base = ["-m", str(tiny_folder), "-t", _tasks(task_folders)]
    assert main(["detect", *base, "--n-examples", "4", "--out", str(tmp_path / "d")]) == 0
    argv = ["deactivate", *base, "--neurons", str(tmp_path / "d"), "--out", str(tmp_path / "x")]
    sets = tmp_path / "d" / "mood" / "neurons.safetensors"
    line = refused(  # before the model loads (tests/test_probe.py)
        capsys,
        [*argv, "--dtype", "bfloat16"],
        f"taskneurons deactivate: error: neuron set {sets} was made with the model loaded as "
        "float32, but this run loads it as bfloat16, so its weights are rounded otherwise: pass "
        "--dtype float32",
    )
    assert "another model" not in line


def test_a_json_array_is_not_json_lines(tiny_folder, tmp_path, capsys):
    folder = _write_task(
        tmp_path / "arr", "arr", [("good", "good"), ("bad", "bad")], ["good", "bad"]
    )
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    (folder / "train.jsonl").write_text(json.dumps(rows, indent=1))
    argv = ["eval", "-m", str(tiny_folder), "-t", str(folder), "--out", str(tmp_path / "e.json")]
    refused(
        capsys,
        argv,
        f"error: {folder / 'train.jsonl'}: this is a JSON array, not JSON Lines; a .jsonl file "
        'holds one JSON object per line ({"input": ..., "output": ...})',
    )


def test_duplicate_yaml_keys_are_refused(tiny_folder, task_folders, tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"experiment: detect\ntasks: [{task_folders[0]}]\ndetect: {{k: 5}}\n"
                   "seed: 1\ndetect: {k: 10}\n")  # fmt: skip
    refused(
        capsys,
        ["run", str(exp)],
        f"taskneurons run: error: {exp}:5: duplicate key 'detect' (first on line 3); only one of "
        "its values would be used: give each key once",
    )
    spec = tmp_path / "mytask.yaml"
    spec.write_text("hf: data.jsonl\ninput_field: a\noutput_field: b\ninput_field: c\n")
    argv = ["eval", "-m", str(tiny_folder), "-t", str(spec), "--out", str(tmp_path / "e.json")]
    refused(capsys, argv, f"error: {spec}:4: duplicate key 'input_field' (first on line 2)")


def test_finetune_config_runs_only_finetuning(task_folders, tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"experiment: sweep\ntasks: [{task_folders[0]}]\n")
    refused(
        capsys,
        ["finetune", "--config", str(sweep)],
        f"taskneurons finetune: error: --config {sweep}: its experiment is 'sweep', not one "
        f"finetune runs (table2, multitask or all): run that file with taskneurons run {sweep}",
    )
    assert not (tmp_path / "runs").exists()


def test_result_files_have_the_umask_mode(tiny_folder, task_folders, tmp_path):
    """Every file of a run, safetensors included, is 0644 under umask 022 (not 0600)."""
    old = os.umask(0o022)
    try:
        argv = ["detect", "-m", str(tiny_folder), "-t", _tasks(task_folders), "--n-examples", "4"]
        assert main([*argv, "--out", str(tmp_path / "d")]) == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "d").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {p.relative_to(tmp_path): oct(p.stat().st_mode & 0o777) for p in files} == {
        p.relative_to(tmp_path): "0o644" for p in files
    }


def test_eval_help_offers_what_eval_accepts(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "task folder, built-in name or spec file" in " ".join(text.split())
    assert "hf:" not in text
