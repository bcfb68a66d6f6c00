"""Experiment files, the one runner, and the pure analyses of experiment results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from taskneurons.cli import main
from taskneurons.config import ConfigError
from taskneurons.experiments.experiment_file import ExperimentFile, with_defaults
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.runner import run_file
from taskneurons.experiments.specificity.damage_summary import (
    deactivation_summary,
    diagonal_dominance,
)
from taskneurons.report.comparison import Comparison


def test_diagonal_dominance_and_summary():
    original = {"a": 50.0, "b": 75.0}
    matrix = {"a": {"a": 40.0, "b": 70.0}, "b": {"a": 35.0, "b": 60.0}}
    assert diagonal_dominance(matrix, original) == {"a": False, "b": True}
    # for a loss the largest rise counts: negate everything and the answer is the same
    neg = {i: {j: -v for j, v in row.items()} for i, row in matrix.items()}
    assert diagonal_dominance(neg, {j: -v for j, v in original.items()}, False) == {
        "a": False,
        "b": True,
    }
    rows = {
        "Original": original,
        "Deactivate-Random": {"a": 45.0, "b": 55.0},
        "Deactivate-Task": {"a": 40.0, "b": 60.0},
    }
    assert deactivation_summary(Comparison(["a", "b"], rows, matrix)) == (
        "own neurons off hurt more than random ones: 1 of 2 (a)\n"
        "largest drop of a column on its diagonal: 1 of 2 (b)"
    )


def test_comparison_change_matrix_and_average():
    c = Comparison(
        ["a", "b"],
        {"Zero-shot": {"a": 50.0, "b": 20.0}, "Train-Task": {"a": 80.0, "b": 40.0}},
        {"a": {"a": 80.0, "b": 25.0}, "b": {"a": 45.0, "b": 40.0}},
    )
    assert c.table_rows()[1] == ["Train-Task", 80.0, 40.0, 60.0]
    assert c.change() == [[30.0, 5.0], [-5.0, 20.0]]  # against the first row


def _write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "experiment: detect\ntasks: [sentiment]\nlearning_rate: 1\n",
            "unknown key 'learning_rate'",
        ),
        ("experiment: detect\ntasks: [sentiment]\ndetect: {kk: 5}\n", "unknown key 'detect.kk'"),
        (
            "experiment: detect\ntasks: [sentiment]\ndetect: {k: ten}\n",
            "detect.k: expected a number",
        ),
        (
            "experiment: table2\ntasks: [sentiment]\ntable2: {train: {lr: fast}}\n",
            "table2.train.lr: expected a number",
        ),
        ("experiment: detect\ntasks: sentiment\n", "tasks: expected a list"),
        ("experiment: detect\ntasks: [sentiment]\nseed: zero\n", "seed: expected a whole number"),
        ("experiment: detect\ntasks: [sentiment]\ndetect: {k: 0}\n", "detect: k must be"),
        ("experiment: dance\ntasks: [sentiment]\n", "unknown stage 'dance'"),
        (
            "experiment: [multitask, table2]\ntasks: [sentiment]\n",
            "changes the model, so it must come last",
        ),
        ("experiment: [continual, multitask]\ntasks: [sentiment]\n", "both change the model"),
        ("experiment: detect\n", "no tasks"),
        ("- a list\n", "a mapping of settings"),
        ("experiment: [detect\n", "invalid YAML"),
    ],
)
def test_bad_experiment_files_name_the_file_and_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        ExperimentFile.read(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_paths_are_named_before_the_model_loads(tmp_path, capsys):
    path = _write(
        tmp_path,
        "experiment: detect\nmodel: /no/such/model\ntasks: [sentiment, /no/such/task]\n"
        f"out: {tmp_path / 'run'}\n",
    )
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "exp.yaml: tasks[1]:" in err and "/no/such/task" in err
    assert "model" not in err  # the task was checked first
    path = _write(
        tmp_path,
        f"experiment: deactivate\ntasks: [sentiment]\nneurons: {tmp_path / 'none'}\n"
        f"out: {tmp_path / 'run'}\n",
    )
    assert main(["run", str(path)]) == 2
    assert "exp.yaml: neurons: neuron folder not found" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = _write(tmp_path, f"experiment: detect\ntasks: [sentiment]\nout: {blocker}\n")
    assert main(["run", str(path)]) == 2
    assert "out:" in capsys.readouterr().err


def test_set_overrides_and_defaults(tmp_path):
    path = _write(
        tmp_path,
        "experiment: table2\ntasks: [sentiment]\nseed: 3\nprompt: {max_length: 128}\n"
        "table2: {train: {lr: 0.01}}\n",
    )
    cfg = ExperimentFile.read(path, ["table2.train.lr=0.5", "detect.k=2.5", "seed=4"])
    assert cfg.table2.train.lr == 0.5 and cfg.detect.k == 2.5
    # the top-level seed and prompt are the defaults of every stage
    assert cfg.table2.train.seed == 4 and cfg.detect.attribution.seed == 4
    assert cfg.deactivate.random_seed == 4
    assert cfg.table2.train.prompt.max_length == 128 and cfg.table2.eval.prompt.max_length == 128
    # a multitask section's training keeps its own defaults (full fine-tuning)
    assert cfg.multitask.train.method == "full" and cfg.multitask.train.lr == 2e-5
    assert cfg.stages() == ["detect", "table2"]  # detection added: no `neurons` folder
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        ExperimentFile.read(path, ["table2.train.lr"])
    # a resolved config reads back as itself
    again = ExperimentFile.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


def test_with_defaults_keeps_what_a_section_sets():
    data = with_defaults({"seed": 7, "deactivate": {"seed": 1}, "detect": {"k": 3}})
    assert data["deactivate"]["seed"] == 1 and data["deactivate"]["random_seed"] == 7
    assert data["multitask"]["detect"]["k"] == 3  # the multitask stage detects the same way


def test_run_context_of_builds_an_experiment_file(task_folders, tmp_path):
    from taskneurons.data.load import load_task
    from taskneurons.experiments.specificity.detect_stage import DetectConfig

    tasks = [load_task(str(f)) for f in task_folders]
    ctx = RunContext.of(None, None, tasks, progress=False, detect=DetectConfig(k=5))
    assert ctx.config.tasks == [t.id for t in tasks] and ctx.tasks == tasks
    assert ctx.config.detect.k == 5 and ctx.config.deactivate.n_test == 200  # the default
    assert ctx.scores_source() is None and not ctx.progress and not ctx.config.resume
    ctx = RunContext.of(None, None, tasks, neurons=tmp_path, resume=True)
    assert ctx.scores_source() == str(tmp_path) and ctx.config.resume
    with pytest.raises(TypeError, match="detect: expected a DetectConfig"):
        RunContext.of(None, None, tasks, detect={"k": 5})
    with pytest.raises(ValueError, match="unknown stage 'detekt'"):
        RunContext.of(None, None, tasks, detekt=DetectConfig())


def test_run_writes_config_readme_and_typed_results(tiny_folder, task_folders, tmp_path):
    path = _write(
        tmp_path,
        "experiment: [detect, deactivate]\n"
        f"model: {tiny_folder}\ntasks: [{task_folders[0]}, {task_folders[1]}]\n"
        f"out: {tmp_path / 'run'}\n"
        "detect: {k: 20, attribution: {n_examples: 4}}\ndeactivate: {n_test: 4}\n",
    )
    printed = []
    run = run_file(path, ["deactivate.mode=parameters"], progress=False, echo=printed.append)
    out = tmp_path / "run"
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["deactivate"]["mode"] == "parameters" and resolved["detect"]["k"] == 20.0
    index = (out / "README.md").read_text()
    for name in (
        "config.yaml",
        "detect/",
        "deactivate/table1.{csv,json,md}",
        "deactivate/matrix.{csv,json,md,png}",
    ):
        assert f"`{name}`" in index, name
    det, deact = run.results["detect"], run.results["deactivate"]
    assert sorted(det.sets) == ["answer", "mood"]
    assert list(deact.table.rows) == [
        "Original",
        "Deactivate-Random",
        "Deactivate-Task",
        "Deactivate-Others",  # the union of the other tasks' sets, a specificity control
    ]
    table = json.loads((out / "deactivate" / "table1.json").read_text())
    assert table["rows"][2][1:3] == [
        deact.table.row("Deactivate-Task")[n] for n in ("mood", "answer")
    ]
    assert any("Deactivate-Task" in text for text in printed)
    # rerunning the resolved config gives the same numbers
    rerun = run_file(out / "config.yaml", [f"out={tmp_path / 'rerun'}"], progress=False, echo=None)
    assert rerun.results["deactivate"].table.rows == deact.table.rows


def test_finetune_command_equals_run_of_the_same_file(tiny_folder, task_folders, tmp_path):
    text = (
        "experiment: table2\nseed: 1\n"
        f"model: {tiny_folder}\ntasks: [{task_folders[0]}, {task_folders[1]}]\n"
        "detect: {k: 20, attribution: {n_examples: 4}}\n"
        "table2: {n_train: 4, n_test: 4, matrix: false, train: {lr: 0.01, batch_size: 2}}\n"
    )
    path = _write(tmp_path, text)
    assert main(["finetune", "--config", str(path), "--out", str(tmp_path / "a")]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / x / "table2" / "table2.json").read_text()) for x in "ab")
    assert a["rows"] == b["rows"]


def test_specific_selection_general_set_and_specificity_controls(
    tiny_folder, task_folders, tmp_path
):
    from taskneurons.data.load import load_task
    from taskneurons.experiments.specificity.deactivate_stage import DeactivateConfig
    from taskneurons.experiments.specificity.deactivation import (
        DeactivationInputs,
        deactivation_experiment,
    )
    from taskneurons.experiments.specificity.detect import detect_neurons
    from taskneurons.experiments.specificity.detect_stage import DetectConfig
    from taskneurons.models.loading import load_model

    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(f)) for f in task_folders]
    cfg = DetectConfig.from_dict(
        {"k": 30, "attribution": {"n_examples": 4}, "selection": {"method": "specific", "m": 2}}
    )
    det = detect_neurons(RunContext.of(model, tok, tasks, progress=False), cfg, tmp_path / "detect")
    general = det.general
    assert general is not None and (tmp_path / "detect" / "general_neurons.safetensors").is_file()
    for ns in det.sets.values():  # own top-k minus the neurons in both tasks' top-k
        assert len(ns & general) == 0 and ns.meta["selection"]["method"] == "specific"
    res = deactivation_experiment(
        RunContext.of(model, tok, tasks, progress=False),
        DeactivateConfig(n_test=4, n_boot=50, n_permutations=10),
        tmp_path / "deactivate",
        DeactivationInputs(sets=det.sets, general=general),
    )
    rows = list(res.table.rows)
    assert rows[:3] == ["Original", "Deactivate-Random", "Deactivate-Task"]
    assert "Deactivate-Others" in rows and "Deactivate-General" in rows
    stats = json.loads((tmp_path / "deactivate" / "specificity.json").read_text())
    assert set(stats) >= {"score", "nll", "names"}
    spec = res.specificity["nll"]
    assert len(spec.effects) == 2 and spec.ci is not None and 0 < spec.p_value <= 1
    # the effect matrix is the rise of the matrix over Original
    i, j = res.table.names
    rise = res.nll.matrix[i][j] - res.nll.row("Original")[j]
    assert spec.effects[0][1] == pytest.approx(rise)
    assert "specificity" in res.markdown()


def test_selection_sweep_scores_once_and_writes_every_cell(
    tiny_folder, task_folders, tmp_path, monkeypatch
):
    from taskneurons.data.load import load_task
    from taskneurons.experiments.specificity.deactivate_stage import DeactivateConfig
    from taskneurons.experiments.specificity.detect_stage import DetectConfig
    from taskneurons.experiments.specificity.sweep import selection_sweep
    from taskneurons.experiments.specificity.sweep_stage import SweepConfig
    from taskneurons.models.loading import load_model
    from taskneurons.neurons import scoring

    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(f)) for f in task_folders]
    calls = []
    real = scoring.relevance_scores
    monkeypatch.setattr(
        scoring, "relevance_scores", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    ctx = RunContext.of(
        model,
        tok,
        tasks,
        progress=False,
        detect=DetectConfig.from_dict(
            {"attribution": {"n_examples": 4}, "selection": {"method": "specific", "m": 2}}
        ),
        deactivate=DeactivateConfig(n_test=4, n_boot=20, n_permutations=10),
    )
    res = selection_sweep(
        ctx,
        SweepConfig(k=[10.0, 30.0], selections=["topk", "specific", "lape"]),
        tmp_path / "sweep",
    )
    assert len(calls) == 2  # each task scored once for all six cells
    assert [r[:2] for r in res.rows] == [
        ["topk", 10.0], ["topk", 30.0], ["specific", 10.0],
        ["specific", 30.0], ["lape", 10.0], ["lape", 30.0],
    ]  # fmt: skip
    top10, top30 = res.cells[("topk", 10.0)], res.cells[("topk", 30.0)]
    assert sum(map(len, top30.sets.values())) > sum(map(len, top10.sets.values()))
    # the unmodified model is evaluated once, for the first cell, and reused by the others
    first, last = res.cells[("topk", 10.0)].original, res.cells[("lape", 30.0)].original
    assert all(first[t] is last[t] for t in first)
    assert top10.table.row("Original") == res.cells[("lape", 30.0)].table.row("Original")
    for name in ("sweep.md", "sweep.json", "specificity_vs_k.png", "specificity_vs_k_nll.png"):
        assert (tmp_path / "sweep" / name).is_file(), name
    assert (tmp_path / "sweep" / "specific-k30" / "specificity.json").is_file()
    # every cell's folder holds its sets as a detect folder that neurons: can name
    from taskneurons.experiments.common import load_neuron_sets

    for method, k in (("topk", 10.0), ("specific", 30.0), ("lape", 10.0)):
        loaded = load_neuron_sets(tmp_path / "sweep" / f"{method}-k{k:g}", tasks, model)
        assert loaded == res.cells[(method, k)].sets


def test_resumed_sweep_reuses_scores_and_finished_cells(
    tiny_folder, task_folders, tmp_path, monkeypatch
):
    from taskneurons.data.load import load_task
    from taskneurons.experiments.specificity import deactivation
    from taskneurons.experiments.specificity.deactivate_stage import DeactivateConfig
    from taskneurons.experiments.specificity.detect_stage import DetectConfig
    from taskneurons.experiments.specificity.sweep import selection_sweep
    from taskneurons.experiments.specificity.sweep_grid import sweep_summary
    from taskneurons.experiments.specificity.sweep_stage import SweepConfig
    from taskneurons.models.loading import load_model
    from taskneurons.neurons import scoring

    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(f)) for f in task_folders]
    detect = DetectConfig.from_dict({"attribution": {"n_examples": 4}})
    deact = DeactivateConfig(n_test=4, n_boot=20, n_permutations=10)
    out = tmp_path / "sweep"

    def sweep(k, resume, deact=deact, scores_from=None, where=out):
        cfg = SweepConfig(k=k, selections=["topk", "specific"])
        ctx = RunContext.of(
            model, tok, tasks, False, neurons=scores_from, resume=resume, detect=detect,
            deactivate=deact,
        )  # fmt: skip
        return selection_sweep(ctx, cfg, where)

    first = sweep([10.0], resume=False)
    scored, evaluated = [], []
    real_scores, real_eval = scoring.relevance_scores, deactivation.evaluate
    monkeypatch.setattr(
        scoring, "relevance_scores", lambda *a, **k: scored.append(1) or real_scores(*a, **k)
    )
    monkeypatch.setattr(
        deactivation, "evaluate", lambda *a, **k: evaluated.append(1) or real_eval(*a, **k)
    )
    again = sweep([10.0, 30.0], resume=True)
    assert scored == []  # the saved scores are used
    # only the two new cells are evaluated: 2 random + 2x2 matrix + 2 others (+ 2 general)
    assert len(evaluated) == 8 + 10
    for cell in (("topk", 10.0), ("specific", 10.0)):
        assert again.cells[cell].table.rows == first.cells[cell].table.rows
        assert again.cells[cell].specificity["nll"] == first.cells[cell].specificity["nll"]
    assert again.rows[0] == first.rows[0] and len(again.rows) == 4
    # another folder takes the scores of this one and scores nothing
    sweep([30.0], resume=False, scores_from=out, where=tmp_path / "other")
    assert scored == []
    # analyze sweep lays both folders out as one grid; a cell in both with equal statistics
    # is taken once, with different ones it is an error
    assert (
        main(["analyze", "sweep", str(out), str(tmp_path / "other"), "--out", str(tmp_path / "g")])
        == 0
    )
    grid = json.loads((tmp_path / "g" / "sweep.json").read_text())
    assert grid["rows"] == json.loads(json.dumps(again.rows))
    assert (tmp_path / "g" / "specificity_vs_k_nll.png").is_file()
    spec_file = tmp_path / "other" / "topk-k30" / "specificity.json"
    spec = json.loads(spec_file.read_text())
    spec["nll"]["statistic"] += 1.0
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="differs between"):
        sweep_summary([out, tmp_path / "other"], tmp_path / "g")
    with pytest.raises(ValueError, match="other config"):
        sweep([10.0], resume=True, deact=DeactivateConfig(n_test=3, n_boot=20))
    detect = DetectConfig.from_dict({"attribution": {"n_examples": 3}})
    with pytest.raises(ValueError, match="other attribution settings"):
        sweep([10.0], resume=True)


def test_runner_runs_the_sweep_and_continual_stages(tiny_folder, task_folders, tmp_path):
    tasks = f"[{task_folders[0]}, {task_folders[1]}]"
    sweep = _write(
        tmp_path,
        f"experiment: sweep\nmodel: {tiny_folder}\ntasks: {tasks}\nout: {tmp_path / 's'}\n"
        "detect: {attribution: {n_examples: 4}}\n"
        "deactivate: {n_test: 4, n_boot: 20, n_permutations: 10}\n"
        "sweep: {k: [20], selections: [topk, specific]}\n",
    )
    run = run_file(sweep, progress=False, echo=None)
    assert [r[:2] for r in run.results["sweep"].rows] == [["topk", 20.0], ["specific", 20.0]]
    assert "`sweep.{csv,json,md}`" in (tmp_path / "s" / "README.md").read_text()
    # a second sweep takes the first one's scores (neurons:) and resumes in its own folder
    over = [f"neurons={tmp_path / 's'}", f"out={tmp_path / 's2'}", "resume=true"]
    run = run_file(sweep, over, progress=False, echo=None)
    record = json.loads((tmp_path / "s2" / "sweep_config.json").read_text())["scores"]
    assert {v["origin"] for v in record.values()} == {"loaded"}
    assert run.results["sweep"].rows == run_file(sweep, over, False, None).results["sweep"].rows
    cl = tmp_path / "cl.yaml"
    cl.write_text(
        f"experiment: continual\nmodel: {tiny_folder}\ntasks: {tasks}\nout: {tmp_path / 'c'}\n"
        "continual:\n  methods: [seqft, ncft]\n  n_train: 4\n  n_test: 4\n"
        "  train: {lr: 0.01, batch_size: 2}\n  single_train: {lr: 0.01, batch_size: 2}\n"
        "  method: {k: 20, attribution: {n_examples: 4}}\n"
    )
    run = run_file(cl, progress=False, echo=None)
    suite = run.results["continual"]
    assert [r[0] for r in suite.rows()] == ["seqft", "ncft"]
    for name in ("table5.md", "forgetting.png", "seqft/matrix.json", "ncft/metrics.json"):
        assert (tmp_path / "c" / name).is_file(), name


def test_continual_command_runs_one_method(tiny_folder, task_folders, tmp_path, capsys):
    out = tmp_path / "cl"
    argv = ["continual", "--model", str(tiny_folder), "--tasks", ",".join(map(str, task_folders))]
    argv += ["--method", "wncft", "--k", "20", "--n-train", "4", "--n-test", "4"]
    argv += ["--batch-size", "2", "--lr", "0.01", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| wncft |" in printed and "CL" in printed
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["continual"]["methods"] == ["wncft"]
    assert resolved["continual"]["method"]["k"] == 20.0
    assert (out / "wncft" / "matrix.json").is_file() and (out / "table5.md").is_file()
    # Table 5 over orders reads the finished run back: its CL, BWT and FG_N, and a missing run
    suite = json.loads((out / "suite.json").read_text())
    table = tmp_path / "t5"
    assert main(["analyze", "table5", str(out), "--out", str(table)]) == 0
    saved = json.loads((table / "table5_orders.json").read_text())
    header, row = suite["header"], suite["rows"][0]
    assert saved["rows"][0][:2] == ["wncft", row[header.index("CL")]]
    assert saved["rows"][0][-2] == row[header.index("BWT")]
    assert saved["meta"]["runs"][0]["order"] == header[1 : header.index("CL")]
    capsys.readouterr()
    assert main(["analyze", "table5", str(tmp_path / "nothing")]) == 2
    assert "no suite.json" in capsys.readouterr().err


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_experiment_file_of_the_repo_is_valid(path, monkeypatch):
    from taskneurons.experiments.experiment_file import read_mapping
    from taskneurons.experiments.seed_repeats import file_configs

    monkeypatch.chdir(REPO)  # the files name ../shared/data relative to the repository root
    for config in file_configs(read_mapping(path), str(path)):  # one per seed of ``seeds``
        assert config.stages()


def test_runner_runs_the_budget_and_crosstrain_stages(tiny_folder, task_folders, tmp_path):
    tasks = f"[{task_folders[0]}, {task_folders[1]}]"
    path = _write(
        tmp_path,
        f"experiment: [detect, crosstrain, budget]\nmodel: {tiny_folder}\ntasks: {tasks}\n"
        f"out: {tmp_path / 'r'}\n"
        "detect: {k: 20, attribution: {n_examples: 4}}\n"
        "crosstrain: {n_train: 4, n_test: 4, n_boot: 10, train: {batch_size: 2}}\n"
        "budget: {optimizers: [sgd], lrs: [0.1], steps: [1, 2], k: [20], seeds: [0],\n"
        "         n_train: 4, n_test: 4, n_boot: 10, train: {batch_size: 2}}\n",
    )
    run = run_file(path, progress=False, echo=None)
    assert len(run.results["budget"].rows()) == 2 * 2  # two tasks x two scored steps
    assert run.results["crosstrain"].specificity.readout == "score"
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "`budget/budget.{csv,json,md}`" in readme and "`crosstrain/cross_gain." in readme
