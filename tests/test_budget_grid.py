"""The Table 2 budget grid on a tiny model: curves, paired differences, files, exact restore."""

from __future__ import annotations

import json

import pytest
import torch

from taskneurons.data.load import load_task
from taskneurons.experiments.finetuning.budget_grid import budget_grid
from taskneurons.experiments.finetuning.budget_stage import BudgetGridConfig
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.models.loading import load_model


def test_budget_grid_runs_every_cell_and_restores_the_model(tiny_folder, task_folders, tmp_path):
    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(f)) for f in task_folders]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = BudgetGridConfig.from_dict(
        {
            "tasks": [tasks[0].id],
            "optimizers": ["sgd", "adamw"],
            "lrs": [0.5, 0.01],
            "steps": [1, 3],
            "k": [10.0, 30.0],
            "seeds": [0, 1],
            "n_train": 4,
            "n_test": 4,
            "n_boot": 50,
            "train": {"batch_size": 2},
        }
    )
    detect = DetectConfig.from_dict({"attribution": {"n_examples": 4}})
    ctx = RunContext.of(model, tok, tasks, progress=False, detect=detect)
    res = budget_grid(ctx, config, tmp_path / "b")
    assert list(res.curves) == [(tasks[0].id, o, k) for o in ("sgd", "adamw") for k in (10.0, 30.0)]
    rows = res.rows()
    assert len(rows) == 4 * 2 and [r[3] for r in rows[:2]] == [1, 3]
    for row in rows:
        assert row[6] == pytest.approx(row[4] - row[5])  # difference of the means
    # Holm over the 8 cells, by hand: the r-th smallest p times (8 - r), running maximum, cap 1
    ps = sorted(row[9] for row in rows)
    steps = [min(1.0, p * (8 - r)) for r, p in enumerate(ps)]
    by_hand = {p: max(steps[: r + 1]) for r, p in reversed(list(enumerate(ps)))}
    assert [row[10] for row in rows] == pytest.approx([by_hand[row[9]] for row in rows])
    curve = res.curves[(tasks[0].id, "adamw", 30.0)]
    assert len(curve["task"]) == 2 and len(curve["random"]) == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for name in (
        "budget.md",
        "budget.json",
        "curves.json",
        "learning_curves_sgd.png",
        "learning_curves_adamw.png",
        "task_minus_random.png",
        "budget_config.json",
    ):
        assert (tmp_path / "b" / name).is_file(), name
    log = tmp_path / "b" / "runs" / tasks[0].id / "sgd-k10" / "random1" / "train_log.jsonl"
    assert len(log.read_text().splitlines()) == 3  # three optimizer steps
    saved = json.loads((tmp_path / "b" / "budget.json").read_text())
    assert saved["meta"]["budget"]["seeds"] == [0, 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lrs": [0.1]}, "one learning rate per optimizer"),
        ({"optimizers": ["adam", "sgd"]}, "unknown"),
        ({"steps": [8, 4]}, "increasing"),
        ({"seeds": [1, 1, 2]}, "distinct"),
        ({"k": [0.0]}, "k"),
    ],
)
def test_bad_grids_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        BudgetGridConfig.from_dict(change)
