"""``analyze temperature --choose-on-validation``: W-NCFT's temperature chosen on validation.

On a finished tiny suite (NCFT, W-NCFT given and inferred) whose tasks have train examples
beyond those trained on and the test inputs: the validation phase scores exactly ``n_val``
examples per task, none of them trained on or a test input (the oracle: the run's own
training record and the task files); with a one-temperature grid the test CL at the chosen T
is the CL the run recorded; the rule and the summary statistic by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from taskneurons.cli import main
from taskneurons.data.load import load_task
from taskneurons.data.tasks import examples_hash
from taskneurons.experiments.common import limited
from taskneurons.experiments.continual import temperature_choice as tc
from taskneurons.experiments.continual import temperature_sweep as ts

from wncft_suites import finished_wncft_suite

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"lr": 0.05, "batch_size": 2, "epochs": 4}
WORDS = ["red", "blue", "green", "black", "white", "pink", "gold", "grey", "tan", "teal"]


def _task(folder: Path, task_id: str, labels: list[str]) -> Path:
    folder.mkdir(parents=True)
    meta = {"id": task_id, "name": task_id, "kind": "classification", "labels": labels,
            "instruction": "Pick the label .", "metric": "accuracy"}  # fmt: skip
    (folder / "task.json").write_text(json.dumps(meta))
    pairs = [(f"Text : {task_id} {w} {n}", labels[n % 2]) for n, w in enumerate(WORDS)]
    rows = [json.dumps({"input": x, "output": y}) for x, y in pairs]
    (folder / "train.jsonl").write_text("\n".join(rows[:8]) + "\n")  # 4 trained, 4 validation
    (folder / "test.jsonl").write_text("\n".join(rows[8:] + rows[:2]) + "\n")  # 2 in train too
    return folder


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tiny_folder) -> Path:
    root = tmp_path_factory.mktemp("choice")
    tasks = [_task(root / "mood", "mood", ["good", "bad"]),
             _task(root / "answer", "answer", ["yes", "no"])]  # fmt: skip
    return finished_wncft_suite(root, tiny_folder, tasks, 4, TRAIN)


def test_pick_temperature_by_hand():
    means = {1.0: 60.0, 0.3: 63.9, 0.1: 64.0, 0.01: 64.5}
    assert tc.pick_temperature(means) == 0.01
    assert tc.pick_temperature(means, ties=0.5) == 0.1
    assert tc.pick_temperature(means, ties=0.6) == 0.3
    assert tc.pick_temperature({1.0: 50.0, 0.1: 50.0}) == 1.0  # a tie: the paper's T


def test_validation_examples_are_neither_trained_on_nor_test_inputs(suite, monkeypatch):
    scored: list[tuple[str, list[str]]] = []
    real = ts.score_task

    def spy(method, tokenizer, task, examples, *args, **kwargs):
        scored.append((task.id, [e.input for e in examples]))
        return real(method, tokenizer, task, examples, *args, **kwargs)

    monkeypatch.setattr(ts, "score_task", spy)
    choice = tc.TemperatureChoice(n_val=3, temperatures=[1.0, 0.01], modes=["given"])
    rows, val = tc.chosen_rows([suite / "wncft"], choice)
    record = json.loads((suite / "wncft" / "continual_config.json").read_text())
    assert len(scored) == 2 * 2 + 2  # validation: 2 temperatures x 2 tasks; test: T chosen
    for task_id in ("mood", "answer"):
        task = load_task(str(suite.parent / task_id), seed=0)
        trained = limited(task, 4, 0).train  # the run's: its recorded hash says so
        assert examples_hash(trained) == record["train_hash"][task_id]
        on_val = [ex for t, ex in scored[:4] if t == task_id]
        assert len(on_val) == 2 and all(len(ex) == 3 for ex in on_val)
        assert on_val[0] == on_val[1]  # the same validation examples at every temperature
        assert not set(on_val[0]) & {e.input for e in task.test}
        assert not set(on_val[0]) & {e.input for e in trained}
        on_test = [ex for t, ex in scored[4:] if t == task_id]
        assert len(on_test) == 1 and len(on_test[0]) == 4  # the run's n_test, on the test split
        assert set(on_test[0]) <= {e.input for e in task.test}
    assert len(val) == 2 * 2 and [r[1] for r in rows] == ["given"]


def test_the_runs_own_temperature_alone_gives_the_runs_recorded_cl(suite):
    choice = tc.TemperatureChoice(n_val=3, temperatures=[1.0], modes=["given", "inferred"])
    rows, _ = tc.chosen_rows([suite / "wncft"], choice)
    given, inferred = rows
    recorded = {m: json.loads((suite / m / "result.json").read_text())["metrics"]["cl"]
                for m in ("wncft", "wncft-inferred", "ncft")}  # fmt: skip
    assert given[2] == inferred[2] == 1.0
    assert given[4] == pytest.approx(recorded["wncft"], abs=1e-9) == given[5]
    assert inferred[4] == pytest.approx(recorded["wncft-inferred"], abs=1e-9) == inferred[5]
    assert given[6] == recorded["ncft"] and given[7] == pytest.approx(given[4] - given[6])


def test_difference_summary_by_hand():
    rows = [["a", "given", 0.1, 60.0, 62.0, 58.0, 60.0, 2.0, 1.0],
            ["b", "given", 0.1, 61.0, 64.0, 58.0, 60.0, 4.0, 1.0],
            ["c", "inferred", 0.1, 61.0, 64.0, 58.0, None, None, 1.0]]  # fmt: skip
    [(mode, n, mean, lo, hi, p)] = tc.difference_summary(rows)
    half = stats.t.ppf(0.975, 1) * math.sqrt(2.0 / 2 + 1.0)  # sd of (2, 4) is sqrt(2)
    assert (mode, n, mean) == ("given", 2, 3.0)
    assert (lo, hi) == (pytest.approx(3.0 - half), pytest.approx(3.0 + half))
    assert p == pytest.approx(0.5)  # both units positive: the floor at 2 units


def test_cli_chooses_writes_and_refuses_a_bad_n_val(suite, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["analyze", "temperature", str(suite / "wncft"), "--temperatures", "1", "0.01",
            "--modes", "given", "--choose-on-validation", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "| run | mode | chosen T |" in capsys.readouterr().out
    saved = json.loads((out / "wncft_temperature_choice.json").read_text())
    assert saved["rows"][0][2] in (1.0, 0.01) and saved["meta"]["n_val"] == 3
    val = json.loads((out / "wncft_temperature_validation.json").read_text())
    best = max(r[4] for r in val["rows"])  # one task per row: the rule picks by the mean
    assert len(val["rows"]) == 4 and best >= saved["rows"][0][3]

    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("taskneurons.models.loading.load_model", refuse)
    bad = ["analyze", "temperature", str(suite / "wncft"), "--choose-on-validation", "0"]
    assert main(bad) == 2
    assert "n_val >= 1" in capsys.readouterr().err
