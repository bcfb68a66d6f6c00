"""``analyze temperature``: W-NCFT's final model scored again at other softmax temperatures.

On a finished suite (tiny llama; NCFT, W-NCFT given and inferred) run through the command
line: at the run's own temperature each mode repeats the final column its run recorded
(read from ``matrix.json``); at a low temperature the own-task weight is the softmax of the
checkpoint's cosines computed here by hand; the model is the base model again afterwards
(bit for bit); NCFT's mean is the NCFT run's CL; bad input is refused before any model loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from taskneurons.cli import main
from taskneurons.continual.stage_checkpoint import read_checkpoint
from taskneurons.data.load import load_task
from taskneurons.experiments.continual import temperature_sweep as ts
from taskneurons.experiments.continual.table5 import ContinualRunError
from taskneurons.models.loading import load_model

from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer
from wncft_suites import finished_wncft_suite

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"lr": 0.05, "batch_size": 2, "epochs": 8}  # enough that the scores move with T


@pytest.fixture(scope="module")
def suite(tmp_path_factory, tiny_folder, task_folders) -> Path:
    root = tmp_path_factory.mktemp("temperature")
    return finished_wncft_suite(root, tiny_folder, list(task_folders), 6, TRAIN)


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: a refusal must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("taskneurons.models.loading.load_model", refuse)


def _final(folder: Path) -> list[float]:
    rows = json.loads((folder / "matrix.json").read_text())["rows"]
    return [row[-1] for row in rows]  # each row: task, a[i, 0], ..., a[i, N-1]


def _rows(rows, temperature, mode, folder):
    return [r for r in rows if r[:3] == [folder.as_posix(), temperature, mode]]


def test_the_runs_own_temperature_repeats_each_modes_final_scores(suite):
    wncft = suite / "wncft"
    rows = ts.sweep_runs([wncft], ts.TemperatureSweep([1.0, 0.01]))
    assert [r[3] for r in _rows(rows, 1.0, "given", wncft)] == ["mood", "answer"]
    given = _rows(rows, 1.0, "given", wncft)
    assert [r[4] for r in given] == _final(wncft) == [r[5] for r in given]
    inferred = _rows(rows, 1.0, "inferred", wncft)  # one training serves both modes
    assert [r[4] for r in inferred] == _final(suite / "wncft-inferred")
    assert all(r[5] is None for r in rows if r[1] != 1.0 or r[2] != "given")
    assert [r[4] for r in _rows(rows, 0.01, "given", wncft)] != [r[4] for r in given]
    assert len(rows) == 2 * 2 * 2


def test_own_weight_is_the_softmax_of_the_checkpoints_cosines(suite):
    wncft = suite / "wncft"
    state = read_checkpoint(wncft / "checkpoint").state
    vectors = torch.stack([state["vector0"], state["vector1"]]).double()  # [tasks, d]
    cos = torch.nn.functional.cosine_similarity(vectors[:, None], vectors[None], dim=-1)
    rows = ts.sweep_runs([wncft], ts.TemperatureSweep([1.0, 0.01], modes=["given"]))
    for temperature in (1.0, 0.01):
        expected = torch.softmax(cos / temperature, dim=1).diagonal().tolist()
        got = [r[7] for r in _rows(rows, temperature, "given", wncft)]
        assert got == pytest.approx(expected, abs=1e-9)
        assert all(r[6] == 100.0 for r in _rows(rows, temperature, "given", wncft))


def test_the_model_is_the_base_model_again_afterwards(suite, tiny_folder, task_folders):
    model, tok = load_model(str(tiny_folder))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tasks = [load_task(str(f), seed=0) for f in task_folders]
    ts.temperature_rows(model, tok, tasks, suite / "wncft", ts.TemperatureSweep([0.05]))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_another_model_is_refused(suite, task_folders):
    tasks = [load_task(str(f), seed=0) for f in task_folders]
    with pytest.raises(ContinualRunError, match="another base model"):
        ts.temperature_rows(tiny_model("llama", seed=1), tiny_tokenizer(), tasks,
                            suite / "wncft", ts.TemperatureSweep([1.0]))  # fmt: skip


@pytest.mark.parametrize(
    "folder,sweep,match",
    [
        ("ncft", {}, "a run of 'ncft'; temperatures apply to W-NCFT"),
        ("nowhere", {}, "no finished continual run"),
        ("wncft", {"temperatures": [1.0, 0.0]}, "temperatures must be > 0"),
        ("wncft", {"modes": ["both"]}, "modes must be among"),
    ],
)
def test_bad_input_is_refused_before_any_model_loads(suite, no_model_load, folder, sweep, match):
    with pytest.raises(ValueError, match=match):
        ts.sweep_runs([suite / folder], ts.TemperatureSweep(**sweep))


def test_a_run_without_its_last_checkpoint_is_named(suite, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(suite, copy, ignore=shutil.ignore_patterns("checkpoint"))
    with pytest.raises(ContinualRunError, match="no checkpoint of the last stage"):
        ts.sweep_runs([copy / "wncft"], ts.TemperatureSweep([1.0]))


def test_summary_means_by_hand():
    rows = [["r", 0.1, "given", "a", 60.0, None, 100.0, 0.9],
            ["r", 0.1, "given", "b", 71.0, None, 50.0, 0.6],
            ["r", 1.0, "given", "a", 50.0, 50.0, 100.0, 0.5],
            ["r", 1.0, "given", "b", 40.0, 30.0, 0.0, 0.4]]  # fmt: skip
    assert ts.summary_rows(rows) == [
        ["r", 0.1, "given", 65.5, None, None, 75.0, 0.75],
        ["r", 1.0, "given", 45.0, 40.0, None, 50.0, 0.45],
    ]


def test_analyze_temperature_prints_and_writes_with_ncfts_mean(suite, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["analyze", "temperature", str(suite / "wncft"), "--temperatures", "1", "0.1",
            "--modes", "given", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "| run | temperature | mode | mean score |" in capsys.readouterr().out
    summary = json.loads((out / "wncft_temperature.json").read_text())
    ncft_cl = json.loads((suite / "ncft" / "result.json").read_text())["metrics"]["cl"]
    assert [r[5] for r in summary["rows"]] == [ncft_cl, ncft_cl]
    assert [r[1] for r in summary["rows"]] == [1.0, 0.1]
    assert summary["meta"]["temperatures"] == [1.0, 0.1]
    tasks = json.loads((out / "wncft_temperature_tasks.json").read_text())
    assert len(tasks["rows"]) == 2 * 2
