"""The attribution check: rank agreement by hand, ablation effects against one-at-a-time
deactivation, and Spearman 1 where the first-order estimate is exact."""

from __future__ import annotations

import math

import pytest
import torch

from taskneurons.analysis.rank_agreement import missed_share, spearman, top
from taskneurons.data.load import load_task
from taskneurons.experiments.run_context import RunContext
from taskneurons.experiments.specificity.ablation_check import (
    AblationCheckResult,
    ablation_check_experiment,
)
from taskneurons.experiments.specificity.ablation_check_stage import AblationCheckConfig
from taskneurons.experiments.specificity.detect_stage import DetectConfig
from taskneurons.losses import per_example_loss
from taskneurons.models.loading import load_model
from taskneurons.neurons.ablation_effects import ablation_effects
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.neurons.intervention import deactivate
from taskneurons.neurons.neuron_set import NeuronSet
from taskneurons.neurons.space import Neuron, NeuronSpace

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_spearman_by_hand():
    # ranks (1, 2, 3, 4) vs (2, 1, 4, 3): d = (-1, 1, -1, 1), rho = 1 - 6*4/(4*15) = 0.6
    assert spearman([1, 2, 3, 4], [20, 10, 40, 30]) == pytest.approx(0.6)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties take average ranks: (1.5, 1.5, 3) vs (1, 2, 3): Pearson of the ranks = sqrt(3)/2
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 2], [1, 2]))  # too few
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # nothing to rank
    with pytest.raises(ValueError, match="3 values"):
        spearman([1, 2, 3], [1, 2])


def test_missed_share_by_hand():
    est = [9.0, 8.0, 7.0, 1.0, 0.5]
    true = [0.1, 5.0, 4.0, 6.0, 0.2]  # true top-2: positions 3, 1; estimate's: 0, 1
    assert top(true, 2) == {3, 1} and top(est, 2) == {0, 1}
    assert missed_share(est, true, 2) == 0.5
    assert missed_share(est, true, 3) == pytest.approx(1 / 3)  # {3, 1, 2} vs {0, 1, 2}
    assert missed_share(true, true, 2) == 0.0
    assert missed_share(est, true, 5) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        missed_share(est, true, 0)


def _batches(model, n=2):
    from test_attribution import random_batches

    return random_batches(model.config.vocab_size, n_batches=n, batch=3, seed=1)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("definition", ["ffn", "linear"])
@pytest.mark.parametrize("aggregate", ["example", "task"])
def test_effects_equal_deactivating_one_neuron_at_a_time(family, definition, aggregate):
    model = tiny_model(family)
    space = NeuronSpace(model, definition)
    g = torch.Generator().manual_seed(0)
    ids = torch.randperm(space.size, generator=g)[:7].tolist()
    neurons = [space.coord(i) for i in ids]
    batches = _batches(model)
    ours = ablation_effects(model, batches, space, neurons, aggregate, chunk=3)
    with torch.no_grad():
        base = [per_example_loss(model, b).double() for b in batches]
        for n, got in zip(neurons, ours.tolist(), strict=True):
            one = NeuronSet.from_neurons(space, [n])
            with deactivate(model, one, space=space):
                delta = torch.cat([per_example_loss(model, b).double() - b0
                                   for b, b0 in zip(batches, base, strict=True)])  # fmt: skip
            want = delta.mean().abs() if aggregate == "task" else delta.abs().mean()
            assert got == pytest.approx(float(want), rel=1e-4, abs=1e-9), n


def test_a_bad_chunk_is_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="chunk"):
        ablation_effects(model, _batches(model), NeuronSpace(model), [Neuron(0, "ffn", 0)], chunk=0)


