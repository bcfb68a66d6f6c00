"""Neuron reuse in continual runs: the counts by hand, chance by sampling, the table from runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from taskneurons.analysis.neuron_reuse import reuse_counts
from taskneurons.cli import main
from taskneurons.experiments.continual.method_run import continual_experiment
from taskneurons.experiments.continual.reuse_tables import HEADER, reuse_rows
from taskneurons.experiments.continual.table5 import ContinualRunError
from taskneurons.experiments.continual.task_neurons import NEURONS_DIR, load_task_neurons
from test_continual import _config, animal_task, mood_task, people_task

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _mask(rows: list[list[int]], width: int = 4) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.bool)
    for layer, ids in enumerate(rows):
        out[layer, ids] = True
    return out


def test_reuse_counts_by_hand():
    sets = [_mask([[0, 1], [0]]), _mask([[1, 2], [3]]), _mask([[1, 3], [0, 1]])]
    own, reused, chance = reuse_counts(sets)
    assert own.tolist() == [[2, 1], [2, 1], [2, 2]]
    # task 0, layer 0: {0,1} ∩ {1,2,3} = {1}; layer 1: {0} ∩ {3,0,1} = {0}
    # task 1, layer 0: {1,2} ∩ {1,3} = {1}; layer 1: {3} ∩ {0,1} = {}
    assert reused.tolist() == [[1, 1], [1, 0], [0, 0]]
    # chance: own * (1 - prod over later sets of (1 - size / 4)), layer by layer
    expected = [[2 * (1 - 0.5 * 0.5), 1 * (1 - 0.75 * 0.5)], [2 * 0.5, 1 * 0.5], [0, 0]]
    np.testing.assert_allclose(chance, expected)


def test_chance_is_what_random_sets_matched_in_size_and_layer_give():
    gen = torch.Generator().manual_seed(0)
    sizes = [[3, 1, 5], [2, 4, 4], [6, 2, 1]]  # [task][layer], 3 layers of 8 neurons
    first = _mask([list(range(s)) for s in sizes[0]], width=8)
    _, _, chance = reuse_counts([first, *[_mask([[]] * 3, 8)] * 2])
    total = np.zeros(3)
    n = 4000
    for _ in range(n):
        later = [_mask([torch.randperm(8, generator=gen)[:s].tolist() for s in row], 8)
                 for row in sizes[1:]]  # fmt: skip
        total += reuse_counts([first, *later])[1][0]
    expected = reuse_counts([first, _mask([[0, 1], [0, 1, 2, 3], [0, 1, 2, 3]], 8),
                             _mask([list(range(6)), [0, 1], [0]], 8)])[2][0]  # fmt: skip
    assert chance[0].tolist() == [0, 0, 0]  # later sets empty: no reuse by chance
    np.testing.assert_allclose(total / n, expected, atol=0.06)


@pytest.mark.parametrize(
    "sets,match",
    [
        ([], "at least one"),
        ([torch.ones(2, 3)], "bool"),
        ([torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool)], "one shape"),
        ([torch.ones(6, dtype=torch.bool)], r"\[layers, d_ff\]"),
    ],
)
def test_reuse_counts_refuses_bad_sets(sets, match):
    with pytest.raises(ValueError, match=match):
        reuse_counts(sets)


@pytest.fixture(scope="module")
def runs(tok, tmp_path_factory):
    """A seeds-style folder: seed0/ncft and seed0/seqft, three tasks each (tiny llama)."""
    root = tmp_path_factory.mktemp("reuse") / "run"
    cache = root / "cache.json"
    tasks = [mood_task(), animal_task(), people_task()]
    for name in ("ncft", "seqft"):
        cfg = _config(name, cache)
        continual_experiment(tiny_model("llama"), tok, tasks, cfg, root / "seed0" / name,
                             progress=False)  # fmt: skip
    return root


def test_reuse_rows_count_the_sets_of_the_ncft_run(runs):
    from taskneurons.continual.stage_checkpoint import read_checkpoint

    rows, layers = reuse_rows([runs])
    state = read_checkpoint(runs / "seed0" / "ncft" / "checkpoint").state
    sets = [
        {tuple(ix) for ix in state[f"neurons{i}/ffn"].nonzero().tolist()} for i in range(3)
    ]  # (layer, neuron) pairs, counted without the code under test
    matrix = json.loads((runs / "seed0" / "ncft" / "matrix.json").read_text())["rows"]
    assert [r[:4] for r in rows] == [["run", "0", "ncft", t] for t in state["trained"][:2]]
    for i, row in enumerate(rows):
        later = set().union(*sets[i + 1 :])
        got = dict(zip(HEADER, row, strict=True))
        assert got["neurons"] == len(sets[i]) and got["reused later"] == len(sets[i] & later)
        assert got["reused %"] == pytest.approx(100 * len(sets[i] & later) / len(sets[i]))
        assert got["forgotten (points)"] == pytest.approx(matrix[i][1 + i] - matrix[i][3])
        assert 0 <= got["chance %"] <= 100
    n_layers = state["neurons0/ffn"].shape[0]
    assert [r[:3] for r in layers] == [["ncft", "ffn", layer] for layer in range(n_layers)]
    assert sum(r[3] for r in layers) == len(sets[0]) + len(sets[1])


def test_a_folder_without_neuron_training_runs_is_refused(runs):
    with pytest.raises(ContinualRunError, match="no finished run of a neuron-training method"):
        reuse_rows([runs / "seed0" / "seqft"])


def test_analyze_reuse_prints_and_writes_the_tables(runs, tmp_path, capsys):
    assert main(["analyze", "reuse", str(runs), "--out", str(tmp_path / "out")]) == 0
    assert "| run | seed | method | task |" in capsys.readouterr().out
    for stem in ("neuron_reuse", "neuron_reuse_layers"):
        for ext in ("md", "csv", "json"):
            assert (tmp_path / "out" / f"{stem}.{ext}").is_file()
    meta = json.loads((tmp_path / "out" / "neuron_reuse.json").read_text())["meta"]
    assert meta["runs"] == [str(runs)]


def test_an_ncft_run_keeps_its_task_sets_beside_its_result(runs):
    from taskneurons.continual.stage_checkpoint import read_checkpoint

    ncft = runs / "seed0" / "ncft"
    state = read_checkpoint(ncft / "checkpoint").state
    sets = load_task_neurons(ncft, state["trained"])
    assert list(sets) == state["trained"]
    for i, neurons in enumerate(sets.values()):
        assert torch.equal(neurons.masks["ffn"], state[f"neurons{i}/ffn"].bool())
    assert not (runs / "seed0" / "seqft" / NEURONS_DIR).exists()


def test_reuse_reads_the_task_sets_without_the_checkpoint(runs, tmp_path):
    with_checkpoint = tmp_path / "a" / "run" / "seed0" / "ncft"
    with_sets = tmp_path / "b" / "run" / "seed0" / "ncft"
    shutil.copytree(
        runs / "seed0" / "ncft", with_checkpoint, ignore=shutil.ignore_patterns(NEURONS_DIR)
    )
    shutil.copytree(runs / "seed0" / "ncft", with_sets, ignore=shutil.ignore_patterns("checkpoint"))
    assert not (with_sets / "checkpoint").exists() and (with_sets / NEURONS_DIR).is_dir()
    assert reuse_rows([with_sets.parents[1]]) == reuse_rows([with_checkpoint.parents[1]])
    assert reuse_rows([with_sets.parents[1]]) == reuse_rows([runs])


def test_a_missing_task_set_is_named(runs, tmp_path):
    folder = tmp_path / "ncft"
    shutil.copytree(runs / "seed0" / "ncft", folder, ignore=shutil.ignore_patterns("checkpoint"))
    order = json.loads((folder / "result.json").read_text())["order"]
    shutil.rmtree(folder / NEURONS_DIR / order[1])
    with pytest.raises(FileNotFoundError, match=rf"no neuron set for tasks \['{order[1]}'\]"):
        load_task_neurons(folder, order)


def test_a_neuron_run_without_its_sets_is_left_out_with_a_warning(runs, tmp_path):
    """An NCFT run whose sets were kept nowhere (no neurons/, no checkpoint: made before runs
    kept them, elsewhere) is named in a warning; the other seeds' rows are as before."""
    root = tmp_path / "run"
    shutil.copytree(runs / "seed0", root / "seed0")
    shutil.copytree(runs / "seed0" / "ncft", root / "seed1" / "ncft",
                    ignore=shutil.ignore_patterns(NEURONS_DIR, "checkpoint"))  # fmt: skip
    with pytest.warns(UserWarning, match=r"seed1[/\\]ncft: left out"):
        rows, _ = reuse_rows([root])
    assert [r[1] for r in rows] == ["0", "0"]
    with pytest.warns(UserWarning), pytest.raises(ContinualRunError, match="no finished run"):
        reuse_rows([root / "seed1"])
