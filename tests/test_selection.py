"""NeuronSet: top-k, random_like, set algebra, IoU, ids, save/load and model checks."""

from __future__ import annotations

import math
import os

import pytest
import torch

from taskneurons.neurons.neuron_set import NeuronSet, NeuronSetMismatchError
from taskneurons.neurons.scores import NeuronScores
from taskneurons.neurons.selection.random_sets import random_like
from taskneurons.neurons.selection.ranking import check_k, count_for, iou, top_k
from taskneurons.neurons.space import NeuronSpace
from taskneurons.provenance import model_fingerprint

from tiny_models import tiny_model


def _set(rows: list[list[int]], module: str = "ffn", definition: str = "ffn") -> NeuronSet:
    return NeuronSet(definition, {module: torch.tensor(rows, dtype=torch.bool)})


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", seed=0)


# -- top_k ------------------------------------------------------------------------------------------
def test_count_for_rounds_half_up_and_keeps_at_least_one():
    assert count_for(10, 46080) == 4608
    assert count_for(50, 5) == 3  # 2.5 -> 3
    assert count_for(0.01, 10) == 1
    assert count_for(100, 7) == 7


@pytest.mark.parametrize("k", [0, -1, 101, float("nan"), 100.0001])
def test_top_k_rejects_k_outside_0_100(k):
    scores = NeuronScores("ffn", {"ffn": torch.rand(2, 5)})
    with pytest.raises(ValueError, match=r"\(0, 100\]") as info:
        top_k(scores, k)
    assert str(k) in str(info.value)


def test_top_k_whole_model_picks_the_largest_scores():
    vals = torch.tensor([[0.1, 0.9, 0.3, 0.0], [0.8, 0.2, 0.7, 0.4]])
    s = top_k(NeuronScores("ffn", {"ffn": vals}), k=50)  # 4 of 8
    assert len(s) == 4
    assert s.to_neurons() == [(0, "ffn", 1), (1, "ffn", 0), (1, "ffn", 2), (1, "ffn", 3)]
    assert s.counts_per_layer()["ffn"].tolist() == [1, 3]
    assert s.meta["k"] == 50 and s.meta["scope"] == "model" and s.meta["count"] == 4
    # every selected score >= every unselected one
    assert vals[s.masks["ffn"]].min() >= vals[~s.masks["ffn"]].max()


def test_top_k_per_layer_takes_k_percent_of_each_layer():
    vals = torch.tensor([[0.1, 0.9, 0.3, 0.0], [0.8, 0.2, 0.7, 0.4]])
    s = top_k(NeuronScores("ffn", {"ffn": vals}), k=25, scope="layer")
    assert s.counts_per_layer()["ffn"].tolist() == [1, 1]
    assert s.indices("ffn", 0).tolist() == [1]
    assert s.indices("ffn", 1).tolist() == [0]
    # whole-model scope with the same k takes 2 neurons, not one per layer
    m = top_k(NeuronScores("ffn", {"ffn": vals}), k=25)
    assert m.to_neurons() == [(0, "ffn", 1), (1, "ffn", 0)]
    big = top_k(NeuronScores("ffn", {"ffn": vals * torch.tensor([[1.0], [10.0]])}), k=25)
    assert big.counts_per_layer()["ffn"].tolist() == [0, 2]


def test_top_k_ties_go_to_the_lower_neuron_id_deterministically():
    vals = torch.tensor([[1.0, 2.0, 2.0, 2.0], [2.0, 2.0, 0.5, 2.0]])
    scores = NeuronScores("ffn", {"ffn": vals})
    s = top_k(scores, k=50)  # 4 of the six tied 2.0s
    assert s.ids().tolist() == [1, 2, 3, 4]
    for _ in range(3):
        assert top_k(scores, k=50) == s
    per_layer = top_k(scores, k=25, scope="layer")
    assert per_layer.to_neurons() == [(0, "ffn", 1), (1, "ffn", 0)]