def _linear_readout_model():
    """A tiny GPT-2 in float64 (its LayerNorms too) with every W2 scaled by 1e-6: one neuron
    moves the residual stream so little that the loss is linear in it, and ``|g·a|`` is the
    exact ``|ΔL|`` up to a relative 1e-6."""
    model = tiny_model("gpt2").double()
    with torch.no_grad():
        for block in model.transformer.h:
            block.mlp.c_proj.weight.mul_(1e-6)
    return model


def test_the_check_gives_spearman_1_where_the_estimate_is_exact(
    tiny_folder, task_folders, tmp_path
):  # the tiny tokenizer of tiny_folder fits every tiny model
    model, tok = _linear_readout_model(), load_model(str(tiny_folder))[1]
    tasks = [load_task(str(f)) for f in task_folders]
    detect = DetectConfig(attribution=AttributionConfig(batch_size=2))
    ctx = RunContext.of(model, tok, tasks, progress=False, detect=detect)
    cfg = AblationCheckConfig(per_layer=12, top_k=5, n_examples=4, chunk=5)
    res = ablation_check_experiment(ctx, cfg, tmp_path / "check")
    for row in res.rows:
        assert row[2] == pytest.approx(1.0) and row[3] == pytest.approx(1.0), row
        assert row[6] == 0.0, row  # nothing of the true top-k missed
    for task in res.tasks:
        for e in res.effects[task]:
            assert e["estimate"] == pytest.approx(e["true"], rel=1e-4, abs=1e-15)
    back = AblationCheckResult.load(tmp_path / "check")
    assert back.rows == res.rows and back.effects == res.effects
    assert back.meta["attribution"]["n_examples"] == 4


def test_the_check_is_seeded_and_finds_misses_on_a_plain_model(tiny_folder, task_folders, tmp_path):
    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(task_folders[0]))]
    ctx = RunContext.of(model, tok, tasks, progress=False)
    cfg = AblationCheckConfig(per_layer=6, top_k=3, n_examples=4)
    a = ablation_check_experiment(ctx, cfg, tmp_path / "a")
    b = ablation_check_experiment(ctx, cfg, tmp_path / "b")
    c = ablation_check_experiment(ctx, AblationCheckConfig(per_layer=6, top_k=3, n_examples=4,
                                                           seed=1), tmp_path / "c")  # fmt: skip
    assert a.effects == b.effects  # same seed, same neurons and values
    assert [e["unit"] for e in a.effects["mood"]] != [e["unit"] for e in c.effects["mood"]]
    n = len(a.effects["mood"])
    assert sum(e["random"] for e in a.effects["mood"]) == 6 * model.config.num_hidden_layers
    assert sum(e["top"] for e in a.effects["mood"]) == 3 and n >= 6 * 2
    assert -1.0 <= a.rows[0][2] <= 1.0


def test_a_rerun_measures_only_the_tasks_left(tiny_folder, task_folders, tmp_path, monkeypatch):
    """Each task's effects are kept as soon as they are measured: a rerun of the same settings
    (after an interrupt) reuses them; other settings measure again."""
    from taskneurons.experiments.specificity import ablation_check as module

    model, tok = load_model(str(tiny_folder))
    tasks = [load_task(str(f)) for f in task_folders]
    ctx = RunContext.of(model, tok, tasks, progress=False)
    cfg = AblationCheckConfig(per_layer=2, top_k=2, n_examples=4)
    first = ablation_check_experiment(ctx, cfg, tmp_path / "a")
    measured = []
    real = module._task_effects

    def counted(ctx, task, *args):
        measured.append(task.id)
        return real(ctx, task, *args)

    monkeypatch.setattr(module, "_task_effects", counted)
    again = ablation_check_experiment(ctx, cfg, tmp_path / "a")
    assert measured == [] and again.effects == first.effects and again.rows == first.rows
    other = ablation_check_experiment(ctx, AblationCheckConfig(per_layer=2, top_k=2, n_examples=4,
                                                               seed=1), tmp_path / "a")  # fmt: skip
    assert measured == [t.id for t in tasks] and other.effects != first.effects
