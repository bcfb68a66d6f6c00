"""Fair training values: the validation split, the rule, the frozen choice across orders."""

from __future__ import annotations

import json

import pytest

from taskneurons.data.tasks import Example, Task
from taskneurons.data.validation import validation_split
from taskneurons.experiments.common import limited
from taskneurons.experiments.continual.continual_stage import ContinualConfig, ContinualSuiteConfig
from taskneurons.experiments.continual.method_run import order_tasks, scored_examples
from taskneurons.experiments.continual.suite import continual_suite
from taskneurons.experiments.continual.tune_config import TuneConfig, candidates, choose
from taskneurons.experiments.run_context import RunContext
from test_continual import EVAL, TRAIN

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(task_id: str, words: list[str]) -> Task:
    """24 train examples (two of them repeat a test input) and 6 test examples, two labels."""
    train = [Example(f"{w} number {i}", "yes" if i % 2 else "no") for w in words for i in range(12)]
    test = [Example(f"{words[0]} other {i}", "yes" if i % 2 else "no") for i in range(4)]
    test += [Example(train[3].input, "yes"), Example(train[10].input, "yes")]  # leaked texts
    return Task(id=task_id, kind="classification", instruction="Answer", labels=["yes", "no"],
                metric="accuracy", train=train, test=test)  # fmt: skip


def test_validation_split_is_disjoint_from_training_and_test():
    tasks = [_task("a", ["cat", "dog"]), _task("b", ["red", "blue"])]
    cfg = ContinualConfig(n_train=8, n_val=12, score_on="validation", eval=EVAL)
    whole = order_tasks(tasks, None)
    ordered = [limited(t, cfg.n_train, cfg.seed) for t in whole]
    val = scored_examples(cfg, whole, ordered)
    for w, o in zip(whole, ordered, strict=True):
        inputs = [e.input for e in val[o.id]]
        assert len(inputs) == len(set(inputs)) == 12
        assert not set(inputs) & {e.input for e in o.train}  # not trained on
        assert not set(inputs) & {e.input for e in w.test}  # not a test text (2 leaked ones)
        assert set(inputs) <= {e.input for e in w.train}  # from the train split
        assert sorted(e.output for e in val[o.id]) == ["no"] * 6 + ["yes"] * 6  # stratified
    # 24 train - 8 used - the leaked texts not used: at most 16 are left
    with pytest.raises(ValueError, match="validation examples asked for"):
        validation_split(whole[0], ordered[0].train, 17)
    test = scored_examples(cfg.replace(score_on="test", n_test=4), whole, ordered)
    assert len(test["a"]) == 4 and set(test["a"]) <= set(whole[0].test)  # the test split


def test_rule_picks_by_hand():
    def row(lr, r, score):
        return {"values": {"lr": lr, "lora_r": r}, "score": score}

    table = [
        row(1e-5, 4, 50.0),
        row(1e-5, 8, 55.0),
        row(1e-4, 4, 61.0),
        row(1e-4, 8, 61.0),
        row(1e-3, 4, 61.2),
        row(1e-3, 8, float("nan")),
    ]
    assert choose(table) == {"lr": 1e-3, "lora_r": 4}  # the best score
    assert choose(table, ties=0.5) == {"lr": 1e-4, "lora_r": 4}  # tie: smaller lr, then rank
    assert choose(table[:4]) == {"lr": 1e-4, "lora_r": 4}  # exact tie: smaller rank
    assert choose([row(1e-3, 8, float("nan")), row(1e-2, 8, 0.0)]) == {"lr": 1e-2, "lora_r": 8}
    tune = TuneConfig(grid={"lr": [1e-4, 1e-3], "lora_r": [4, 8]})
    assert len(candidates(tune, "seqlora")) == 4 and len(candidates(tune, "ncft")) == 2
    with pytest.raises(ValueError, match="not a training key"):
        TuneConfig(grid={"learning_rate": [1e-3]})
    tasks = [_task("a", ["cat", "dog"]), _task("b", ["red", "blue"])]
    suite = ContinualSuiteConfig(methods=["seqft"], n_train=8, tune=TuneConfig(n_val=16))
    suite.check_tasks(tasks)  # 24 - 8 = 16 left: enough
    with pytest.raises(ValueError, match=r"tune.n_val: task 'a' has 24 train examples"):
        suite.replace(tune=TuneConfig(n_val=17)).check_tasks(tasks)


