"""``taskneurons analyze losses``: the early and late training loss of every training run,
against means worked out by hand from hand-written logs."""

from __future__ import annotations

import doctest
import json
import math

import pytest

from taskneurons.cli import main
from taskneurons.training import loss_curves
from taskneurons.training.loss_curves import loss_summary, quarter_means


def test_doctests_pass():
    assert doctest.testmod(loss_curves).failed == 0


@pytest.mark.parametrize(
    ("losses", "first", "last"),
    [
        ([5.0], 5.0, 5.0),
        ([4.0, 2.0, 1.0], 4.0, 1.0),  # ceil(3 / 4) = 1 step per quarter
        ([4.0, 2.0, 2.0, 1.0, 1.0, 0.0], 3.0, 0.5),  # ceil(6 / 4) = 2
    ],
)
def test_quarter_means_by_hand(losses, first, last):
    assert quarter_means(losses) == (first, last)


def test_quarter_means_of_nothing_is_nan():
    assert all(math.isnan(v) for v in quarter_means([]))


def _log(folder, losses, extra=()):
    folder.mkdir(parents=True)
    lines = [json.dumps({"step": i + 1, "loss": v}) for i, v in enumerate(losses)]
    (folder / "train_log.jsonl").write_text("\n".join([*lines, *extra]) + "\n")


def test_every_training_run_is_found_and_summarised(tmp_path, capsys):
    _log(tmp_path / "runs" / "b" / "task", [3.0, 1.0, 1.0, 0.5])
    _log(tmp_path / "runs" / "a" / "random0", [2.0, 2.0], extra=[json.dumps({"step": 3})])
    header, rows = loss_summary(tmp_path)
    assert header[0] == "run" and [r[0] for r in rows] == ["runs/a/random0", "runs/b/task"]
    assert rows[0][1:] == [3, 2.0, 2.0, 2.0]  # a step logged without a loss still counts
    assert rows[1][1:] == [4, 3.0, 0.5, 0.5]
    assert main(["analyze", "losses", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    saved = json.loads((tmp_path / "o" / "training_losses.json").read_text())
    assert saved["rows"] == rows and "runs/b/task" in capsys.readouterr().out


def test_refuses_a_folder_without_training_runs(tmp_path, capsys):
    assert main(["analyze", "losses", str(tmp_path)]) == 2
    assert main(["analyze", "losses", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no train_log.jsonl" in err[0] and "not a folder" in err[1]
