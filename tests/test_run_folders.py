"""A run folder holds one run's settings; ``analyze`` combines only runs that belong together.

Through the command line (``main([...])``): a run into a folder of other settings is refused,
naming the keys, before the model loads (the ``max_length`` keys and the section of a stage that
checks its own folder once it is loaded), and leaves the folder byte-identical; a run of the same
settings is taken (a resumed sweep may lengthen its grid); ``--overwrite`` empties the folder
first. ``analyze sweep`` and ``analyze table5`` refuse runs of other models, tasks or settings,
and ``table5`` the same order twice. Every message here is in docs/bad-inputs.md ("Run folders
hold one run").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from taskneurons.cli import main
from taskneurons.cli_parser import stage_command_flags
from taskneurons.experiments import runner
from taskneurons.experiments.run_acceptance import listed, setting_changes
from taskneurons.experiments.stage import stages
from taskneurons.models.loading import load_model
from taskneurons.provenance import model_fingerprint

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

OVERWRITE = "pass --overwrite (overwrite: true) to empty it and start afresh"
OTHER = "the folder's vs now): rerun with its settings to resume it, choose another out, or "
TRAIN = {"lr": 0.01, "batch_size": 2}
CONTINUAL = {"methods": ["seqft"], "n_train": 4, "n_test": 4, "train": TRAIN, "single_train": TRAIN}
SWEEP = {
    "experiment": "sweep", "detect": {"k": 20, "attribution": {"n_examples": 4}},
    "deactivate": {"n_test": 4, "n_boot": 20, "n_permutations": 10},
    "sweep": {"k": [20], "selections": ["topk"]},
}  # fmt: skip


# -- helpers ------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) -> its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``taskneurons argv``."""
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def experiment(path: Path, model: Path, tasks, out: Path, **data) -> Path:
    """An experiment file at ``path`` of ``data`` on ``model`` and ``tasks`` into ``out``."""
    body = {"model": str(model), "tasks": [str(t) for t in tasks], "seed": 0, "out": str(out)}
    path.write_text(yaml.safe_dump({**body, **data}))
    return path


def other_weights(tiny_folder: Path, dest: Path) -> Path:
    """A model folder like ``tiny_folder`` with other weights (the same architecture)."""
    shutil.copytree(tiny_folder, dest)
    tiny_model("llama", seed=1).save_pretrained(dest)
    return dest


def weights(folder: Path) -> str:
    """The ``weights`` entry of the model fingerprint of the model in ``folder``."""
    return model_fingerprint(load_model(str(folder))[0])["weights"]


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: a refusal must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(runner, "load_model", refuse)


@pytest.fixture(scope="module")
def continual_runs(tmp_path_factory, tiny_folder, task_folders):
    """Finished continual runs of ``seqft``: ``order1`` (mood -> answer), ``order2`` (answer ->
    mood), ``weights2`` (answer -> mood on other weights), ``three`` (mood -> answer -> polar)."""
    root = tmp_path_factory.mktemp("continual")
    mood, answer = task_folders
    polar = root / "polar"
    shutil.copytree(mood, polar)
    info = json.loads((polar / "task.json").read_text())
    (polar / "task.json").write_text(json.dumps({**info, "id": "polar", "name": "polar"}))
    other = other_weights(tiny_folder, root / "other-model")
    runs = {
        "order1": (tiny_folder, [mood, answer]),
        "order2": (tiny_folder, [answer, mood]),
        "weights2": (other, [answer, mood]),
        "three": (tiny_folder, [mood, answer, polar]),
    }
    for name, (model, tasks) in runs.items():
        path = experiment(root / f"{name}.yaml", model, tasks, root / name,
                          experiment="continual", continual=CONTINUAL)  # fmt: skip
        assert main(["run", str(path)]) == 0
    return root


# -- the comparison --------------------------------------------------------------------------
def test_changes_name_the_keys_both_hold_and_a_grid_may_only_grow():
    held = {**{f"k{i}": i for i in range(10)}, "only_held": 1}
    now = {**{f"k{i}": i + 1 for i in range(10)}, "only_now": 2}
    changes = setting_changes(held, now)
    assert changes[:2] == ["k0: 0 vs 1", "k1: 1 vs 2"] and len(changes) == 10
    assert listed(changes).endswith("; k7: 7 vs 8; and 2 more")
    grid = {"grown": ["sweep.k"]}
    assert setting_changes({"sweep.k": [1.0]}, {"sweep.k": [1.0, 2.0]}, **grid) == []
    assert setting_changes({"sweep.k": [1.0, 2.0]}, {"sweep.k": [2.0]}, **grid) == [
        "sweep.k: [1.0, 2.0] vs [2.0]"
    ]
    assert setting_changes({"sweep.k": [1.0]}, {"sweep.k": [1.0, 2.0]}) == [
        "sweep.k: [1.0] vs [1.0, 2.0]"
    ]