def test_choice_is_made_on_the_first_order_and_frozen(tok, tmp_path):
    tasks = [_task("a", ["cat", "dog"]), _task("b", ["red", "blue"])]
    choice = tmp_path / "lr" / "lr_choice.json"
    tune = TuneConfig(grid={"lr": [1e-3, 1e-2]}, order=["a", "b"], n_val=6, choice_file=str(choice))
    fields = dict(train=TRAIN, single_train=TRAIN.replace(method="full"), eval=EVAL, n_train=8)
    suite = ContinualSuiteConfig(methods=["seqft"], order=["b", "a"], n_test=4, tune=tune, **fields)
    ctx = RunContext.of(tiny_model("llama"), tok, tasks, progress=False)
    res = continual_suite(ctx, suite, tmp_path / "order2")
    saved = json.loads(choice.read_text())["methods"]["seqft"]
    scores = {row["values"]["lr"]: row["score"] for row in saved["rows"]}
    assert set(scores) == {1e-3, 1e-2} and saved["record"]["order"] == ["a", "b"]
    best = choose(saved["rows"])
    assert saved["choice"] == best
    assert res.results["seqft"].meta["config"]["train"]["lr"] == best["lr"]  # frozen choice used
    assert (tmp_path / "lr" / "lr_choice.md").is_file()
    mtime = choice.stat().st_mtime_ns
    other = suite.replace(order=["a", "b"])  # another order: reads the choice, tunes nothing
    again = continual_suite(RunContext.of(tiny_model("llama"), tok, tasks, progress=False),
                            other, tmp_path / "order1")  # fmt: skip
    assert choice.stat().st_mtime_ns == mtime
    assert again.results["seqft"].meta["config"]["train"]["lr"] == best["lr"]
    changed = suite.replace(n_train=6)
    with pytest.raises(ValueError, match="chosen with other settings"):
        continual_suite(RunContext.of(tiny_model("llama"), tok, tasks, progress=False),
                        changed, tmp_path / "order3")  # fmt: skip


def test_a_grid_and_suite_resume_from_their_result_files_alone(tok, tmp_path, monkeypatch):
    """What ``results/`` keeps between machines: every run's small result files, no
    checkpoint, and (here) no choice file yet. Resuming trains nothing and makes the same
    choice and the same rows."""
    import shutil

    from taskneurons.continual.strategies.seqft import SeqFT

    tasks = [_task("a", ["cat", "dog"]), _task("b", ["red", "blue"])]
    choice = tmp_path / "lr" / "lr_choice.json"
    tune = TuneConfig(grid={"lr": [1e-3, 1e-2]}, n_val=6, choice_file=str(choice))
    fields = dict(train=TRAIN, single_train=TRAIN.replace(method="full"), eval=EVAL, n_train=8)
    suite = ContinualSuiteConfig(methods=["seqft"], n_test=4, seeds=[0, 1], tune=tune, **fields)
    first = continual_suite(
        RunContext.of(tiny_model("llama"), tok, tasks, progress=False), suite, tmp_path / "o"
    )
    saved = json.loads(choice.read_text())
    choice.unlink()
    for folder in list(tmp_path.rglob("checkpoint")):
        shutil.rmtree(folder)
    trained = []
    real = SeqFT.train_task
    monkeypatch.setattr(SeqFT, "train_task", lambda *a, **k: trained.append(1) or real(*a, **k))
    ctx = RunContext.of(tiny_model("llama"), tok, tasks, progress=False, resume=True)
    again = continual_suite(ctx, suite, tmp_path / "o")
    assert trained == []
    assert json.loads(choice.read_text())["methods"] == saved["methods"]
    assert again.rows() == first.rows()