def test_top_k_rejects_nan_scores():
    vals = torch.rand(2, 4)
    vals[1, 2] = float("nan")
    with pytest.raises(ValueError, match="layer 1, unit 2"):
        top_k(NeuronScores("ffn", {"ffn": vals}), k=10)


def test_top_k_linear_definition_ranks_modules_together_or_separately():
    # gate scores dominate: ranked together, all picks come from gate
    scores = NeuronScores(
        "linear",
        {
            "gate": torch.tensor([[9.0, 8.0, 7.0], [6.0, 5.0, 4.0]]),
            "down": torch.tensor([[0.1, 0.3], [0.2, 0.0]]),
        },
    )
    together = top_k(scores, k=40)  # round(0.4 * 10) = 4
    assert together.counts_per_layer()["gate"].tolist() == [3, 1]
    assert together.counts_per_layer()["down"].tolist() == [0, 0]
    apart = top_k(scores, k=40, rank_modules="separately")  # 2 of 6 gate, 2 of 4 down
    assert apart.counts_per_layer()["gate"].tolist() == [2, 0]
    assert apart.to_neurons() == [(0, "gate", 0), (0, "gate", 1), (0, "down", 1), (1, "down", 0)]
    layer_apart = top_k(scores, k=50, scope="layer", rank_modules="separately")
    assert layer_apart.counts_per_layer()["gate"].tolist() == [2, 2]  # round(1.5) = 2
    assert layer_apart.counts_per_layer()["down"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="rank_modules"):
        top_k(scores, k=10, rank_modules="both")
    with pytest.raises(ValueError, match="scope"):
        top_k(scores, k=10, scope="module")


def test_top_k_meta_records_the_source():
    fp = {"arch": "abc", "weights": "def", "model_type": "llama"}
    scores = NeuronScores("ffn", {"ffn": torch.rand(2, 6)}, {"task": "sst2", "model": fp})
    s = top_k(scores, k=10, meta={"seed": 3})
    assert s.meta["task"] == "sst2"
    assert s.meta["model_fingerprint"] == fp
    assert s.meta["scores_meta"]["task"] == "sst2"
    assert s.meta["seed"] == 3 and s.meta["definition"] == "ffn" and "version" in s.meta


def test_top_k_records_the_model_fingerprint_when_given_the_model(llama):
    space = NeuronSpace(llama, "ffn")
    meta = {"task": "sst2", "config": {"seed": 7}, "data_hash": "ab"}
    scores = NeuronScores("ffn", {"ffn": torch.rand(space.shape("ffn"))}, meta)
    s = top_k(scores, k=10, model=llama)
    assert s.meta["model_fingerprint"] == model_fingerprint(llama)
    assert s.meta["seed"] == 7 and s.meta["data_hash"] == "ab"
    with pytest.raises(NeuronSetMismatchError):
        top_k(NeuronScores("ffn", {"ffn": torch.rand(3, 80)}), k=10, model=llama)


def test_top_k_puts_modules_in_id_order_when_given_the_model(llama):
    space = NeuronSpace(llama, "linear")  # gate, up, down
    g = torch.Generator().manual_seed(0)
    shuffled = {m: torch.rand(space.shape(m), generator=g) for m in sorted(space.modules)}
    s = top_k(NeuronScores("linear", shuffled), k=10, model=llama)
    assert s.modules == space.modules
    in_order = {m: shuffled[m] for m in space.modules}
    assert s == top_k(NeuronScores("linear", in_order), k=10)


def test_constructors_are_module_functions_not_patched_onto_the_class():
    # top_k / random_like live in selection only; importing it must not alter NeuronSet
    assert not hasattr(NeuronSet, "top_k") and not hasattr(NeuronSet, "random_like")


def test_check_k_is_public_and_returns_the_float():
    assert check_k(10) == 10.0 and check_k("2.5") == 2.5 and check_k(100) == 100.0
    for bad in (0, -1, 100.5, float("nan"), "abc", None):
        with pytest.raises(ValueError, match=r"k must be a percentage in \(0, 100\]"):
            check_k(bad)