def test_every_command_that_runs_stages_offers_overwrite():
    commands = [s.name for s in stages()] + ["finetune", "demo"]
    for command in commands:
        names = [u.flag.names[0] for u in stage_command_flags(command)]
        assert "--overwrite" in names, command


# -- a run into a folder of other settings ----------------------------------------------------
def test_detect_with_another_model_is_refused_before_it_loads_and_overwrite_starts_afresh(
    tiny_folder, task_folders, tmp_path, capsys, monkeypatch
):
    tasks = ",".join(str(t) for t in task_folders)
    out = tmp_path / "det"
    detect = ["detect", "--tasks", tasks, "--n-examples", "2", "--out", str(out)]
    assert main([*detect, "--model", str(tiny_folder)]) == 0
    before = snapshot(out)
    other = other_weights(tiny_folder, tmp_path / "other")
    with monkeypatch.context() as patch:
        patch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
        code, err = run_cli(capsys, [*detect, "--model", str(other)])
    assert code == 2
    assert err == (
        f"taskneurons detect: error: --out: {out} holds a run of other settings (model: "
        f"'{tiny_folder}' vs '{other}'; {OTHER}{OVERWRITE}\n"
    )
    assert snapshot(out) == before  # config.yaml still names the model its sets come from
    assert main(["run", str(out / "config.yaml")]) == 0  # the README's rerun recipe
    (out / "stale.txt").write_text("left by an earlier run")
    assert main([*detect, "--model", str(other), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists()
    record = json.loads((out / "run_settings.json").read_text())["settings"]
    assert record["model"] == str(other)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == str(other) and "overwrite" not in config


def test_detect_refuses_other_weights_once_loaded_and_writes_nothing(
    tiny_folder, task_folders, tmp_path, capsys
):
    model = tmp_path / "model"
    shutil.copytree(tiny_folder, model)
    tasks = ",".join(str(t) for t in task_folders)
    out = tmp_path / "det"
    detect = ["detect", "--model", str(model), "--tasks", tasks, "--n-examples", "2"]
    assert main([*detect, "--out", str(out)]) == 0
    before, old = snapshot(out), weights(model)
    tiny_model("llama", seed=1).save_pretrained(model)  # the same spec, other weights
    code, err = run_cli(capsys, [*detect, "--out", str(out)])
    assert code == 2
    assert err == (
        f"taskneurons detect: error: {out} already holds a detection with other settings "
        f"(model.weights: '{old}' vs '{weights(model)}'; earlier vs now); its sets would be mixed "
        "with the new ones: pass another --out (out: in an experiment file) or delete it\n"
    )
    assert snapshot(out) == before


def test_a_refused_run_creates_no_folder(tiny_folder, task_folders, tmp_path, capsys):
    tasks = ",".join(str(t) for t in task_folders)
    sets = tmp_path / "det"
    assert main(["detect", "--model", str(tiny_folder), "--tasks", tasks, "--n-examples", "2",
                 "--out", str(sets)]) == 0  # fmt: skip
    other = other_weights(tiny_folder, tmp_path / "other")
    fresh = tmp_path / "fresh"
    argv = ["deactivate", "--model", str(other), "--neurons", str(sets), "--tasks", tasks]
    code, err = run_cli(capsys, [*argv, "--n-test", "2", "--out", str(fresh)])
    assert code == 2 and "was made on another model" in err, err
    assert not fresh.exists()


def test_a_continual_folder_refuses_another_order_and_a_sweep(
    continual_runs, task_folders, tiny_folder, capsys, no_model_load
):
    out = continual_runs / "order1"
    before = snapshot(out)
    mood, answer = task_folders
    path = experiment(continual_runs / "reversed.yaml", tiny_folder, [answer, mood], out,
                      experiment="continual", continual=CONTINUAL)  # fmt: skip
    code, err = run_cli(capsys, ["run", str(path)])
    assert code == 2
    assert err == (
        f"taskneurons run: error: {path}: out: {out} holds a run of other settings (task_order: "
        f"['mood', 'answer'] vs ['answer', 'mood']; {OTHER}{OVERWRITE}\n"
    )
    path = experiment(continual_runs / "sweep.yaml", tiny_folder, [mood, answer], out, **SWEEP)
    code, err = run_cli(capsys, ["run", str(path)])
    assert code == 2
    assert err == (
        f"taskneurons run: error: {path}: out: {out} holds a run of other settings (stages: "
        f"['continual'] vs ['sweep']; {OTHER}{OVERWRITE}\n"
    )
    assert snapshot(out) == before


def test_a_sweep_folder_resumes_or_lengthens_its_grid_and_refuses_other_settings(
    tiny_folder, task_folders, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "sweep"
    path = experiment(tmp_path / "sweep.yaml", tiny_folder, task_folders, out, **SWEEP)
    assert main(["run", str(path)]) == 0
    before = snapshot(out)
    with monkeypatch.context() as patch:
        patch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
        code, err = run_cli(capsys, ["run", str(path), "--set", "deactivate.n_test=3"])
        assert code == 2
        assert err == (
            f"taskneurons run: error: {path}: out: {out} holds a run of other settings "
            f"(deactivate.n_test: 4 vs 3; {OTHER}{OVERWRITE}\n"
        )
        code, err = run_cli(capsys, ["run", str(path), "--set", "sweep.k=[20,40]"])
        assert code == 2  # a longer grid only when resuming
        assert f"(sweep.k: [20.0] vs [20.0, 40.0]; {OTHER}" in err
    assert snapshot(out) == before
    assert main(["run", str(path), "--set", "resume=true", "--set", "sweep.k=[20,40]"]) == 0
    record = json.loads((out / "run_settings.json").read_text())["settings"]
    assert record["sweep.k"] == [20.0, 40.0]
    assert (out / "topk-k20" / "evaluations.json").read_bytes() == before[
        "topk-k20/evaluations.json"
    ]
    assert (out / "topk-k40" / "specificity.json").is_file()


def test_max_length_is_compared_as_fitted_to_the_model(tiny_folder, task_folders, tmp_path, capsys):
    out = tmp_path / "sweep"
    path = experiment(tmp_path / "sweep.yaml", tiny_folder, task_folders, out, **SWEEP)
    assert main(["run", str(path)]) == 0  # max_length 512 fitted to the model's 64
    assert main(["run", str(out / "config.yaml")]) == 0  # which config.yaml names
    before = snapshot(out)
    code, err = run_cli(capsys, ["run", str(path), "--set", "prompt.max_length=32"])
    assert code == 2
    assert err == (
        f"taskneurons run: error: {path}: out: {out} holds a run of other settings "
        "(prompt.max_length: 64 vs 32; detect.attribution.prompt.max_length: 64 vs 32; "
        f"deactivate.eval.prompt.max_length: 64 vs 32; {OTHER}{OVERWRITE}\n"
    )
    assert snapshot(out) == before
    assert main(["run", str(path), "--set", "prompt.max_length=32", "--overwrite"]) == 0
    record = json.loads((out / "run_settings.json").read_text())["settings"]
    assert record["prompt.max_length"] == 32


def test_a_folder_without_a_record_is_refused_unless_overwritten(
    tiny_folder, task_folders, tmp_path, capsys, no_model_load
):
    out = tmp_path / "old"
    (out / "scores").mkdir(parents=True)
    (out / "table1.json").write_text("{}")
    (out / "config.yaml").write_text("experiment: deactivate\n")
    before = snapshot(out)
    tasks = ",".join(str(t) for t in task_folders)
    detect = ["detect", "--model", str(tiny_folder), "--tasks", tasks, "--n-examples", "2"]
    code, err = run_cli(capsys, [*detect, "--out", str(out)])
    assert code == 2
    assert err == (
        f"taskneurons detect: error: --out: {out} holds files (scores, table1.json) but no "
        "run_settings.json saying which settings made them (a run folder of an older "
        f"taskneurons, or not a run folder): choose another out, or {OVERWRITE}\n"
    )
    assert snapshot(out) == before


def test_overwrite_empties_a_folder_without_a_record(tiny_folder, task_folders, tmp_path):
    out = tmp_path / "old"
    (out / "scores").mkdir(parents=True)
    (out / "table1.json").write_text("{}")
    tasks = ",".join(str(t) for t in task_folders)
    argv = ["detect", "--model", str(tiny_folder), "--tasks", tasks, "--n-examples", "2"]
    assert main([*argv, "--out", str(out), "--overwrite"]) == 0
    assert not (out / "table1.json").exists() and not (out / "scores").exists()
    assert (out / "run_settings.json").is_file() and (
        out / "mood" / "neurons.safetensors"
    ).is_file()


def test_overwrite_never_empties_a_folder_holding_what_the_run_reads(
    tiny_folder, task_folders, tmp_path, capsys, no_model_load
):
    data = tmp_path / "data"
    for task in task_folders:
        shutil.copytree(task, data / task.name)
    before = snapshot(data)
    tasks = f"{data / 'mood'},{data / 'answer'}"
    argv = ["detect", "--model", str(tiny_folder), "--tasks", tasks, "--out", str(data)]
    code, err = run_cli(capsys, [*argv, "--overwrite"])
    assert code == 2
    assert err == (
        f"taskneurons detect: error: --out: will not empty {data}: it holds tasks[0] "
        f"({data / 'mood'}), which this run reads; choose another out\n"
    )
    assert snapshot(data) == before


# -- analyze: runs that belong together -------------------------------------------------------
def test_analyze_sweep_refuses_sweeps_of_other_models_or_tasks(
    tiny_folder, task_folders, tmp_path, capsys
):
    other = other_weights(tiny_folder, tmp_path / "other")
    polar = tmp_path / "polar"
    shutil.copytree(task_folders[0], polar)
    info = json.loads((polar / "task.json").read_text())
    (polar / "task.json").write_text(json.dumps({**info, "id": "polar", "name": "polar"}))
    runs = {"a": (tiny_folder, task_folders), "b": (other, task_folders),
            "c": (tiny_folder, [*task_folders, polar])}  # fmt: skip
    for name, (model, tasks) in runs.items():
        k = {"sweep": {**SWEEP["sweep"], "k": [40 if name == "b" else 20]}}
        path = experiment(tmp_path / f"{name}.yaml", model, tasks, tmp_path / name, **SWEEP | k)
        assert main(["run", str(path)]) == 0
    a, b, c = (tmp_path / name / f"topk-k{40 if name == 'b' else 20}" for name in "abc")
    grid = ["analyze", "sweep", "--out", str(tmp_path / "grid")]
    code, err = run_cli(capsys, [*grid, str(tmp_path / "a"), str(tmp_path / "b")])
    assert code == 2
    assert err == (
        f"taskneurons analyze: error: {b} cannot join the grid of {a}: they differ in "
        f"model.weights: '{weights(tiny_folder)}' vs '{weights(other)}' (the first vs the "
        "other); analyze such sweeps separately, or pass --mixed to lay them out together "
        "anyway\n"
    )
    code, err = run_cli(capsys, [*grid, str(tmp_path / "a"), str(tmp_path / "c")])
    assert code == 2 and err.startswith(f"taskneurons analyze: error: {c} cannot join the grid")
    assert "tasks: ['answer', 'mood'] vs ['answer', 'mood', 'polar']" in err
    assert not (tmp_path / "grid").exists()
    assert main([*grid, str(tmp_path / "a"), str(tmp_path / "b"), "--mixed"]) == 0


def test_analyze_table5_refuses_runs_of_other_experiments_and_an_order_twice(
    continual_runs, capsys
):
    order1, order2, weights2, three = (
        continual_runs / name for name in ("order1", "order2", "weights2", "three")
    )
    table = ["analyze", "table5", "--out", str(continual_runs / "table5")]
    copy = continual_runs / "copy" / "again"
    shutil.copytree(order1, copy)
    code, err = run_cli(capsys, [*table, str(order1), str(copy)])
    assert code == 2
    assert err == (
        f"taskneurons analyze: error: {order1} and {copy} hold the same task order (mood -> "
        "answer); Table 5 averages over different orders: give each order once\n"
    )
    code, err = run_cli(capsys, [*table, str(order1), str(weights2)])
    model = load_model(str(continual_runs / "other-model"))[0]
    assert code == 2
    assert err == (
        f"taskneurons analyze: error: {weights2} is not a run of the experiment of {order1}: "
        f"they differ in model.weights: '{_recorded_weights(order1)}' vs "
        f"'{model_fingerprint(model)['weights']}' (the first vs the other); Table 5 averages "
        "one experiment over task orders: give runs of one model, task set and settings, or "
        "pass --mixed to lay them out together anyway\n"
    )
    code, err = run_cli(capsys, [*table, str(order1), str(three)])
    assert code == 2 and err.startswith(f"taskneurons analyze: error: {three} is not a run of")
    assert "tasks: ['answer', 'mood'] vs ['answer', 'mood', 'polar']" in err
    assert not (continual_runs / "table5").exists()
    assert main([*table, str(order1), str(order2)]) == 0  # one experiment, two orders
    assert main([*table, str(order1), str(weights2), "--mixed"]) == 0


def _recorded_weights(run: Path) -> str:
    return json.loads((run / "seqft" / "continual_config.json").read_text())["model"]["weights"]