def test_every_method_is_recorded_with_the_base_model_it_was_tuned_on(tok, tmp_path):
    """A method tuned after another (whose last candidate left the model trained, adapters
    attached) records the base model's identity, so a later run on a fresh model reads the
    choice back instead of refusing it."""
    from taskneurons.provenance import model_fingerprint
    from taskneurons.store.settings import model_identity

    tasks = [_task("a", ["cat", "dog"]), _task("b", ["red", "blue"])]
    choice = tmp_path / "lr" / "lr_choice.json"
    tune = TuneConfig(grid={"lr": [1e-2]}, order=["a", "b"], n_val=6, choice_file=str(choice))
    fields = dict(train=TRAIN, single_train=TRAIN.replace(method="full"), eval=EVAL, n_train=8)
    methods = ["seqlora", "seqft", "olora"]
    suite = ContinualSuiteConfig(methods=methods, n_test=4, tune=tune, **fields)
    base = model_identity(model_fingerprint(tiny_model("llama")))
    continual_suite(RunContext.of(tiny_model("llama"), tok, tasks, progress=False), suite,
                    tmp_path / "o1")  # fmt: skip
    saved = json.loads(choice.read_text())["methods"]
    assert {label: saved[label]["record"]["model"] for label in methods} == dict.fromkeys(
        methods, base
    )
    mtime = choice.stat().st_mtime_ns
    other = suite.replace(order=["b", "a"])
    continual_suite(RunContext.of(tiny_model("llama"), tok, tasks, progress=False), other,
                    tmp_path / "o2")  # fmt: skip
    assert choice.stat().st_mtime_ns == mtime


def test_tune_only_runs_the_grid_and_nothing_on_the_test_split(tok, tmp_path, monkeypatch):
    """``tune.only``: every candidate runs on the validation split, the choice is written, no
    run touches the test split (no test example is scored); the stage's suite is each method's
    chosen candidate; a later run without ``only`` reads the same choice back."""
    from taskneurons.experiments.continual import method_run
    from taskneurons.experiments.continual.seeds import run_continual

    tasks = [_task("a", ["cat", "dog"]), _task("b", ["red", "blue"])]
    choice = tmp_path / "lr" / "lr_choice.json"
    tune = TuneConfig(grid={"lr": [1e-3, 1e-2]}, n_val=6, choice_file=str(choice), only=True)
    fields = dict(train=TRAIN, single_train=TRAIN.replace(method="full"), eval=EVAL, n_train=8)
    suite = ContinualSuiteConfig(methods=["seqft", "ncft"], n_test=4, seeds=[0, 1], tune=tune,
                                 **fields)  # fmt: skip
    scored = []
    real = method_run.scored_examples
    monkeypatch.setattr(method_run, "scored_examples",
                        lambda cfg, *a: scored.append(cfg.score_on) or real(cfg, *a))  # fmt: skip
    ctx = RunContext.of(tiny_model("llama"), tok, tasks, progress=False)
    res = run_continual(ctx, suite, tmp_path / "o")
    assert scored and set(scored) == {"validation"}  # 2 methods x 2 candidates, no test run
    saved = json.loads(choice.read_text())["methods"]
    assert set(res.results) == {"seqft", "ncft"}
    for label in ("seqft", "ncft"):  # the suite's row: the chosen candidate's validation CL
        rows, pick = saved[label]["rows"], saved[label]["choice"]
        assert pick == choose(rows)
        chosen_score = next(r["score"] for r in rows if r["values"] == pick)
        assert res.results[label].metrics["cl"] == pytest.approx(chosen_score)
    assert not (tmp_path / "o" / "seed0").exists()
    assert "scored on the validation split" in (tmp_path / "o" / "table5.md").read_text()
    scored.clear()
    full = suite.replace(tune=tune.replace(only=False), seeds=None)
    again = run_continual(RunContext.of(tiny_model("llama"), tok, tasks, progress=False), full,
                          tmp_path / "full")  # fmt: skip
    assert set(scored) == {"test"}  # the choice read back: no candidate runs again
    for label in ("seqft", "ncft"):
        lr = again.results[label].meta["config"]["train"]["lr"]
        assert lr == saved[label]["choice"]["lr"]


