"""Work not repeated: per-task FT stages taken from the references, W-NCFT trained once for
both answering modes. Each shortcut must give exactly the long way's matrices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from taskneurons.continual import stage_loop as stages_module
from taskneurons.continual.registry import METHODS
from taskneurons.continual.stage_checkpoint import checkpoint_stage, read_checkpoint
from taskneurons.continual.strategies.pertask import FROM_REFERENCES, PerTaskFT
from taskneurons.continual.strategies.wncft import WNCFT
from taskneurons.experiments.continual.continual_stage import ContinualConfig, ContinualSuiteConfig
from taskneurons.experiments.continual.method_run import (
    continual_experiment,
    continual_experiments,
    shares_training,
)
from taskneurons.experiments.continual.suite import _jobs, continual_suite
from taskneurons.experiments.run_context import RunContext
from test_continual import (
    EVAL,
    TRAIN,
    Interrupt,
    animal_task,
    method_config,
    mood_task,
    people_task,
)

from tiny_models import tiny_model

# one torch thread (conftest.py): tiny models run far faster so on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tasks():
    return [mood_task(), animal_task(), people_task()]


def _config(name: str, cache, single_seed: int = 0, **kw) -> ContinualConfig:
    """Stage ``j`` of per-task FT trains as A(i) does when ``j == single_seed``."""
    return ContinualConfig(
        method=method_config(name=name, mode=kw.pop("mode", "given")),
        train=TRAIN,
        single_train=TRAIN.replace(method="full", seed=single_seed),
        eval=EVAL,
        n_train=8,
        n_test=6,
        reference_cache=str(cache),
        **kw,
    )


def _counting(monkeypatch, cls) -> list[str]:
    """Record the task id of every ``cls.train_task`` call."""
    calls: list[str] = []
    original = cls.train_task

    def counted(self, task, stage):
        calls.append(task.id)
        return original(self, task, stage)

    monkeypatch.setattr(cls, "train_task", counted)
    return calls


def _no_wall(stages: list[dict]) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "wall_s"} for s in stages]


# -- per-task FT from the references ------------------------------------------------------------
@pytest.mark.parametrize("derived,eval_unseen", [(0, True), (1, True), (1, False)])
def test_pertask_stage_from_references_equals_training_it(
    tok, tasks, tmp_path, monkeypatch, derived, eval_unseen
):
    cfg = _config("pertask", tmp_path / "cache.json", single_seed=derived, eval_unseen=eval_unseen)
    calls = _counting(monkeypatch, PerTaskFT)
    short = continual_experiment(
        tiny_model("llama"), tok, tasks, cfg, tmp_path / "s", progress=False
    )
    assert calls == [t.id for j, t in enumerate(tasks) if j != derived]
    with monkeypatch.context() as m:  # the long way: every stage trained
        m.setattr(PerTaskFT, "reference_stages", lambda self, single, n: [])
        long = continual_experiment(
            tiny_model("llama"), tok, tasks, cfg, tmp_path / "l", progress=False
        )
    assert len(calls) == 2 + 3
    np.testing.assert_array_equal(short.matrix, long.matrix)
    assert short.to_dict()["metrics"] == long.to_dict()["metrics"]
    assert short.stored_bytes_per_task == long.stored_bytes_per_task > 0
    assert short.stages[derived] == {
        "derived_from": FROM_REFERENCES,
        "method": "full",
        "seed": derived,
    }
    assert all("derived_from" not in s for j, s in enumerate(short.stages) if j != derived)
    assert short.matrix[derived, derived] == short.single[tasks[derived].id]
    saved = json.loads((tmp_path / "s" / "result.json").read_text())
    assert saved["stages"][derived]["derived_from"] == FROM_REFERENCES
    state = read_checkpoint(tmp_path / "s" / "checkpoint").state
    assert state["derived"] == [tasks[derived].id]
    assert not any(k.startswith(f"task{derived}.") for k in state)


@pytest.mark.parametrize("name", ["seqft", "seqlora", "ncft", "wncft"])
def test_other_methods_take_no_stage_from_the_references(tok, tasks, tmp_path, name):
    """The base hooks: no reference stage, nothing derived, derive_stage refused; even when
    ``single_train`` equals the stage config (which makes per-task FT derive stage 0)."""
    cfg = _config(name, tmp_path / "cache.json")
    method = METHODS[name](tiny_model("llama"), tok, cfg.method, cfg.train)
    single = cfg.train.replace(method="full", merge=False)
    assert method.reference_stages(single, 3) == []
    assert stages_module.reference_stages(method, single, 3) == set()
    assert method.derived == set()
    with pytest.raises(NotImplementedError, match="no stage from the references"):
        method.derive_stage(tasks[0], 0)
    pertask = PerTaskFT(tiny_model("llama"), tok, cfg.method, cfg.train)
    assert stages_module.reference_stages(pertask, single, 3) == {0}


def test_pertask_trains_every_stage_when_the_configs_differ(tok, tasks, tmp_path, monkeypatch):
    cfg = _config("pertask", tmp_path / "cache.json")
    method = PerTaskFT(tiny_model("llama"), tok, cfg.method, cfg.train)
    assert method.reference_stages(cfg.single_train, 3) == [0]
    assert method.reference_stages(cfg.single_train.replace(seed=2), 3) == [2]
    for change in ({"lr": 2e-2}, {"max_steps": 2}, {"lora_r": 4}, {"method": "lora"}):
        assert method.reference_stages(cfg.single_train.replace(**change), 3) == [], change
    calls = _counting(monkeypatch, PerTaskFT)
    other = cfg.replace(single_train=cfg.single_train.replace(lr=2e-2))
    res = continual_experiment(tiny_model("llama"), tok, tasks, other, tmp_path, progress=False)
    assert calls == [t.id for t in tasks]
    assert all("derived_from" not in s for s in res.stages)


def test_pertask_resumes_across_a_derived_stage(tok, tasks, tmp_path):
    cfg = _config("pertask", tmp_path / "cache.json", single_seed=1)
    whole = continual_experiment(
        tiny_model("llama"), tok, tasks, cfg, tmp_path / "a", progress=False
    )

    def stop(stage, matrix):
        if stage == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        continual_experiment(
            tiny_model("llama"), tok, tasks, cfg, tmp_path / "b", progress=False, on_stage=stop
        )
    again = continual_experiment(
        tiny_model("llama"), tok, tasks, cfg, tmp_path / "b", resume=True, progress=False
    )
    assert again.resumed_from == 2
    np.testing.assert_array_equal(again.matrix, whole.matrix)
    assert again.stages[1]["derived_from"] == FROM_REFERENCES


def test_pertask_refuses_to_answer_a_derived_task(tok, tasks):
    method = PerTaskFT(tiny_model("llama"), tok, method_config(name="pertask"), TRAIN)
    method.derive_stage(tasks[0], 0)
    assert method.trained == [tasks[0].id] and method.stored_bytes_per_task() > 0
    with pytest.raises(ValueError, match="reference scores"):
        with method.answering(tasks[0]):
            pass


# -- W-NCFT trained once, scored with the task given and inferred -------------------------------
def _pair(cache) -> list[ContinualConfig]:
    return [_config("wncft", cache, mode=mode) for mode in ("given", "inferred")]


def test_wncft_given_and_inferred_share_one_training(tok, tasks, tmp_path, monkeypatch):
    given, inferred = _pair(tmp_path / "cache.json")
    assert shares_training(given, inferred) and not shares_training(given, given.replace(seed=1))
    calls = _counting(monkeypatch, WNCFT)
    alone = [
        continual_experiment(
            tiny_model("llama"), tok, tasks, c, tmp_path / f"alone{n}", progress=False
        )
        for n, c in enumerate((given, inferred))
    ]
    assert len(calls) == 6
    modes: list[str] = []  # the answering mode of every scoring (the matrices may not tell)
    score = stages_module.score_task

    def spy(method, *args, **kw):
        modes.append(method.config.mode)
        return score(method, *args, **kw)

    monkeypatch.setattr(stages_module, "score_task", spy)
    runs = [(given, tmp_path / "given"), (inferred, tmp_path / "inferred")]
    shared = continual_experiments(tiny_model("llama"), tok, tasks, runs, progress=False)
    assert len(calls) == 9  # trained once: one call per stage
    assert modes == (["given"] * 3 + ["inferred"] * 3) * 3
    for a, s in zip(alone, shared, strict=True):
        np.testing.assert_array_equal(s.matrix, a.matrix)
        assert (s.method, s.mode, s.resumed_from) == (a.method, a.mode, None)
        assert s.to_dict()["metrics"] == a.to_dict()["metrics"]
        assert _no_wall(s.stages) == _no_wall(a.stages)
        assert s.stored_bytes_per_task == a.stored_bytes_per_task
        ca, cs = (
            read_checkpoint(a.out_dir / "checkpoint"),
            read_checkpoint(s.out_dir / "checkpoint"),
        )
        assert cs.record["run"] == ca.record["run"] and cs.record["matrix"] == ca.record["matrix"]
        assert sorted(cs.state) == sorted(ca.state)
        for key, value in ca.state.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(cs.state[key], value), key
        for f in ("matrix.json", "metrics.json", "tasks.json", "heatmap.png"):
            assert (s.out_dir / f).is_file(), f
    with pytest.raises(ValueError, match="more than method.mode"):
        continual_experiments(
            tiny_model("llama"), tok, tasks, [runs[0], (given.replace(seed=1), tmp_path / "x")]
        )


def test_shared_wncft_resumes(tok, tasks, tmp_path):
    given, inferred = _pair(tmp_path / "cache.json")
    whole = continual_experiments(
        tiny_model("llama"),
        tok,
        tasks,
        [(given, tmp_path / "a1"), (inferred, tmp_path / "a2")],
        progress=False,
    )

    def stop(stage, matrix):
        if stage == 0:
            raise Interrupt

    runs = [(given, tmp_path / "b1"), (inferred, tmp_path / "b2")]
    with pytest.raises(Interrupt):
        continual_experiments(tiny_model("llama"), tok, tasks, runs, progress=False, on_stage=stop)
    assert [checkpoint_stage(o / "checkpoint") for _, o in runs] == [0, 0]
    again = continual_experiments(
        tiny_model("llama"), tok, tasks, runs, resume=True, progress=False
    )
    for w, a in zip(whole, again, strict=True):
        assert a.resumed_from == 1
        np.testing.assert_array_equal(a.matrix, w.matrix)
    with pytest.raises(ValueError, match="different stages"):  # one folder a stage ahead
        continual_experiments(
            tiny_model("llama"), tok, tasks, [runs[0], (inferred, tmp_path / "c")], resume=True
        )


def test_suite_trains_wncft_once_and_keeps_the_rows_in_order(tok, tasks, tmp_path, monkeypatch):
    base = _config("wncft", tmp_path / "cache.json")
    fields = {
        k: getattr(base, k)
        for k in ("method", "train", "single_train", "eval", "n_train", "n_test")
    }
    suite = ContinualSuiteConfig(methods=["wncft-inferred", "wncft"], **fields)
    assert [[label for label, _ in job] for job in _jobs(suite, tmp_path / "s", False)] == [
        ["wncft-inferred", "wncft"]
    ]
    calls = _counting(monkeypatch, WNCFT)
    ctx = RunContext.of(tiny_model("llama"), tok, tasks, progress=False)
    res = continual_suite(ctx, suite, tmp_path / "s")
    assert len(calls) == 3
    assert list(res.results) == ["wncft-inferred", "wncft"]
    assert [r.mode for r in res.results.values()] == ["inferred", "given"]
    alone = continual_experiment(
        tiny_model("llama"), tok, tasks, suite.runs()[1][1], tmp_path / "alone", progress=False
    )
    np.testing.assert_array_equal(res.results["wncft"].matrix, alone.matrix)
    # resuming with the folders at different stages: each resumes alone; the finished one
    # (wncft-inferred) is read back, the one without checkpoint or result trains again
    ckpt = tmp_path / "s" / "wncft" / "checkpoint"
    for path in [*ckpt.iterdir(), tmp_path / "s" / "wncft" / "result.json"]:
        path.unlink()
    jobs = _jobs(suite, tmp_path / "s", True)
    assert [[label for label, _ in job] for job in jobs] == [["wncft-inferred"], ["wncft"]]
    ctx = RunContext.of(tiny_model("llama"), tok, tasks, progress=False, resume=True)
    before = len(calls)
    again = continual_suite(ctx, suite, tmp_path / "s")
    assert len(calls) == before + 3  # wncft's three stages only
    assert again.results["wncft"].resumed_from is None
    for label in suite.methods:
        np.testing.assert_array_equal(again.results[label].matrix, res.results[label].matrix)


def test_suite_methods_after_a_lora_method_start_from_the_base_model(tok, tasks, tmp_path):
    """SeqLoRA / O-LoRA / EPI inject LoRA layers (and adapter names) into the model: the next
    method must not see them (EPI after O-LoRA once found its adapter names taken)."""
    base = _config("seqlora", tmp_path / "cache.json")
    fields = {k: getattr(base, k) for k in ("train", "single_train", "eval", "n_train", "n_test")}
    suite = ContinualSuiteConfig(methods=["seqlora", "olora", "epi", "seqft"], **fields)
    model = tiny_model("llama")
    res = continual_suite(
        RunContext.of(model, tok, tasks[:2], progress=False), suite, tmp_path / "s"
    )
    for label, cfg in suite.runs():
        alone = continual_experiment(
            tiny_model("llama"), tok, tasks[:2], cfg, tmp_path / label, progress=False
        )
        np.testing.assert_array_equal(res.results[label].matrix, alone.matrix)