# -- random_like --------------------------------------------------------------------------------
def test_random_like_matches_counts_is_seeded_and_respects_exclude(llama):
    space = NeuronSpace(llama, "ffn")
    scores = NeuronScores(
        "ffn", {"ffn": torch.rand(space.shape("ffn"), generator=torch.Generator().manual_seed(1))}
    )
    task = top_k(scores, k=20, scope="model")
    r0 = random_like(task, space, seed=0)
    assert torch.equal(r0.counts_per_layer()["ffn"], task.counts_per_layer()["ffn"])
    assert r0 == random_like(task, space, seed=0)
    assert r0 != random_like(task, space, seed=1)
    disjoint = random_like(task, space, seed=0, exclude=task)
    assert len(disjoint & task) == 0
    assert torch.equal(disjoint.counts_per_layer()["ffn"], task.counts_per_layer()["ffn"])
    assert disjoint.meta["seed"] == 0 and disjoint.meta["kind"] == "random_like"
    # shapes given as a dict work the same as the space
    assert random_like(task, {"ffn": space.shape("ffn")}, seed=0) == r0


def test_random_like_draws_every_unit_over_many_seeds():
    base = _set([[1, 0, 0, 0, 0, 0]])
    seen = set()
    for seed in range(60):
        seen.update(random_like(base, base.shapes(), seed=seed).indices("ffn", 0).tolist())
    assert seen == set(range(6))