def test_lr_grid_forgetting_script_reads_each_candidate_run(tok, tmp_path):
    """``scripts/lr_grid_forgetting.py``: per candidate, CL as the choice file has it, BWT and
    its half-width worked out here from the candidate's ``matrix.json``."""
    import importlib.util
    import math
    from pathlib import Path

    tasks = [_task("a", ["cat", "dog"]), _task("b", ["red", "blue"])]
    choice = tmp_path / "lr" / "lr_choice.json"
    tune = TuneConfig(grid={"lr": [1e-3, 3e-2]}, n_val=6, choice_file=str(choice), only=True)
    fields = dict(train=TRAIN, single_train=TRAIN.replace(method="full"), eval=EVAL, n_train=8)
    suite = ContinualSuiteConfig(methods=["seqft"], n_test=4, tune=tune, **fields)
    continual_suite(RunContext.of(tiny_model("llama"), tok, tasks, progress=False), suite,
                    tmp_path / "o")  # fmt: skip
    path = Path(__file__).resolve().parents[1] / "scripts" / "lr_grid_forgetting.py"
    spec = importlib.util.spec_from_file_location("lr_grid_forgetting", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    saved = json.loads(choice.read_text())["methods"]["seqft"]
    got = script.rows(choice)
    assert [r[:3] for r in got] == [["seqft", "lr", "lr=0.001"], ["seqft", "lr", "lr=0.03"]]
    for row, cand in zip(got, saved["rows"], strict=True):
        tag = f"lr={cand['values']['lr']}"
        a = json.loads((tmp_path / "lr" / "tune" / "seqft" / tag / "matrix.json").read_text())
        a = [r[1:] for r in a["rows"]]  # [task, stage] accuracies, 2 tasks
        assert row[3] == pytest.approx(cand["score"])
        assert row[4] == pytest.approx(a[0][1] - a[0][0])  # BWT: the first task's change
        var = (a[0][1] * (100 - a[0][1]) + a[0][0] * (100 - a[0][0])) / 6  # n_val = 6
        assert row[5] == pytest.approx(1.96 * math.sqrt(var))
        assert row[6] == ("yes" if cand["values"] == saved["choice"] else "")


def test_lr_grid_forgetting_row_by_hand(tmp_path):
    """A candidate whose first task drops from 80 to 60 % on 50 validation examples."""
    import importlib.util
    import math
    from pathlib import Path

    import numpy as np

    from taskneurons.experiments.continual.continual_result import ContinualResult

    folder = tmp_path / "grid" / "tune" / "ncft" / "lr=0.001"
    ContinualResult(method="ncft", mode=None, order=["a", "b"],
                    matrix=np.array([[80.0, 60.0], [np.nan, 70.0]]), single={"a": 80.0, "b": 70.0},
                    zero_shot={"a": 50.0, "b": 50.0},
                    metrics={"cl": 0.0, "bwt": 0.0, "fwt": 0.0, "forgetting": [np.nan, 0.0]},
                    stages=[], stored_bytes_per_task=0, resumed_from=None,
                    out_dir=folder, meta={"config": {"n_val": 50}}).save()  # fmt: skip
    path = Path(__file__).resolve().parents[1] / "scripts" / "lr_grid_forgetting.py"
    spec = importlib.util.spec_from_file_location("lr_grid_forgetting", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    row = script.candidate_row(folder, "ncft", {"lr": 0.001}, chosen=True)
    # from the matrix (not the stored metrics): CL (60 + 70) / 2; BWT 60 - 80; variance
    # (60 * 40 + 80 * 20) / 50 = 80
    assert row == ["ncft", "grid", "lr=0.001", 65.0, -20.0, pytest.approx(1.96 * math.sqrt(80)),
                   "yes"]  # fmt: skip
    # the first task from the stage that learns it: 80 then 60; the second only at stage 2
    assert script.task_scores(folder, "a") == "80.0 → 60.0"
    assert script.task_scores(folder, "b") == "70.0"
    with pytest.raises(ValueError, match="'c' is not in"):
        script.task_scores(folder, "c")
