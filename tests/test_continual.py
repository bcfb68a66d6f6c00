"""Continual learning: NCFT/W-NCFT invariants, O-LoRA's loss, resume, every method end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from taskneurons.continual.base import run_stage, score_task
from taskneurons.continual.method_config import MethodConfig
from taskneurons.continual.registry import METHODS, make_method
from taskneurons.continual.slices import combine, layout_of, read_slices, union_layout
from taskneurons.continual.strategies.olora import olora_terms
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.tasks import Example, Task
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.continual.continual_stage import ContinualConfig
from taskneurons.experiments.continual.method_run import continual_experiment, order_tasks
from taskneurons.neurons.attribution_config import AttributionConfig
from taskneurons.training.neuron_delta import selection_masks
from taskneurons.training.train_config import TrainConfig

from tiny_models import tiny_model

# one torch thread (conftest.py): tiny models run far faster so on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = PromptConfig(max_length=48)
TRAIN = TrainConfig(lr=1e-2, max_steps=3, batch_size=4, prompt=PROMPT)
EVAL = EvalConfig(batch_size=8, prompt=PROMPT)


def method_config(**kw) -> MethodConfig:
    base = dict(
        k=20.0,
        attribution=AttributionConfig(n_examples=8, batch_size=8, prompt=PROMPT),
        n_vector_samples=8,
        feature_batch_size=8,
        lambda_l2=0.01,
    )
    name = kw.pop("name", MethodConfig.default)
    options = {k: v for k, v in {**base, **kw}.items() if k in MethodConfig.keys(name)}
    return MethodConfig.make(name, **options)


def _task(task_id: str, pairs: list[tuple[str, str]], labels: list[str]) -> Task:
    examples = [Example(x, y) for x, y in pairs]
    return Task(
        id=task_id,
        kind="classification",
        instruction="Classify the text",
        labels=labels,
        metric="accuracy",
        train=examples,
        test=examples[:6],
    )


def mood_task() -> Task:
    nouns = ["movie", "film", "book", "food", "story", "plot"]
    adjs = [("good", "good"), ("bad", "bad"), ("fun", "good"), ("boring", "bad")]
    pairs = [(f"the {n} was very {a}", y) for i, n in enumerate(nouns) for a, y in adjs[i % 2 :: 2]]
    return _task("mood", pairs, ["good", "bad"])


def animal_task() -> Task:
    pairs = [
        (f"{a} sat on {c} mat", "yes" if a == "cat" else "no")
        for a in ("cat", "dog")
        for c in ("red", "blue", "a", "one", "two", "three")
    ]
    return _task("animal", pairs, ["yes", "no"])


def people_task() -> Task:
    pairs = [
        (f"{p} {v} it", "positive" if v in ("loved", "liked") else "negative")
        for p in ("I", "you", "we")
        for v in ("loved", "hated", "liked")
    ]
    return _task("people", pairs, ["positive", "negative"])


@pytest.fixture(scope="module")
def tasks():
    return [mood_task(), animal_task()]


def _ids(tok) -> torch.Tensor:
    return torch.tensor(
        [tok("the movie was good")["input_ids"], tok("cat sat on mat")["input_ids"]]
    )


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# -- NCFT / W-NCFT ------------------------------------------------------------------------------
def test_ncft_changes_only_the_current_tasks_neurons(tok, tasks):
    model = tiny_model("llama")
    method = make_method(method_config(name="ncft"), model, tok, TRAIN)
    for stage, task in enumerate(tasks):
        before = _params(model)
        run_stage(method, task, stage)
        masks = selection_masks(model, method.neuron_sets[task.id])
        changed_somewhere = False
        for name, p in model.named_parameters():
            changed = p.detach() != before[name]
            mask = masks.get(name, torch.zeros_like(changed))
            assert not (changed & ~mask).any(), f"stage {stage}: {name} changed off the neurons"
            changed_somewhere |= bool(changed.any())
        assert changed_somewhere, f"stage {stage} changed nothing"


def test_wncft_with_one_task_is_ncft(tok, tasks):
    ids = _ids(tok)
    base = tiny_model("llama")
    ncft = make_method(method_config(name="ncft"), tiny_model("llama"), tok, TRAIN)
    wncft = make_method(method_config(name="wncft"), tiny_model("llama"), tok, TRAIN)
    run_stage(ncft, tasks[0], 0)
    run_stage(wncft, tasks[0], 0)
    # between stages W-NCFT holds the base weights
    assert torch.equal(_logits(wncft.model, ids), _logits(base, ids))
    expected = _logits(ncft.model, ids)
    for task in tasks:  # any task's weights select the one version
        with wncft.answering(task) as m:
            assert torch.equal(_logits(m, ids), expected)
    route = wncft.routes(["cat sat on mat"])[0]
    with wncft.answering(None, route) as m:
        assert torch.equal(_logits(m, ids), expected)
    assert torch.equal(_logits(wncft.model, ids), _logits(base, ids))


def test_wncft_identical_vectors_average_the_versions(tok, tasks):
    base = tiny_model("llama")
    cfg = method_config(name="wncft", k=30.0, weighting="renormalised")
    method = make_method(cfg, tiny_model("llama"), tok, TRAIN)
    for stage, task in enumerate(tasks):
        run_stage(method, task, stage)
    same = method.vectors[tasks[0].id]
    method.vectors = {t.id: same.clone() for t in tasks}
    # expected: base, with task t's version on its neurons, the mean where both own a neuron
    full = []
    for version in method.versions:
        m = tiny_model("llama")
        for name, (dim, pos, values) in version.items():
            dict(m.named_parameters())[name].data.index_copy_(dim, pos, values)
        full.append(_params(m))
    masks = [selection_masks(base, method.neuron_sets[t.id]) for t in tasks]
    overlap = False
    with method.answering(tasks[0]) as m:
        for name, p in m.named_parameters():
            m1 = masks[0].get(name, torch.zeros(p.shape, dtype=torch.bool))
            m2 = masks[1].get(name, torch.zeros(p.shape, dtype=torch.bool))
            overlap |= bool((m1 & m2).any())
            want = dict(base.named_parameters())[name].detach()
            want = torch.where(m1, full[0][name], want)
            want = torch.where(m2, full[1][name], want)
            want = torch.where(m1 & m2, (full[0][name] + full[1][name]) / 2, want)
            torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-7)
    assert overlap, "the two tasks share no neuron: the test would not see the averaging"


def test_wncft_inferred_equals_given_on_separable_tasks(tok, tasks):
    cfg = method_config(name="wncft", temperature=1e-4)
    method = make_method(cfg, tiny_model("llama"), tok, TRAIN)
    for stage, task in enumerate(tasks):
        run_stage(method, task, stage)
    for i, task in enumerate(tasks):
        routes = method.routes([ex.input for ex in task.test])
        assert all(int(np.argmax(r)) == i for r in routes), "features do not identify the task"
        layout = union_layout([layout_of(v) for v in method.versions])
        with method.answering(task) as m:
            given = read_slices(m, layout)
        for route in routes:
            with method.answering(None, route) as m:
                inferred = read_slices(m, layout)
            for name in given:
                assert torch.equal(given[name][2], inferred[name][2])
        scores = {}
        for mode in ("given", "inferred"):
            method.config = cfg.replace(mode=mode)
            scores[mode] = score_task(method, tok, task, task.test, EVAL)
        assert scores["given"] == scores["inferred"]


def test_combine_weights_each_position_over_the_tasks_that_cover_it():
    pos = torch.tensor
    v1 = {"w": (0, pos([0, 1]), torch.tensor([[1.0, 1.0], [2.0, 2.0]]))}
    v2 = {"w": (0, pos([1, 2]), torch.tensor([[4.0, 4.0], [8.0, 8.0]]))}
    out = combine([v1, v2], torch.tensor([0.0, 0.0]))  # uniform
    dim, positions, values = out["w"]
    assert dim == 0 and positions.tolist() == [0, 1, 2]
    assert values.tolist() == [[1.0, 1.0], [3.0, 3.0], [8.0, 8.0]]  # one owner: its version
    far = combine([v1, v2], torch.tensor([0.0, -1e6]))  # weight of task 2 underflows to 0
    assert far["w"][2].tolist() == [[1.0, 1.0], [2.0, 2.0], [8.0, 8.0]]  # no 0/0
    w = torch.softmax(torch.tensor([1.0, 0.0], dtype=torch.float64), 0)
    mixed = combine([v1, v2], torch.tensor([1.0, 0.0]))["w"][2][1]
    torch.testing.assert_close(mixed, (w[0] * 2 + w[1] * 4).float().expand(2))


def test_epi_routes_inputs_to_their_tasks(tok, tasks):
    method = make_method(
        method_config(name="epi"), tiny_model("llama"), tok, TRAIN.replace(lora_r=4)
    )
    for stage, task in enumerate(tasks):
        run_stage(method, task, stage)
    for task in tasks:
        assert set(method.routes([ex.input for ex in task.test])) == {task.id}
        with method.answering(None, task.id) as m:
            assert method.stack.peft.active_adapters == [f"task{method.trained.index(task.id)}"]
            assert m is method.stack.model


def test_configs_check_their_values(tasks):
    with pytest.raises(ValueError, match="method must be one of"):
        MethodConfig(name="ewc")
    cfg = ContinualConfig(
        order=["animal", "mood"], method=MethodConfig.make("wncft", mode="inferred")
    )
    assert ContinualConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="single_train"):
        ContinualConfig(single_train=TrainConfig(method="neurons"))
    with pytest.raises(ValueError, match="not loaded"):
        order_tasks(tasks, ["mood", "qqp"])


# -- O-LoRA -------------------------------------------------------------------------------------
def _direct_olora(peft, new: str, old: str, lam_orth: float, lam_l2: float) -> torch.Tensor:
    """The O-LoRA repository's loop, on PEFT's parameter names."""
    params = dict(peft.named_parameters())
    orth = torch.zeros(())
    for name, param in params.items():
        if f"lora_A.{old}." in name:
            param_ = params[name.replace(f"lora_A.{old}.", f"lora_A.{new}.")]
            orth = orth + torch.abs(torch.mm(param, param_.T)).sum()
    l2 = sum(torch.norm(p, p=2) for n, p in params.items() if f".{new}." in n and "lora_" in n)
    return lam_orth * orth + lam_l2 * l2


def test_olora_loss_matches_direct_computation_and_earlier_loras_stay_frozen(tok, tasks):
    cfg = method_config(name="olora", lambda_orth=0.5, lambda_l2=0.1)
    method = make_method(cfg, tiny_model("llama"), tok, TRAIN.replace(lora_r=4))
    run_stage(method, tasks[0], 0)
    stack = method.stack
    old = {n: p.detach().clone() for n, p in stack.parameters("task0").items()}
    base = {n: p.detach().clone() for n, p in stack.peft.named_parameters() if "lora_" not in n}
    method.before_task(tasks[1], 1)
    with torch.no_grad():  # B = 0 at the start: give the new LoRA a nonzero B for the L2 term
        for n, p in stack.parameters("task1").items():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    got = method.regulariser("task1", ["task0"])
    want = _direct_olora(stack.peft, "task1", "task0", 0.5, 0.1)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    orth, l2 = olora_terms(stack, "task1", ["task0"], "paper")
    sq = sum(
        (a_old @ a_new.T).pow(2).sum()
        for (a_old, _), (a_new, _) in zip(
            stack.matrices("task0").values(), stack.matrices("task1").values(), strict=True
        )
    )
    torch.testing.assert_close(orth, sq)
    assert all(not p.requires_grad for p in stack.parameters("task0").values())
    method.train_task(tasks[1], 1)
    method.after_task(tasks[1], 1)
    for n, p in stack.parameters("task0").items():
        assert torch.equal(p.detach(), old[n]), f"{n} changed in the next stage"
    for n, p in stack.peft.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p.detach(), base[n]), f"base parameter {n} changed"
    assert stack.peft.active_adapters == ["task0", "task1"]


# -- the experiment -----------------------------------------------------------------------------
def _config(name: str, cache, **method_kw) -> ContinualConfig:
    return ContinualConfig(
        method=method_config(name=name, **method_kw),
        train=TRAIN.replace(lora_r=4),
        single_train=TRAIN.replace(method="full"),
        eval=EVAL,
        n_train=8,
        n_test=6,
        reference_cache=str(cache),
    )


class Interrupt(RuntimeError):
    pass


@pytest.mark.parametrize(
    "name,kw",
    [(name, {}) for name in METHODS] + [("wncft", {"mode": "inferred"})],
    ids=[*METHODS, "wncft-inferred"],
)
def test_resume_after_a_stage_gives_the_same_matrix(tok, tmp_path, name, kw):
    tasks = [mood_task(), animal_task(), people_task()]
    cfg = _config(name, tmp_path / "cache.json", **kw)
    whole = continual_experiment(
        tiny_model("llama"), tok, tasks, cfg, tmp_path / "a", progress=False
    )

    def stop(stage, matrix):
        if stage == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        continual_experiment(
            tiny_model("llama"), tok, tasks, cfg, tmp_path / "b", progress=False, on_stage=stop
        )
    with pytest.raises(ValueError, match="resume=True"):
        continual_experiment(tiny_model("llama"), tok, tasks, cfg, tmp_path / "b", progress=False)
    again = continual_experiment(
        tiny_model("llama"), tok, tasks, cfg, tmp_path / "b", resume=True, progress=False
    )
    assert again.resumed_from == 1
    np.testing.assert_array_equal(again.matrix, whole.matrix)
    assert again.to_dict()["metrics"] == whole.to_dict()["metrics"]
    other = cfg.replace(seed=1)
    with pytest.raises(ValueError, match="another run"):
        continual_experiment(tiny_model("llama"), tok, tasks, other, tmp_path / "b", resume=True)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("reference") / "reference_cache.json"


@pytest.mark.parametrize(
    "name,kw",
    [(name, {}) for name in METHODS] + [("wncft", {"mode": "inferred"})],
    ids=[*METHODS, "wncft-inferred"],
)
def test_every_method_end_to_end(tok, tasks, tmp_path, shared_cache, name, kw):
    cfg = _config(name, shared_cache, **kw)
    res = continual_experiment(tiny_model("llama"), tok, tasks, cfg, tmp_path, progress=False)
    assert res.matrix.shape == (2, 2) and np.isfinite(res.matrix).all()
    assert ((res.matrix >= 0) & (res.matrix <= 100)).all()
    assert set(res.metrics) == {"cl", "bwt", "fwt", "forgetting"}
    assert np.isfinite([res.metrics["cl"], res.metrics["bwt"], res.metrics["fwt"]]).all()
    assert len(res.stages) == 2 and res.stages[0]["steps"] == 3
    for f in ("matrix.md", "matrix.csv", "matrix.json", "metrics.md", "tasks.csv", "heatmap.png"):
        assert (tmp_path / f).is_file(), f
    record = json.loads((tmp_path / "continual_config.json").read_text())
    assert record["config"]["method"]["name"] == name and record["order"] == ["mood", "animal"]
    cache = json.loads(shared_cache.read_text())
    assert len(cache["entries"]) == 4  # A(i) and b(i) of two tasks, reused by every method
    assert res.label in res.markdown()
    stored = res.stored_bytes_per_task
    assert (stored > 0) == (name in ("olora", "epi", "pertask", "wncft")), stored
    if name == "pertask":  # the task's own model: a(i, i) is A(i) (same training knobs)
        assert res.matrix[0, 0] == res.single["mood"]


def test_each_method_takes_only_its_own_options():
    from taskneurons.config import ConfigError
    from taskneurons.experiments.continual.continual_stage import ContinualSuiteConfig

    with pytest.raises(ConfigError, match="SeqftConfig: unknown key 'k'"):
        MethodConfig.make("seqft", k=5)  # NCFT's option is not SeqFT's
    suite = ContinualSuiteConfig.from_dict(
        {"methods": ["seqft", "olora", "wncft-inferred"], "method": {"k": 5, "lambda_orth": 0.1}}
    )
    runs = dict(suite.runs())
    assert runs["seqft"].method == MethodConfig.make("seqft")
    assert runs["olora"].method.lambda_orth == 0.1 and not hasattr(runs["olora"].method, "k")
    wncft = runs["wncft-inferred"].method
    assert (wncft.k, wncft.mode, wncft.seed) == (5.0, "inferred", suite.seed)
    assert wncft.attribution.prompt == suite.train.prompt  # the suite's (fitted) prompt
    with pytest.raises(ConfigError, match="method.lambda_orth: an option of olora; none of"):
        ContinualSuiteConfig.from_dict({"methods": ["ncft"], "method": {"lambda_orth": 0.1}})
    with pytest.raises(ConfigError, match=r"methods: unknown \['ewc'\]; known: \['epi'"):
        ContinualSuiteConfig.from_dict({"methods": ["ewc"]})


def test_a_finished_run_is_read_back_without_its_checkpoint(tok, tmp_path, monkeypatch):
    """Only the small result files of a long run travel between machines: resuming a finished
    run whose checkpoint is gone reads it back (no training, same matrix); another config or
    no ``resume`` runs it again."""
    import shutil

    from taskneurons.continual.strategies.seqft import SeqFT

    tasks = [mood_task(), animal_task()]
    cfg = _config("seqft", tmp_path / "cache.json")
    whole = continual_experiment(
        tiny_model("llama"), tok, tasks, cfg, tmp_path / "a", progress=False
    )
    shutil.rmtree(tmp_path / "a" / "checkpoint")
    trained = []
    monkeypatch.setattr(SeqFT, "train_task", lambda self, *a, **k: trained.append(1) or {})
    again = continual_experiment(
        tiny_model("llama"), tok, tasks, cfg, tmp_path / "a", resume=True, progress=False
    )
    assert trained == []
    np.testing.assert_array_equal(again.matrix, whole.matrix)
    assert again.to_dict() == whole.to_dict()
    other = cfg.replace(seed=1)  # another record: run afresh (here: the patched training)
    continual_experiment(
        tiny_model("llama"), tok, tasks, other, tmp_path / "a", resume=True, progress=False
    )
    assert trained