def test_random_like_errors_when_exclude_leaves_too_few():
    other = _set([[1, 1, 1, 0], [1, 0, 0, 0]])
    exclude = _set([[0, 0, 1, 1], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"layer 0 of module 'ffn': need 3 .* only 2 of 4"):
        random_like(other, other.shapes(), seed=0, exclude=exclude)
    with pytest.raises(NeuronSetMismatchError):
        random_like(other, {"ffn": (2, 5)}, seed=0)


def test_random_like_overlap_on_shortfall_is_minimal_and_recorded():
    # layer 0: the set holds 5 of 6 units, so only 1 is outside; layer 1: plenty of room
    task = _set([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
    rnd = random_like(task, task.shapes(), seed=3, exclude=task, on_shortfall="overlap")
    assert torch.equal(rnd.counts_per_layer()["ffn"], task.counts_per_layer()["ffn"])
    row0 = rnd.masks["ffn"][0]
    assert bool(row0[5])  # the one free unit is always taken
    assert int((row0 & task.masks["ffn"][0]).sum()) == 4  # and only 5 - 1 from inside
    assert not bool((rnd.masks["ffn"][1] & task.masks["ffn"][1]).any())  # disjoint elsewhere
    assert rnd.meta["overlap"] == {"ffn": {"0": 4}} and rnd.meta["n_overlap"] == 4
    assert rnd == random_like(task, task.shapes(), seed=3, exclude=task, on_shortfall="overlap")
    # without a shortfall the option changes nothing, and no overlap is recorded
    roomy = _set([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    a = random_like(roomy, roomy.shapes(), seed=0, exclude=roomy, on_shortfall="overlap")
    assert a == random_like(roomy, roomy.shapes(), seed=0, exclude=roomy)
    assert "n_overlap" not in a.meta
    with pytest.raises(ValueError, match="on_shortfall='overlap'"):
        random_like(task, task.shapes(), seed=0, exclude=task)
    with pytest.raises(ValueError, match="on_shortfall must be"):
        random_like(task, task.shapes(), seed=0, on_shortfall="skip")


def test_matched_random_sets_warn_about_overlap(caplog):
    import logging

    from taskneurons.neurons.selection.random_sets import matched_random_sets

    sets = {"big": _set([[1, 1, 1, 1, 1, 0]]), "small": _set([[1, 0, 0, 0, 0, 0]])}
    space = {"ffn": (1, 6)}
    with caplog.at_level(logging.WARNING, logger="taskneurons.workflows"):
        controls = matched_random_sets(sets, space, seed=0)
    assert controls["big"].meta["n_overlap"] == 4 and "n_overlap" not in controls["small"].meta
    assert "task 'big'" in caplog.text and "shares 4 of its 5 neurons" in caplog.text
    assert "small" not in caplog.text


# -- set algebra, IoU, listing -----------------------------------------------------------------------
def test_set_algebra_and_iou_on_hand_made_masks():
    a = _set([[1, 1, 0, 0], [1, 0, 0, 0]])
    b = _set([[0, 1, 1, 0], [1, 0, 0, 1]])
    assert (a | b).masks["ffn"].int().tolist() == [[1, 1, 1, 0], [1, 0, 0, 1]]
    assert (a & b).masks["ffn"].int().tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]
    assert (a - b).masks["ffn"].int().tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert (a | b).meta["op"] == "union"
    assert iou(a, b) == pytest.approx(2 / 5)
    assert iou(a, a) == 1.0
    assert iou(a, _set([[0, 0, 1, 1], [0, 1, 0, 0]])) == 0.0
    empty = _set([[0] * 4, [0] * 4])
    assert iou(empty, empty) == 1.0 and len(empty) == 0
    assert len(a) == 3 and a.size == 8 and a.fraction() == pytest.approx(3 / 8)


def test_set_algebra_refuses_other_layouts():
    a = _set([[1, 1, 0, 0]])
    with pytest.raises(NeuronSetMismatchError, match="different spaces"):
        _ = a | _set([[1, 1, 0]])
    with pytest.raises(NeuronSetMismatchError):
        iou(a, _set([[1, 1, 0, 0]], module="up", definition="linear"))
    with pytest.raises(TypeError):
        _ = a & {"ffn": a.masks["ffn"]}


def test_masks_are_validated():
    with pytest.raises(ValueError, match="torch.bool"):
        NeuronSet("ffn", {"ffn": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="layer counts"):
        NeuronSet(
            "linear",
            {
                "up": torch.zeros(2, 3, dtype=torch.bool),
                "down": torch.zeros(3, 3, dtype=torch.bool),
            },
        )
    with pytest.raises(ValueError, match="definition"):
        NeuronSet("neurons", {"ffn": torch.zeros(2, 3, dtype=torch.bool)})


def test_ids_and_neurons_agree_with_the_space():
    model = tiny_model("phi3", seed=0)  # linear definition: gate_up (160) and down (32)
    space = NeuronSpace(model, "linear")
    picks = [(0, "gate_up", 5), (0, "down", 0), (1, "gate_up", 159), (1, "down", 31)]
    s = NeuronSet.from_neurons(space, picks)
    ids = s.ids(space)
    assert ids.tolist() == sorted(space.neuron_id(*p) for p in picks)
    assert s.to_neurons(space) == [space.coord(int(i)) for i in ids]
    assert NeuronSet.from_ids(space, ids) == s
    assert s.indices("gate_up", 1).tolist() == [159]
    with pytest.raises(NeuronSetMismatchError):
        s.ids(NeuronSpace(model, "ffn"))


# -- save / load ---------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, llama):
    space = NeuronSpace(llama, "linear")
    scores = NeuronScores(
        "linear",
        {
            m: torch.rand(space.shape(m), generator=torch.Generator().manual_seed(i))
            for i, m in enumerate(space.modules)
        },
        {"task": "rte", "model": model_fingerprint(llama), "examples_hash": "1234"},
    )
    s = top_k(scores, k=10)
    path = s.save(tmp_path / "rte.safetensors")
    assert path == tmp_path / "rte.safetensors" and (tmp_path / "rte.json").is_file()
    back = NeuronSet.load(path, model=llama)
    assert back == s and back.definition == "linear" and back.modules == space.modules
    assert back.meta["task"] == "rte" and back.meta["examples_hash"] == "1234"
    assert back.meta["model_fingerprint"] == model_fingerprint(llama)
    # a folder works too
    s.save(tmp_path / "folder")
    assert sorted(os.listdir(tmp_path / "folder")) == ["neurons.json", "neurons.safetensors"]
    assert NeuronSet.load(tmp_path / "folder", space=space) == s


def test_load_reports_missing_or_foreign_files(tmp_path):
    s = _set([[1, 0]])
    s.save(tmp_path / "a.safetensors")
    (tmp_path / "a.json").unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        NeuronSet.load(tmp_path / "a.safetensors")
    NeuronScores("ffn", {"ffn": torch.rand(1, 2)}).save(tmp_path / "scores.safetensors")
    (tmp_path / "scores.json").write_text("{}")
    with pytest.raises(ValueError, match="not a taskneurons NeuronSet"):
        NeuronSet.load(tmp_path / "scores.safetensors")


def test_load_against_a_model_of_another_shape(tmp_path, llama):
    big = NeuronSet("ffn", {"ffn": torch.zeros(30, 1536, dtype=torch.bool)})
    big.save(tmp_path / "big.safetensors")
    with pytest.raises(NeuronSetMismatchError) as info:
        NeuronSet.load(tmp_path / "big.safetensors", model=llama)
    msg = str(info.value)
    assert "30 layers x 1536 units" in msg and "2 layers x 80 units" in msg


def test_load_against_another_definition(tmp_path, llama):
    s = NeuronSet.empty(NeuronSpace(llama, "linear"))
    s.save(tmp_path / "lin.safetensors")
    with pytest.raises(NeuronSetMismatchError, match="definitions differ: 'linear' vs 'ffn'"):
        NeuronSet.load(tmp_path / "lin.safetensors", space=NeuronSpace(llama, "ffn"))


def test_load_checks_the_model_fingerprint(tmp_path, llama):
    space = NeuronSpace(llama, "ffn")
    scores = NeuronScores(
        "ffn", {"ffn": torch.rand(space.shape("ffn"))}, {"model": model_fingerprint(llama)}
    )
    top_k(scores, k=5).save(tmp_path / "s.safetensors")
    other_weights = tiny_model("llama", seed=1)
    with pytest.raises(NeuronSetMismatchError, match="weights fingerprint"):
        NeuronSet.load(tmp_path / "s.safetensors", model=other_weights)
    assert len(NeuronSet.load(tmp_path / "s.safetensors", model=other_weights, strict=False)) == 8
    other_arch = tiny_model("llama", seed=0)
    other_arch.config.rms_norm_eps = 1e-3  # same shapes, another architecture hash
    with pytest.raises(NeuronSetMismatchError, match="architecture"):
        NeuronSet.load(tmp_path / "s.safetensors", model=other_arch, strict=False)


def test_no_half_written_file_on_failure(tmp_path, monkeypatch):
    import safetensors.torch

    s = _set([[1, 0, 1]])
    # meta that JSON cannot hold: fails before any file is touched
    bad = NeuronSet("ffn", s.masks, {"obj": object()})
    with pytest.raises(TypeError):
        bad.save(tmp_path / "bad.safetensors")
    assert os.listdir(tmp_path) == []
    # the tensor writer dies half-way: the previous good files stay, no temporary files remain
    s.save(tmp_path / "s.safetensors")
    before = (tmp_path / "s.safetensors").read_bytes(), (tmp_path / "s.json").read_text()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    changed = NeuronSet("ffn", {"ffn": torch.tensor([[0, 1, 0]], dtype=torch.bool)}, {"x": 1})
    with pytest.raises(OSError, match="disk full"):
        changed.save(tmp_path / "s.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["s.json", "s.safetensors"]
    assert ((tmp_path / "s.safetensors").read_bytes(), (tmp_path / "s.json").read_text()) == before
    monkeypatch.undo()
    assert NeuronSet.load(tmp_path / "s.safetensors") == s


def test_count_is_finite_for_real_sizes():
    # the paper's k = 10 on the embedded model's layout: 10 % of 30 x 1536
    vals = torch.arange(30 * 1536, dtype=torch.float32).reshape(30, 1536)
    s = top_k(NeuronScores("ffn", {"ffn": vals}), k=10)
    assert len(s) == 4608 and math.isclose(s.fraction(), 0.1)
    assert s.counts_per_layer()["ffn"][-3:].tolist() == [1536, 1536, 1536]
