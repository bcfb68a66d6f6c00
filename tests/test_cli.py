"""The taskneurons command on a tiny saved model and tiny task folders, and on the embedded model."""

from __future__ import annotations

import json

import pytest
import yaml

from taskneurons.cli import main

from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer


def test_info_prints_counts(tiny_folder, capsys):
    assert main(["info", str(tiny_folder)]) == 0
    out = capsys.readouterr().out
    assert "| layers | 2 |" in out
    assert "| d_ff | 80 |" in out
    assert "| ffn neurons | 160 |" in out
    # linear: gate 80 + up 80 + down 32 per layer
    assert "| linear neurons | 384 |" in out


def test_eval_writes_predictions_with_provenance(tiny_folder, task_folders, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(
        [
            "eval",
            "--model",
            str(tiny_folder),
            "--task",
            str(task_folders[0]),
            "--limit",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| mood | score | accuracy |" in printed
    data = json.loads(out.read_text())
    assert data["n"] == 4 and len(data["predictions"]) == 4
    assert "provenance" in json.dumps(data) or "versions" in json.dumps(data)


def test_eval_calibrate_flag(tiny_folder, task_folders, tmp_path):
    argv = ["eval", "--model", str(tiny_folder), "--task", str(task_folders[0]), "--limit", "4"]
    out = {c: tmp_path / f"{c}.json" for c in ("plain", "calibrated")}
    assert main([*argv, "--out", str(out["plain"])]) == 0
    assert main([*argv, "--calibrate", "--out", str(out["calibrated"])]) == 0
    plain, cal = (json.loads(out[c].read_text()) for c in ("plain", "calibrated"))
    assert plain["config"]["calibrate"] is False and cal["config"]["calibrate"] is True
    assert cal["calibration"] and not plain.get("calibration")  # label -> log prior


def test_detect_then_deactivate(tiny_folder, task_folders, tmp_path, capsys):
    tasks = ",".join(str(t) for t in task_folders)
    out = tmp_path / "detect"
    assert (
        main(
            [
                "detect",
                "--model",
                str(tiny_folder),
                "--tasks",
                tasks,
                "--k",
                "10",
                "--n-examples",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    for name in ("mood", "answer"):
        assert (out / name / "neurons.safetensors").is_file()
        assert (out / name / "scores.safetensors").is_file()
    for f in ("layer_counts.md", "iou.csv", "iou.png", "layer_counts.png", "detect_config.json"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "detect_config.json").read_text())
    assert cfg["config"]["k"] == 10.0 and "versions" in cfg
    assert (
        main(
            [
                "deactivate",
                "--model",
                str(tiny_folder),
                "--neurons",
                str(out),
                "--tasks",
                tasks,
                "--n-test",
                "4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for row in ("Original", "Deactivate-Random", "Deactivate-Task"):
        assert row in printed
    table = json.loads((out / "deactivate" / "table1.json").read_text())
    assert [r[0] for r in table["rows"]][:3] == ["Original", "Deactivate-Random", "Deactivate-Task"]
    assert (out / "deactivate" / "matrix.png").is_file()
    # the same evaluations' gold-label NLL, with its own tables and summary
    nll = json.loads((out / "deactivate" / "table1_nll.json").read_text())
    assert [r[0] for r in nll["rows"]][:3] == ["Original", "Deactivate-Random", "Deactivate-Task"]
    assert all(v > 0 for v in nll["rows"][0][1:])  # NLLs in nats
    assert (out / "deactivate" / "matrix_nll.png").is_file()
    assert printed.count("largest drop of a column on its diagonal:") == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "/nonexistent/model/folder.gguf"], "GGUF file not found"),
        (["eval", "--model", "TINY", "--task", "/nonexistent/task"], "nonexistent"),
        (["detect", "--model", "TINY", "--tasks", "TASK", "--k", "0"], "argument --k:"),
        (["detect", "--model", "TINY", "--tasks", "TASK", "--k", "150"], "argument --k:"),
    ],
)
def test_bad_inputs_exit_2_with_message(argv, message, tiny_folder, task_folders, capsys):
    argv = [
        str(tiny_folder) if a == "TINY" else str(task_folders[0]) if a == "TASK" else a
        for a in argv
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert "Traceback" not in err


def test_help_answers_without_loading_anything(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "usage: taskneurons" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    assert "--max-length" in capsys.readouterr().out


def test_neuron_set_of_another_model_is_refused(tiny_folder, task_folders, tmp_path, capsys):
    other = tmp_path / "gpt2"
    tiny_model("gpt2").save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    out = tmp_path / "detect"
    assert (
        main(
            [
                "detect",
                "--model",
                str(tiny_folder),
                "--tasks",
                str(task_folders[0]),
                "--n-examples",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    code = main(
        [
            "deactivate",
            "--model",
            str(other),
            "--neurons",
            str(out),
            "--tasks",
            str(task_folders[0]),
            "--n-test",
            "2",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.slow
def test_info_embedded_model(capsys):
    assert main(["info", "smollm2-135m"]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "| layers | 30 |" in out
    assert "| d_ff | 1536 |" in out
    assert "| ffn neurons | 46,080 |" in out


def test_finetune_table2_and_multitask(tiny_folder, task_folders, tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "experiment: all\nseed: 0\n"
        "detect: {k: 20, attribution: {n_examples: 4}}\n"
        "deactivate: {n_test: 4}\n"
        "table2: {n_train: 4, n_test: 4,"
        " train: {lr: 0.01, epochs: 1, batch_size: 2, save_dtype: bfloat16}}\n"
        "multitask: {n_train: 4, train: {method: full, lr: 0.001, epochs: 1, batch_size: 2}}\n"
    )
    tasks = ",".join(str(t) for t in task_folders)
    out = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                "--config",
                str(cfg),
                "--model",
                str(tiny_folder),
                "--tasks",
                tasks,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for row in ("Zero-shot", "Train-Random", "Train-Task", "Deactivate-Task"):
        assert row in printed
    t2 = json.loads((out / "table2" / "table2.json").read_text())
    assert [r[0] for r in t2["rows"]] == ["Zero-shot", "Train-Random", "Train-Task"]
    assert t2["meta"]["config"]["train"]["method"] == "neurons"
    delta = json.loads(
        (out / "table2" / "runs" / "mood" / "task" / "delta" / "delta.json").read_text()
    )
    assert delta["dtype"] == "float32" and delta["stored_dtype"] == "bfloat16"
    for f in (
        "table2/train_matrix.png",
        "multitask/deactivate/table1.md",
        "multitask/detect/iou.png",
        "multitask/multitask_config.json",
    ):
        assert (out / f).is_file(), f


def test_finetune_rejects_unknown_setting(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("learning_rate: 1\n")
    assert main(["finetune", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: unknown key 'learning_rate'" in err and "Traceback" not in err


def test_demo_runs_all_three_stages(tiny_folder, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--model",
        str(tiny_folder),
        "--n-test",
        "4",
        "--n-detect",
        "4",
        "--n-train",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("Deactivate-Task", "Train-Task", "demo finished"):
        assert row in printed
    for f in ("detect/iou.png", "deactivate/table1.json", "table2/table2.json", "config.yaml"):
        assert (out / f).is_file(), f


def test_detect_takes_the_selection_and_its_options(tiny_folder, task_folders, tmp_path, capsys):
    tasks = ",".join(str(t) for t in task_folders)
    argv = ["detect", "-m", str(tiny_folder), "-t", tasks, "--n-examples", "2", "--k", "30"]
    out = tmp_path / "d"
    assert main([*argv, "--selection", "specific", "--general-m", "2", "--out", str(out)]) == 0
    selection = yaml.safe_load((out / "config.yaml").read_text())["detect"]["selection"]
    assert selection["method"] == "specific" and selection["m"] == 2
    assert (out / "general_neurons.safetensors").is_file()
    capsys.readouterr()
    bad = [*argv, "--selection", "topk", "--general-m", "2", "--out", str(tmp_path / "x")]
    assert main(bad) == 2  # an option of another selection is refused, before any work
    err = capsys.readouterr().err
    assert "unknown key 'detect.selection.m'" in err and not (tmp_path / "x").exists()
