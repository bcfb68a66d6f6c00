"""An experiment over seeds: one run folder per seed, and one interval and one joint test over
them (issue 23, build 2)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from taskneurons.analysis.seed_intervals import combine_seeds
from taskneurons.config import ConfigError
from taskneurons.experiments.runner import run_file
from taskneurons.neurons.neuron_set import NeuronSet

pytestmark = pytest.mark.usefixtures("one_thread")

T975_1, T975_2, Z975 = 12.706204736174705, 4.302652729749464, 1.959963984540054


def test_combine_seeds_by_hand():
    res = combine_seeds([1.0, 2.0, 3.0])
    # sd 1, se 1/sqrt(3), t(2) = 4.3027
    assert res.mean == 2.0 and res.between_sd == pytest.approx(1.0)
    assert res.half_width == pytest.approx(T975_2 / math.sqrt(3))
    # two seeds sharing test examples: between 2/2, within (2 / (2 z))^2 added once
    res = combine_seeds([1.0, 3.0], [(0.0, 2.0), (2.0, 4.0)], shared_test=True)
    se_w = 2 / (2 * Z975)
    assert res.within_se == pytest.approx(se_w)
    assert res.half_width == pytest.approx(T975_1 * math.sqrt(2 / 2 + se_w**2))
    # not shared: the test noise is already in the spread of the estimates
    res = combine_seeds([1.0, 3.0], [(0.0, 2.0), (2.0, 4.0)])
    assert res.half_width == pytest.approx(T975_1 * 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        combine_seeds([1.0])
    with pytest.raises(ValueError, match="2 intervals for 3"):
        combine_seeds([1.0, 2.0, 3.0], [(0, 1), (0, 1)])


def _file(tmp_path, tiny_folder, task_folders, top: str, name="exp"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"experiment: [detect, deactivate]\nmodel: {tiny_folder}\n"
        f"tasks: [{task_folders[0]}, {task_folders[1]}]\nout: {tmp_path / name}\n{top}"
        "detect: {k: 20, attribution: {n_examples: 4}}\n"
        "deactivate: {n_test: 4, n_boot: 200, n_permutations: 100}\n"
    )
    return path


def _stats(folder):
    return json.loads((folder / "deactivate" / "specificity.json").read_text())


def test_seeds_run_each_seed_and_combine(tiny_folder, task_folders, tmp_path):
    run = run_file(
        _file(tmp_path, tiny_folder, task_folders, "seeds: [0, 1]\n"), progress=False, echo=None
    )
    out = tmp_path / "exp"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["seed-0", "seed-1"]
    # each seed folder is the run of the file with that seed: the same files, bit for bit
    single = run_file(
        _file(tmp_path, tiny_folder, task_folders, "seed: 1\n", name="one"),
        progress=False,
        echo=None,
    )
    assert (
        single.results["deactivate"].specificity["score"]
        == (run.runs[1].results["deactivate"].specificity["score"])
    )
    for name in ("mood/neurons.safetensors", "answer/neurons.safetensors"):
        mine, theirs = (
            NeuronSet.load(folder / "detect" / name)
            for folder in (out / "seed-1", tmp_path / "one")
        )
        assert torch.equal(mine.flat(), theirs.flat())  # the same neurons (meta: other paths)
    seed0 = NeuronSet.load(out / "seed-0" / "detect" / "mood" / "neurons.safetensors")
    assert seed0.meta["seed"] == 0 and mine.meta["seed"] == 1
    # and the seeds differ where a seed draws: test subsets (data hashes) and random sets
    metas = [run.runs[s].results["deactivate"].meta for s in (0, 1)]
    assert metas[0]["data_hash"] != metas[1]["data_hash"]
    # the combined rows, against the per-seed files
    rows = json.loads((out / "seeds.json").read_text())["rows"]
    by_readout = {r[2]: r for r in rows if r[0] == "deactivate"}
    for readout, label in (("score", "acc"), ("nll", "NLL")):
        stats = [_stats(out / f"seed-{s}")[readout] for s in (0, 1)]
        values = [s["statistic"] for s in stats]
        row = by_readout[label]
        assert row[3] == 2 and row[5] == pytest.approx(sum(values) / 2)
        assert row[8] == "no"  # each seed drew its own test examples
        sd = abs(values[0] - values[1]) / math.sqrt(2)
        assert row[7] == pytest.approx(sd)
        lo, hi = (float(x) for x in row[6].split(".."))
        half = T975_1 * sd / math.sqrt(2)
        assert lo == pytest.approx(row[5] - half, rel=1e-2, abs=1e-2)
        assert hi == pytest.approx(row[5] + half, rel=1e-2, abs=1e-2)
        assert row[10] == 0.5  # two tasks: no test over them goes below 1/2!
    assert "seed" in (out / "seeds.md").read_text()


@pytest.mark.parametrize(
    "top, message",
    [
        ("seeds: [0]\n", "at least 2 distinct integers"),
        ("seeds: [1, 1]\n", "at least 2 distinct integers"),
        ("seeds: [0, x]\n", "at least 2 distinct integers"),
        ("seeds: [0, 1]\nseed: 3\n", "either seed or seeds"),
    ],
)
def test_bad_seeds_refused_before_anything_runs(tiny_folder, task_folders, tmp_path, top, message):
    path = _file(tmp_path, tiny_folder, task_folders, top)
    with pytest.raises(ConfigError, match=message):
        run_file(path, progress=False, echo=None)
    assert not (tmp_path / "exp").exists()


def test_seeds_run_from_the_command_line_writes_one_report(
    tiny_folder, task_folders, tmp_path, capsys
):
    """``taskneurons run`` of a file with ``seeds:`` ends with exit status 0 and one page of
    the seed folders in the run's folder (it used to fail after the runs: no config.yaml)."""
    from taskneurons.cli import main

    path = _file(tmp_path, tiny_folder, task_folders, "seeds: [0, 1]\n")
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    page = tmp_path / "exp" / "report.html"
    assert f"report: {page}" in out and page.is_file()
    text = page.read_text()
    assert "seed-0" in text and "seed-1" in text
