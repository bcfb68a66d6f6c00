"""The generalization experiments (PAPER.md §3) on a tiny model: sweep, overlap, ablation, similarity."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
import torch
import yaml

from taskneurons.cli import main
from taskneurons.config import ConfigError
from taskneurons.experiments.experiment_file import ExperimentFile, with_defaults
from taskneurons.experiments.generalization import figure2 as generalization_report
from taskneurons.experiments.generalization.controlled_overlap import draw_cells
from taskneurons.experiments.generalization.controlled_overlap_stage import ControlledOverlapConfig
from taskneurons.experiments.generalization.figure2 import _rec, change_rows, figure_rows
from taskneurons.experiments.generalization.groups import TaskGroup, default_groups
from taskneurons.experiments.generalization.overlap import overlap_experiment
from taskneurons.experiments.generalization.overlap_stage import OverlapConfig
from taskneurons.experiments.generalization.reanalysis import analyze_run
from taskneurons.experiments.generalization.similarity import (
    layer_vectors,
    model_similarity,
    similarity_experiment,
)
from taskneurons.experiments.generalization.similarity_report import correlation_rows, pair_values
from taskneurons.experiments.generalization.similarity_stage import SimilarityConfig
from taskneurons.experiments.generalization.task_groups import GroupSets, joined
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.run_index import file_note
from taskneurons.experiments.runner import run_file
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.neurons import scoring
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.scoring import PROBS_FILE, ScoreReuse
from taskneurons.neurons.selection.random_sets import random_like, random_pair_like
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint

TASKS = {
    "mood": (["good", "bad"], ["the movie was good", "the film was bad", "I loved it", "boring"]),
    "answer": (["yes", "no"], ["is the cat on the mat", "is the dog red", "is it blue", "was it"]),
    "polar": (["positive", "negative"], ["fun story", "awful plot", "great music", "sad film"]),
    "pets": (["cat", "dog"], ["it sat on the mat", "it was red", "she loved it", "they sat"]),
}


@pytest.fixture(scope="module")
def four_tasks(tmp_path_factory):
    """Four tiny classification task folders (two train and two test tasks of one group)."""
    root = tmp_path_factory.mktemp("gen-tasks")
    for name, (labels, texts) in TASKS.items():
        folder = root / name
        folder.mkdir()
        info = {"id": name, "name": name, "kind": "classification", "labels": labels}
        info.update(instruction="Classify the text .", metric="accuracy")
        (folder / "task.json").write_text(json.dumps(info))
        lines = [
            json.dumps({"input": f"Text : {x}", "output": labels[i % 2]})
            for i, x in enumerate(texts)
        ]
        for split in ("train", "test"):
            (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return [root / name for name in TASKS]


def _scores(seed: int, shape=(2, 10)) -> NeuronScores:
    g = torch.Generator().manual_seed(seed)
    return NeuronScores("ffn", {"ffn": torch.rand(shape, generator=g)}, {"task": str(seed)})


def test_groups_are_table3_by_default_and_checked():
    a, b = default_groups()
    assert (a.train, a.test) == (["amazonfood", "qqp", "mnli"], ["sst2", "paws", "gptnli"])
    assert b.train == ["sciq", "e2e", "cnn_dailymail"]
    with pytest.raises(ValueError, match="both training and out-of-domain"):
        TaskGroup("x", ["a", "b"], ["b"])
    with pytest.raises(ConfigError, match="overlaps: 120"):
        ExperimentFile.from_dict(
            {
                "experiment": "controlled_overlap",
                "tasks": ["t"],
                "controlled_overlap": {"overlaps": [120]},
            }
        )
    # the top-level groups reach every generalization stage that sets none
    data = {
        "experiment": "overlap",
        "tasks": ["t"],
        "groups": [{"name": "g", "train": ["a"], "test": ["b"]}],
    }
    data["similarity"] = {"groups": [{"name": "h", "train": ["c"], "test": ["d"]}]}
    cfg = ExperimentFile.from_dict(with_defaults(data))
    assert (
        [g.name for g in cfg.overlap.groups] == ["g"] == [g.name for g in cfg.generalization.groups]
    )
    assert [g.name for g in cfg.similarity.groups] == ["h"]
    assert cfg.similarity.train.method == "full" and cfg.generalization.train.method == "neurons"


def test_group_sets_proportions_unions_and_general():
    scores = {t: _scores(i) for i, t in enumerate("abcd")}
    sets = GroupSets.select(scores, DetectConfig(k=40))  # 8 of 20 neurons per task
    assert [len(sets.sets[t]) for t in "abcd"] == [8] * 4
    half = sets.at(50, "a")
    assert len(half) == 4 and not (joined(half) & ~joined(sets.sets["a"])).any()
    # the top half by the task's own relevance
    inside = scores["a"].scores["ffn"][joined(sets.sets["a"])]
    assert scores["a"].scores["ffn"][joined(half)].min() >= inside.median()
    union = sets.union(["a", "b"], 100)
    assert torch.equal(joined(union), joined(sets.sets["a"]) | joined(sets.sets["b"]))
    # general = in the top-k of every task; removed on request
    general = (
        joined(sets.sets["a"])
        & joined(sets.sets["b"])
        & joined(sets.sets["c"])
        & joined(sets.sets["d"])
    )
    assert torch.equal(joined(sets.general), general)
    assert not (joined(sets.at(100, "a", drop_general=True)) & general).any()
    spec = GroupSets.select(
        scores, DetectConfig.from_dict({"k": 40, "selection": {"method": "specific"}})
    )
    assert torch.equal(joined(spec.general), general)


def test_controlled_cells_are_exact_and_refuse_the_impossible():
    scores = {t: _scores(i) for i, t in enumerate("abcd")}
    sets = GroupSets.select(scores, DetectConfig(k=20))
    cfg = ControlledOverlapConfig(
        groups=[TaskGroup("g", ["a", "b"], ["c", "d"])],
        proportions=[50],
        overlaps=[0, 50, 100],
        seeds=[0, 1],
    )
    cells = draw_cells(sets, cfg)
    n = len(sets.union(["a", "b"], 50))
    assert len(cells) == 6 and {len(c.neurons) for c in cells} == {n}
    assert [c.achieved for c in cells if c.seed == 0] == [
        0.0,
        100.0 * math.floor(n / 2 + 0.5) / n,
        100.0,
    ]
    big = ControlledOverlapConfig(
        groups=cfg.groups, proportions=[100], overlaps=[100], target_proportion=10
    )
    with pytest.raises(ValueError, match="group 'g', proportion 100 %, overlap 100 %"):
        draw_cells(sets, big)


def test_figure_rows_average_single_models_per_task():
    g = TaskGroup("g", ["a", "b"], ["c"])
    recs = [
        {
            "group": "g",
            "mode": "single",
            "proportion": 50.0,
            "model": m,
            "neurons": 4,
            "task": t,
            "score": s,
        }
        for m, t, s in [("a", "a", 80.0), ("a", "c", 40.0), ("b", "b", 60.0), ("b", "c", 50.0)]
    ]
    header, rows = figure_rows(g, recs, ["single"], [50.0])
    row = dict(zip(header, rows[0], strict=True))
    assert (row["a"], row["b"], row["ID mean"], row["c"], row["OOD mean"]) == (
        80.0,
        60.0,
        70.0,
        45.0,
        45.0,
    )
    assert row["average"] == 57.5


def test_change_rows_pair_examples_and_weigh_tasks_equally():
    g = TaskGroup("g", ["a"], ["b", "c"])
    recs = [
        _rec("zero-shot", 0, "base", "a", [0, 0, 100, 100]),
        _rec("zero-shot", 0, "base", "b", [0, 0]),
        _rec("zero-shot", 0, "base", "c", [100, 100, 100, 100]),
        _rec("joint", 50, "joint", "a", [100, 100, 100, 100]),  # +50
        _rec("joint", 50, "joint", "b", [100, 100]),  # +100 on 2 examples
        _rec("joint", 50, "joint", "c", [100, 100, 100, 0]),  # -25 on 4 examples
    ]
    header, rows = change_rows(g, recs, ["joint"], [50.0], n_boot=200)
    got = {r[2]: dict(zip(header, r, strict=True)) for r in rows}
    assert got["ID"]["change"] == pytest.approx(50.0)
    assert got["OOD"]["change"] == pytest.approx((100 - 25) / 2)  # a mean over tasks, not examples
    assert got["average"]["change"] == pytest.approx((50 + 37.5) / 2)
    assert got["OOD"]["examples"] == 6 and got["average"]["examples"] == 10
    low, high = map(float, got["ID"]["95% CI"].split(".."))
    assert low <= 50 <= high
    # a change no example shows has p = 1; missing zero-shot or per-example scores: no rows
    same = [r | {"mode": "joint", "proportion": 50.0} for r in recs[:3]]
    assert change_rows(g, recs[:3] + same, ["joint"], [50.0])[1][0][5] == 1.0
    assert change_rows(g, recs[3:], ["joint"], [50.0])[1] == []
    bare = [{k: v for k, v in r.items() if k != "examples"} for r in recs]
    assert change_rows(g, bare, ["joint"], [50.0])[1] == []


def test_run_index_notes_group_and_mode_files():
    assert "Figure 2" in file_note("figure2_a") and "zero-shot" in file_note("figure2_b_change")
    assert "one line per test task" in file_note("figure2_a_joint_tasks")
    assert "without the general" in file_note("figure3_a_without_general")
    assert file_note("no_such_file") == ""


def test_correlation_rows_from_records():
    recs = [
        {"group": "g", "train_task": i, "test_task": j, "similarity": {"all": [s, s + 0.1], "without_general": [s, math.nan]},
         "score": 50 + 100 * s, "zero_shot": 50.0}
        for i, j, s in [("a", "c", 0.1), ("a", "d", 0.3), ("b", "c", 0.2), ("b", "d", 0.5)]
    ]  # fmt: skip
    x, y = pair_values(recs, "all", [0], "gain")
    assert x == [0.1, 0.3, 0.2, 0.5] and y == pytest.approx([10.0, 30.0, 20.0, 50.0])
    rows = correlation_rows(recs, None, "raw", n_boot=50)
    assert [r[:2] for r in rows] == [["g", "all"], ["g", "without_general"]]
    assert rows[0][5] == pytest.approx(1.0) and rows[0][8] == pytest.approx(1.0)
    few = correlation_rows(recs[:2], None, "raw", n_boot=50)
    assert math.isnan(few[0][5]) and "at least 3 pairs" in few[0][-1]


def test_similarity_reads_weights_without_a_forward_pass(tiny_folder):
    from taskneurons.models.loading import load_model

    model, _ = load_model(str(tiny_folder))
    space = NeuronSpace(model, "ffn")
    mlp = model.model.layers[1].mlp
    rows = [
        mlp.gate_proj.weight,
        mlp.gate_proj.bias[:, None],
        mlp.up_proj.weight,
        mlp.up_proj.bias[:, None],
    ]
    want = torch.cat([*rows, mlp.down_proj.weight.T], dim=1).detach()  # neuron j: row j
    assert torch.equal(layer_vectors(space, 1), want)
    scores = {t: _scores(i, (2, 80)) for i, t in enumerate("abc")}
    sets = GroupSets.select(scores, DetectConfig(k=20))

    def refuse(*args, **kwargs):
        raise AssertionError("the similarity pass ran a forward pass")

    handle = model.register_forward_pre_hook(refuse)
    try:
        sims = model_similarity(model, sets, "a", ["b", "c"], 100)
    finally:
        handle.remove()
    u = want[joined(sets.sets["a"])[1]].double().mean(0)
    v = want[joined(sets.sets["b"])[1]].double().mean(0)
    assert sims["b"]["all"][1] == pytest.approx(float(u @ v / (u.norm() * v.norm())))
    # the control: random sets with each set's per-layer counts, seeded by task position
    ra = joined(random_like(sets.at(100, "a"), space, 7))
    rb = joined(random_like(sets.at(100, "b"), space, 8))
    assert torch.equal(ra.sum(1), joined(sets.sets["a"]).sum(1))
    u, v = want[ra[1]].double().mean(0), want[rb[1]].double().mean(0)
    again = model_similarity(model, sets, "a", ["b", "c"], 100, seed=7)
    assert again["b"]["random"][1] == pytest.approx(float(u @ v / (u.norm() * v.norm())))
    assert again["b"]["all"] == sims["b"]["all"] and again["b"]["random"] != sims["b"]["random"]
    # the overlap-matched control: a random pair with both sets' counts and shared neurons
    pa, pb = random_pair_like(sets.at(100, "a"), sets.at(100, "b"), space, 8)
    u, v = want[joined(pa)[1]].double().mean(0), want[joined(pb)[1]].double().mean(0)
    got = again["b"]["random_overlap"][1]
    assert got == pytest.approx(float(u @ v / (u.norm() * v.norm())))


def test_random_pair_matches_counts_and_overlap_per_layer(tiny_folder):
    from taskneurons.models.loading import load_model

    model, _ = load_model(str(tiny_folder))
    space = NeuronSpace(model, "ffn")
    d_ff = space.units["ffn"]
    a = NeuronSet.from_neurons(space, [(0, "ffn", u) for u in range(10)] + [(1, "ffn", 0)])
    # layer 0: 10 and 6 units, 4 shared; layer 1: 1 and 0; the union of layer 0 is 12 units
    b = NeuronSet.from_neurons(space, [(0, "ffn", u) for u in (6, 7, 8, 9, 20, 21)])
    pa, pb = random_pair_like(a, b, space, seed=3)
    for layer, (na, nb, shared) in enumerate([(10, 6, 4), (1, 0, 0)]):
        ma, mb = pa.masks["ffn"][layer], pb.masks["ffn"][layer]
        assert (int(ma.sum()), int(mb.sum()), int((ma & mb).sum())) == (na, nb, shared)
    assert not pa.masks["ffn"][2:].any() and pa.meta["n_shared"] == 4
    again = random_pair_like(a, b, space, seed=3)
    assert all(torch.equal(x.flat(), y.flat()) for x, y in zip(again, (pa, pb), strict=True))
    other = random_pair_like(a, b, space, seed=4)
    assert not torch.equal(other[0].flat(), pa.flat())
    # a layer the two sets fill completely: the pair is the sets' layout again
    full = NeuronSet.from_neurons(space, [(0, "ffn", u) for u in range(d_ff)])
    fa, fb = random_pair_like(full, b, space, seed=0)
    assert fa.masks["ffn"][0].all() and int((fa.masks["ffn"][0] & fb.masks["ffn"][0]).sum()) == 6


def test_similarity_with_neuron_training_restores_the_base(tiny_folder, four_tasks, tmp_path):
    from taskneurons.data.load import load_task
    from taskneurons.models.loading import load_model

    model, tok = load_model(str(tiny_folder))
    before = model_fingerprint(model)
    tasks = [load_task(str(p)) for p in four_tasks]
    cfg = SimilarityConfig.from_dict({
        "groups": [{"name": "g", "train": ["mood", "answer"], "test": ["polar", "pets"]}],
        "n_train": 4, "n_test": 4, "n_boot": 20, "zero_shot": False,
        "train": {"method": "neurons", "lr": 0.01, "batch_size": 2},
    })  # fmt: skip
    detect = DetectConfig.from_dict({"k": 20, "attribution": {"n_examples": 4}})
    ctx = RunContext.of(model, tok, tasks, progress=False, detect=detect)
    res = similarity_experiment(ctx, cfg, tmp_path)
    assert model_fingerprint(model) == before
    assert len(res.records) == 4 and len(res.records[0]["similarity"]["all"]) == 2
    assert (tmp_path / "similarity_records.json").is_file() and (
        tmp_path / "correlation.png"
    ).is_file()


def test_overlap_stage_reuses_the_scores_of_an_earlier_run(
    tiny_folder, four_tasks, tmp_path, monkeypatch
):
    from taskneurons.data.load import load_task
    from taskneurons.models.loading import load_model

    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(p)) for p in four_tasks]
    detect = DetectConfig.from_dict(
        {"k": 20, "attribution": {"n_examples": 4}, "selection": {"method": "lape"}}
    )
    groups = [{"name": "g", "train": ["mood", "answer"], "test": ["polar", "pets"]}]
    cfg = OverlapConfig.from_dict({"groups": groups, "proportions": [50, 100]})
    first = overlap_experiment(
        RunContext.of(model, tok, tasks, progress=False, detect=detect), cfg, tmp_path / "a"
    )
    assert (tmp_path / "a" / "scores" / "mood" / PROBS_FILE).is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(scoring, "relevance_scores", refuse)
    monkeypatch.setattr(scoring, "activation_probability", refuse)
    ctx = RunContext.of(model, tok, tasks, progress=False, detect=detect, neurons=tmp_path / "a")
    again = overlap_experiment(ctx, cfg, tmp_path / "b")
    assert again.rows == first.rows and set(again.scored.origin.values()) == {"loaded"}
    # the finished run, again with lape (from the saved activation probabilities) and topk
    lape = analyze_run("overlap", {"run": tmp_path / "a", "out": tmp_path / "c"})
    assert "| g | g | 50.0 |" in lape.markdown()
    topk = analyze_run("overlap", {"run": tmp_path / "b", "selection": "topk"})
    assert topk.out_dir == tmp_path / "b" / "analyze-overlap"


def test_probabilities_measured_again_are_found_by_the_stage_and_by_analyze(
    tiny_folder, four_tasks, tmp_path, monkeypatch
):
    from taskneurons.data.load import load_task
    from taskneurons.experiments.generalization.reanalysis import FinishedRunError
    from taskneurons.models.loading import load_model

    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(p)) for p in four_tasks]

    def detect(threshold):
        sel = {"method": "lape", "threshold": threshold}
        return DetectConfig.from_dict({"k": 20, "attribution": {"n_examples": 4}, "selection": sel})

    groups = [{"name": "g", "train": ["mood", "answer"], "test": ["polar", "pets"]}]
    cfg = OverlapConfig.from_dict({"groups": groups, "proportions": [50, 100]})
    a, b = tmp_path / "a", tmp_path / "b"

    def ctx(threshold, source=None):
        return RunContext.of(
            model, tok, tasks, progress=False, detect=detect(threshold), neurons=source
        )

    overlap_experiment(ctx(0.0), cfg, a)
    # b takes a's scores but another threshold: its probabilities are measured into b/scores
    first = overlap_experiment(ctx(0.5, source=a), cfg, b)
    mine = b / "scores" / "mood" / PROBS_FILE
    assert NeuronScores.load(mine).meta["threshold"] == 0.5

    def refuse(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(scoring, "activation_probability", refuse)
    again = overlap_experiment(ctx(0.5, source=a), cfg, b)
    assert again.rows == first.rows  # b's own probabilities, not a's (threshold 0) nor new ones
    # analyze reads the same probabilities the stage used
    assert analyze_run("overlap", {"run": b}).text == first.markdown()
    mine.unlink()  # a's file beside the scores was measured with threshold 0: not taken
    with pytest.raises(FinishedRunError, match="threshold 0.5"):
        analyze_run("overlap", {"run": b})


def test_saved_activation_probabilities_are_reused_only_if_measured_alike(
    tiny_folder, four_tasks, tmp_path, monkeypatch
):
    from taskneurons.data.load import load_task
    from taskneurons.models.loading import load_model

    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(p)) for p in four_tasks[:2]]

    def detect(**selection):
        sel = {"method": "lape", **selection}
        return DetectConfig.from_dict({"k": 20, "attribution": {"n_examples": 4}, "selection": sel})

    def task_probabilities(d, scored):
        return scoring.score_tasks(
            model, tok, tasks, d.attribution, d.selection, tmp_path / "scores", False,
            ScoreReuse(cached=scored),
        ).probabilities  # fmt: skip

    scored = scoring.score_tasks(
        model, tok, tasks, detect().attribution, None, tmp_path / "scores", progress=False
    )
    first = task_probabilities(detect(), scored)
    measured = []
    real = scoring.activation_probability
    monkeypatch.setattr(
        scoring, "activation_probability", lambda *a, **k: measured.append(1) or real(*a, **k)
    )
    same = task_probabilities(detect(), scored)
    assert not measured and same["mood"].meta == first["mood"].meta
    for other in ({"threshold": 0.5}, {"tokens": "all"}):
        again = task_probabilities(detect(**other), scored)
        assert measured and all(again[t].meta[k] == v for t in again for k, v in other.items())
        measured.clear()


def test_runner_runs_the_generalization_stages_end_to_end(
    tiny_folder, four_tasks, tmp_path, monkeypatch, capsys
):
    calls = []
    real = scoring.relevance_scores
    monkeypatch.setattr(
        scoring,
        "relevance_scores",
        lambda m, t, *a, **k: calls.append(t.id) or real(m, t, *a, **k),
    )
    exp = tmp_path / "gen.yaml"
    exp.write_text(yaml.safe_dump({
        "experiment": ["generalization", "controlled_overlap", "similarity"],
        "model": str(tiny_folder), "tasks": [str(p) for p in four_tasks], "out": str(tmp_path / "run"),
        "groups": [{"name": "g", "train": ["mood", "answer"], "test": ["polar", "pets"]}],
        "detect": {"k": 20, "attribution": {"n_examples": 4}},
        "generalization": {"proportions": [50, 100], "proportion_of": "set", "n_train": 4, "n_test": 4,
                           "train": {"lr": 0.01, "batch_size": 2}},
        "controlled_overlap": {"proportions": [50], "proportion_of": "set", "overlaps": [0, 100], "seeds": [0, 1], "n_train": 4,
                               "n_test": 4, "train": {"lr": 0.01, "batch_size": 2}},
        "similarity": {"n_train": 4, "n_test": 4, "n_boot": 20, "train": {"lr": 0.001, "batch_size": 2}},
    }))  # fmt: skip
    run = run_file(exp, progress=False, echo=None)
    assert sorted(calls) == sorted(TASKS)  # each task scored once for all three stages
    out = tmp_path / "run"
    gen = run.results["generalization"]
    assert set(gen.timings.to_dict()) >= {"scoring_s", "training_s", "evaluation_s"}
    header, rows = gen.tables["g"]
    assert [r[:2] for r in rows] == [
        ["zero-shot", 0.0],
        ["joint", 50.0],
        ["joint", 100.0],
        ["single", 50.0],
        ["single", 100.0],
    ]
    assert gen.overlap.rate("g", "g", 100.0) >= gen.overlap.rate("g", "g", 50.0) >= 0
    for name in [
        "generalization/evaluations.csv", "generalization/figure2_g.md", "generalization/figure2_g_change.md",
        "generalization/evaluation_examples.json", "generalization/figure2_g.json",
        "generalization/figure2_g_joint.png", "generalization/figure2_g_single_tasks.png",
        "generalization/overlap.csv", "generalization/overlap_vs_proportion.png",
        "generalization/pairwise/iou_p50.png", "generalization/pairwise/iou_p100_without_general.md",
        "generalization/generalization_config.json", "generalization/scores/mood/scores.safetensors",
        "controlled_overlap/controlled_overlap.md", "controlled_overlap/controlled_scores.json",
        "controlled_overlap/controlled_overlap_g.png", "controlled_overlap/controlled_overlap_config.json",
        "similarity/similarity_records.json", "similarity/figure3_g.png", "similarity/figure3_g_without_general.csv",
        "similarity/figure3_g_random.png", "similarity/figure3_g_random_overlap.md",
        "similarity/similarity_pairs.md", "similarity/correlation.json", "similarity/correlation.png",
        "similarity/similarity_config.json", "README.md", "config.yaml",
    ]:  # fmt: skip
        assert (out / name).is_file(), name
    record = json.loads((out / "similarity" / "similarity_config.json").read_text())
    assert record["scores"]["mood"]["origin"] == "cached" and "versions" in record
    controlled = run.results["controlled_overlap"]
    assert [r[2] for r in controlled.rows] == [0.0, 100.0]  # requested overlap %
    assert [r[5] for r in controlled.rows] == [0.0, 100.0]  # achieved overlap %
    # the contrast (overlap 100 - overlap 0) equals the difference of the OOD means, seed-averaged
    header, (contrast,) = controlled.contrast
    ood = controlled.header.index("OOD mean")
    want = controlled.rows[1][ood] - controlled.rows[0][ood]
    assert contrast[header.index("contrast")] == pytest.approx(want, abs=1e-9)
    assert contrast[header.index("examples")] == 8 and contrast[header.index("seeds")] == 2
    back = type(controlled).load(out / "controlled_overlap")
    assert back.contrast == (header, [list(contrast)])
    assert (out / "controlled_overlap" / "controlled_contrast.md").is_file()
    # Figure 2 again from the saved per-example scores: the run's change table, to the digit
    assert main(["analyze", "figure2", str(out), "--out", str(tmp_path / "f2")]) == 0
    again = json.loads((tmp_path / "f2" / "figure2_g_change.json").read_text())
    assert again["rows"] == [list(r) for r in gen.changes["g"][1]] and len(again["rows"]) == 12
    assert (tmp_path / "f2" / "figure2_g_joint.png").is_file()
    assert main(["analyze", "figure2", str(out), "--layers", "1"]) == 2  # not a figure2 option
    assert main(["analyze", "figure2", str(tmp_path / "f2")]) == 2  # no records there
    # the analyses of the finished run, with another selection and other layers
    spec = tmp_path / "spec"
    argv = ["analyze", "overlap", str(out), "--selection", "specific", "--proportions", "50,100"]
    assert main([*argv, "--out", str(spec)]) == 0
    saved = json.loads((spec / "overlap.json").read_text())
    assert saved["meta"]["selection"]["method"] == "specific"
    assert np.isfinite(saved["rows"][0][6]) and (spec / "analysis_config.json").is_file()
    assert main(["analyze", "overlap", str(out)]) == 0  # default out: RUN/analyze-overlap
    assert main(["analyze", "overlap", str(out)]) == 0  # its own output is not taken for a run
    assert (out / "analyze-overlap" / "overlap_vs_proportion.png").is_file()
    argv = ["analyze", "similarity", str(out), "--layers", "1", "--out", str(tmp_path / "s")]
    assert main(argv) == 0 and (tmp_path / "s" / "figure3_g.png").is_file()
    argv = [
        "analyze",
        "correlate",
        str(out),
        "--layers",
        "0-1",
        "--score",
        "gain",
        "--n-boot",
        "20",
    ]
    assert main(argv) == 0
    table4 = json.loads((out / "analyze-correlate" / "correlation.json").read_text())
    assert table4["rows"][0][3] == "gain" and table4["meta"]["layers"] == [0, 1]
    printed = capsys.readouterr().out
    assert "pearson r" in printed and "overlap %" in printed
    assert main(["analyze", "correlate", str(tmp_path)]) == 2
    assert "no similarity_records.json" in capsys.readouterr().err


def test_generalization_report_doctests_pass():
    assert doctest.testmod(generalization_report).failed == 0


def test_the_paper_reading_of_a_proportion_is_of_all_neurons():
    """PAPER.md Table 8 reaches 100 % overlap at 100 %: a proportion of *all* neurons."""
    from taskneurons.analysis.set_overlap import overlap_rate
    from taskneurons.neurons.selection.ranking import top_k

    scores = {str(i): _scores(i, (2, 10)) for i in range(4)}  # 20 neurons per task
    detect = DetectConfig(k=10)
    model = GroupSets.select(scores, detect, reading="model")
    per_set = GroupSets.select(scores, detect, reading="set")
    for t, s in scores.items():
        assert len(model.at(100, t)) == 20  # every neuron
        assert len(per_set.at(100, t)) == len(per_set.sets[t]) == 2  # 10 % of 20
        for p in (10, 30, 50):  # the top p % of all neurons by the task's own relevance
            assert torch.equal(model.at(p, t).masks["ffn"], top_k(s, p).masks["ffn"])
    both = [joined(model.union(["0", "1"], 100)), joined(model.union(["2", "3"], 100))]
    assert overlap_rate(*both) == pytest.approx(1.0)
    assert model.selection["proportion_of"] == "model"
    # the target of a controlled-overlap cell without a target proportion: the whole sets
    assert torch.equal(
        joined(model.union(["2", "3"], None)), joined(per_set.union(["2", "3"], 100))
    )
