"""``taskneurons estimate`` (issue 26, build 4): shapes, counts, the CLI, and a timed tiny run.

Oracles: parameter counts of real and tiny models (Llama-2-7b's published 6,738,415,616 minus
its norm weights; ``numel`` of a tiny model's matrices), evaluation counts worked out by hand
from the deactivation stage's conditions, and the measured stage times of a tiny run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from taskneurons.cli import main
from taskneurons.experiments.estimate.cost_model import estimate_stage
from taskneurons.experiments.estimate.devices import GPUS, cpu_device, device
from taskneurons.experiments.estimate.shapes import KNOWN_SHAPES, model_shape
from taskneurons.experiments.estimate.stage_work import stage_work
from taskneurons.experiments.estimate.work import TaskSize
from taskneurons.experiments.experiment_file import ExperimentFile
from taskneurons.experiments.runner import run_experiment

from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def test_llama2_7b_parameter_count():
    # published count 6,738,415,616 includes 65 RMSNorm weights of 4096 (2 per layer + final)
    assert KNOWN_SHAPES["meta-llama/Llama-2-7b-hf"].n_params == 6_738_415_616 - 65 * 4096


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3", "bloom"])
def test_shape_from_config_counts_the_matrices(tmp_path, family):
    model = tiny_model(family)
    model.save_pretrained(tmp_path)
    shape = model_shape(str(tmp_path))
    matrices = {id(p): p.numel() for p in model.parameters() if p.dim() == 2}
    assert shape.n_params == sum(matrices.values())
    assert shape.n_layers == 2 and shape.d_model == 32


def _size(tid: str, kind: str = "classification") -> TaskSize:
    return TaskSize(tid, kind, 100, 50, 40.0, 2.0, 2, 1, 5)


def test_deactivation_counts():
    """T tasks: original, random, T matrix cells, others = T + 3 evaluations each; a
    ``specific`` selection adds its general set (T + 4)."""
    spec = {"experiment": "deactivate", "tasks": ["a"]}
    spec["deactivate"] = {"n_test": 20, "eval": {"batch_size": 8}}
    file = ExperimentFile.from_dict(spec)
    sizes = [_size(t) for t in "abc"]
    work = stage_work("deactivate", file, sizes, KNOWN_SHAPES["smollm2-135m"])
    assert sum(j.n for j in work.jobs) == 3 * (3 + 3) * 3  # 3 batches of 8 in 20 examples
    assert {j.kind for j in work.jobs} == {"forward"}
    specific = ExperimentFile.from_dict({**spec, "detect": {"selection": {"method": "specific"}}})
    work = stage_work("deactivate", specific, sizes, KNOWN_SHAPES["smollm2-135m"])
    assert sum(j.n for j in work.jobs) == 3 * (3 + 4) * 3
    gen = stage_work("deactivate", file, [_size("g", "generation")], KNOWN_SHAPES["smollm2-135m"])
    kinds = {j.kind: j.n for j in gen.jobs}
    # one task: original, random and its own cell (no others, general counted only for T > 1)
    assert kinds == {"forward": 3 * 3, "decode": 3 * 3 * 5}


def test_budget_crosstrain_and_ablation_check_counts():
    """Counted by hand from each stage's loops (tasks of 100 train / 50 test, 42 tokens)."""
    smol = KNOWN_SHAPES["smollm2-135m"]
    sizes = [_size(t) for t in "ab"]
    budget = ExperimentFile.from_dict({
        "experiment": ["detect", "budget"], "tasks": ["a", "b"],
        "budget": {"tasks": ["a"], "optimizers": ["sgd"], "lrs": [0.1], "steps": [2, 6],
                   "k": [1, 2], "seeds": [0, 1], "n_test": 20, "n_train": 32,
                   "train": {"batch_size": 4}, "eval": {"batch_size": 8}},
    })  # fmt: skip
    work = stage_work("budget", budget, sizes, smol)
    trains = [j for j in work.jobs if j.kind == "train_neurons"]
    # task a only: 2 k x (own + 2 random) runs of max(steps) = 6 steps of 4 examples
    assert [j.n for j in trains] == [6] * 6 and trains[0].tokens == 6 * 4 * 42
    # zero-shot once, then 6 runs x 2 scored steps, 3 batches of 8 in 20 examples each
    assert sum(j.n for j in work.jobs if j.kind == "forward") == (1 + 6 * 2) * 3
    assert not [j for j in work.jobs if j.kind == "attribution"]  # detect scored them
    alone = ExperimentFile.from_dict({**budget.to_dict(), "experiment": "budget"})
    assert len([j for j in stage_work("budget", alone, sizes, smol).jobs
                if j.kind == "attribution"]) == 2  # fmt: skip
    cross = ExperimentFile.from_dict({
        "experiment": ["detect", "crosstrain"], "tasks": ["a", "b"],
        "crosstrain": {"n_train": 16, "n_test": 20, "train": {"batch_size": 8, "epochs": 1},
                       "eval": {"batch_size": 8}},
    })  # fmt: skip
    work = stage_work("crosstrain", cross, sizes, smol)
    assert [j.n for j in work.jobs if j.kind == "train_neurons"] == [2] * 4  # 2 x 2 trainings
    assert sum(j.n for j in work.jobs if j.kind == "forward") == (2 + 4) * 3
    check = ExperimentFile.from_dict({
        "experiment": "ablation_check", "tasks": ["a", "b"],
        "detect": {"attribution": {"batch_size": 4}},
        "ablation_check": {"per_layer": 2, "top_k": 3, "n_examples": 8, "chunk": 5},
    })  # fmt: skip
    work = stage_work("ablation_check", check, sizes, smol)
    forward = [j for j in work.jobs if j.kind == "forward"]
    # per task: (2 x 30 layers + 3 top + 1 clean) forwards of 2 batches of 4 examples
    assert [j.n for j in forward] == [64 * 2] * 2 and forward[0].tokens == 64 * 8 * 42
    assert [j.n for j in work.jobs if j.kind == "attribution"] == [2, 2]
    spec = {
        "experiment": "multitask", "tasks": ["a", "b"],
        "multitask": {"n_train": 16, "train": {"batch_size": 8},
                      "detect": {"k": 1, "selection": {"method": "specific", "m": None}},
                      "deactivate": {"n_test": 20, "eval": {"batch_size": 8}}},
    }  # fmt: skip
    alone = stage_work("multitask", ExperimentFile.from_dict(spec), sizes, smol)
    spec["multitask"]["sweep"] = {"k": [1], "selections": ["topk", "specific"]}
    swept = stage_work("multitask", ExperimentFile.from_dict(spec), sizes, smol)
    forward = lambda w: sum(j.n for j in w.jobs if j.kind == "forward")  # noqa: E731
    # per task: original + (random, 2 sets, others) + general = 6 evaluations of 3 batches;
    # the sweep: original + 2 cells x 4 + one general (specific) = 10 more
    assert forward(alone) == 2 * 6 * 3 and forward(swept) == forward(alone) + 2 * 10 * 3
    attribution = lambda w: len([j for j in w.jobs if j.kind == "attribution"])  # noqa: E731
    assert attribution(swept) == attribution(alone)  # the sweep reads detect/'s scores


def _continual_spec() -> dict:
    """A continual file: order a, b (2 steps of 8 each), c held out, 2 seeds, W-NCFT."""
    return {
        "experiment": "continual", "tasks": ["a", "b", "c"],
        "continual": {
            "order": ["a", "b"], "held_out": ["c"], "methods": ["seqft", "wncft", "wncft-inferred"],
            "seeds": [0, 1], "n_train": 16, "n_test": 20, "eval": {"batch_size": 8},
            "train": {"batch_size": 8, "epochs": 1}, "single_train": {"batch_size": 8, "epochs": 1},
            "method": {"n_vector_samples": 16, "feature_batch_size": 8},
        },
    }  # fmt: skip


def test_continual_counts_seeds_references_and_the_lr_grid(tmp_path):
    """Counted by hand from the continual stage's loops: order a, b (2 steps of 8 each), c
    held out, 3 batches of 8 per 20 test examples, 2 per 10 validation examples."""
    smol = KNOWN_SHAPES["smollm2-135m"]
    sizes = [_size(t) for t in "abc"]
    spec = _continual_spec()
    work = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    count = lambda w, kind: [j.n for j in w.jobs if j.kind == kind]  # noqa: E731
    # references once: per task 1 training, zero-shot + A(i) = 2 x 3 batches; c's zero-shot 3
    # per seed: seqft and wncft train each stage; every run scores a, b at both stages and c
    # at the end (5 x 3 batches, 3 runs); wncft reads each task's vector (2 batches of 8)
    assert count(work, "train_full") == [2] * (2 + 2 * 2)
    assert count(work, "train_neurons") == [2] * (2 * 2)
    assert len(count(work, "attribution")) == 2 * 2
    assert sum(count(work, "forward")) == (2 * 6 + 3) + 2 * (3 * 5 * 3 + 2 * 2)
    spec["continual"]["tune"] = {"grid": {"lr": [1e-4, 1e-3]}, "n_val": 10,
                                 "choice_file": str(tmp_path / "lr_choice.json")}  # fmt: skip
    tuned = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    # seqft and wncft (inferred takes wncft's choice) x 2 lrs; each scores a, then a and b,
    # on the validation split (3 x 2 batches); wncft's vectors once for both lrs (one cache
    # file keeps them: the second candidate reads them); the references on it once
    grid = 4 * 3 * 2 + 2 * 2 + 2 * 2 * 2
    assert sum(count(tuned, "forward")) == sum(count(work, "forward")) + grid
    assert len(count(tuned, "train_full")) == 6 + 2 * 2 + 2
    (tmp_path / "lr_choice.json").write_text('{"methods": {"seqft": {}}}')
    chosen = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    assert sum(count(chosen, "forward")) == sum(count(tuned, "forward")) - 2 * 3 * 2
    assert len(count(chosen, "train_full")) == 6 + 2
    # what a resumed run reads back is not counted: a finished grid candidate (its scoring
    # and vectors), and with resume a finished (seed, method) run (seqft's 2 trainings, 5
    # evaluations of 3 batches)
    finished = tmp_path / "tune" / "wncft" / "lr=0.0001"
    finished.mkdir(parents=True)
    (finished / "result.json").write_text("{}")
    left = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    assert sum(count(left, "forward")) == sum(count(chosen, "forward")) - (3 * 2 + 2 * 2)
    spec["out"] = str(tmp_path / "run")
    (tmp_path / "run" / "seed0" / "seqft").mkdir(parents=True)
    (tmp_path / "run" / "seed0" / "seqft" / "result.json").write_text("{}")
    fresh = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    assert sum(count(fresh, "forward")) == sum(count(left, "forward"))  # no resume: runs again
    resumed = stage_work(
        "continual", ExperimentFile.from_dict({**spec, "resume": True}), sizes, smol
    )
    assert sum(count(resumed, "forward")) == sum(count(left, "forward")) - 5 * 3
    assert len(count(resumed, "train_full")) == len(count(left, "train_full")) - 2


def test_tune_only_counts_the_grid_alone(tmp_path):
    """``tune.only``: the grid's candidates and the validation references, no seed run and
    no test-split reference (the same hand count as above: 2 lrs x (seqft, wncft))."""
    smol = KNOWN_SHAPES["smollm2-135m"]
    sizes = [_size(t) for t in "abc"]
    spec = _continual_spec()
    spec["continual"]["tune"] = {"grid": {"lr": [1e-4, 1e-3]}, "n_val": 10, "only": True,
                                 "choice_file": str(tmp_path / "lr_choice.json")}  # fmt: skip
    work = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    count = lambda kind: [j.n for j in work.jobs if j.kind == kind]  # noqa: E731
    assert sum(count("forward")) == 4 * 3 * 2 + 2 * 2 + 2 * 2 * 2  # vectors once: see above
    assert len(count("train_full")) == 2 * 2 + 2  # seqft's candidates; the references once
    assert len(count("train_neurons")) == 2 * 2  # wncft's candidates
    assert any("tune.only" in note for note in work.notes)


def test_exact_match_generation_counts_steps_until_answers_are_decided():
    """Rows stop once decided: a batch runs the longest gold answer's tokens + 1 steps (here
    4 + 1 = 5 of 12 allowed); without ``stop_when_decided``, or for ROUGE-L, all 12."""
    exact = TaskSize("g", "generation", 100, 50, 40.0, 2.0, 0, 0, 64, 4.0, True)
    rouge = TaskSize("r", "generation", 100, 50, 40.0, 2.0, 0, 0, 64, 4.0, False)
    spec = {"experiment": "deactivate", "tasks": ["a"]}
    for stop, size, steps in ((True, exact, 5), (False, exact, 12), (True, rouge, 12)):
        eval_cfg = {"batch_size": 50, "max_new_tokens": 12, "stop_when_decided": stop}
        file = ExperimentFile.from_dict({**spec, "deactivate": {"n_test": 50, "eval": eval_cfg}})
        work = stage_work("deactivate", file, [size], KNOWN_SHAPES["smollm2-135m"])
        decode = [j for j in work.jobs if j.kind == "decode"]
        assert [(j.n, j.tokens) for j in decode] == [(3 * steps, 3 * 50 * steps)]


def test_gpu_rates_reproduce_the_reference_figures():
    shape = KNOWN_SHAPES["meta-llama/Llama-2-7b-hf"]
    tokens_per_s = device("h100").rates["attribution"].flops_per_s / shape.flops_per_token(512)
    assert tokens_per_s == pytest.approx(14_320, rel=1e-3)
    assert set(GPUS) == {"h100", "h200", "a100", "24gb"}


def test_cli_prints_every_stage_and_refuses_bad_input(capsys, tmp_path):
    assert main(["estimate", str(ROOT / "src/taskneurons/experiments/demo.yaml")]) == 0
    out = capsys.readouterr().out
    for stage in ("detect", "deactivate", "table2", "Assumptions"):
        assert stage in out
    assert main(["estimate", str(tmp_path / "missing.yaml")]) == 2
    assert main(["estimate", "experiments/paper-scale-llama2-7b.yaml", "--device", "tpu"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 2


def test_a_file_repeated_over_seeds_is_priced_per_seed(tmp_path):
    """``seeds: [0, 1, 2]`` (what ``taskneurons run`` accepts) runs every stage three times:
    three times the time and disk of the file with one ``seed``, the same peak; a bad
    ``seeds`` is refused as ``run`` refuses it."""
    from taskneurons.experiments.estimate.plan import estimate

    spec = {"experiment": "deactivate", "tasks": ["sentiment", "country_city"], "out": "runs/x"}
    one, three = tmp_path / "one.yaml", tmp_path / "three.yaml"
    one.write_text(yaml.safe_dump({**spec, "seed": 0}))
    three.write_text(yaml.safe_dump({**spec, "seeds": [0, 1, 2]}))
    single, repeated = estimate(one, "cpu"), estimate(three, "cpu")
    for a, b in zip(single.stages, repeated.stages, strict=True):
        assert b.seconds == pytest.approx(3 * a.seconds)
        assert b.disk_bytes == pytest.approx(3 * a.disk_bytes)
        assert b.peak_bytes == a.peak_bytes
    assert "seeds: 3 runs" in repeated.text
    three.write_text(yaml.safe_dump({**spec, "seeds": [0]}))
    assert main(["estimate", str(three)]) == 2


@pytest.mark.slow
def test_predicted_stage_times_within_3x_on_a_small_run(tmp_path):
    """The embedded model on two built-in tasks, 8 examples each: every stage's measured time
    within 3x of the estimate, after scaling the estimate by how much slower than at the
    calibration the machine runs a forward right now (the machine is shared by several jobs
    and its speed changes several fold with their load)."""
    from taskneurons.experiments.estimate.plan import estimate

    data = {
        "experiment": ["detect", "deactivate", "table2"],
        "model": "smollm2-135m",
        "tasks": ["sentiment", "country_city"],
        "prompt": {"max_length": 256},
        "out": str(tmp_path / "run"),
        "detect": {"k": 10, "attribution": {"n_examples": 8}},
        "deactivate": {"n_test": 8, "eval": {"batch_size": 8, "max_new_tokens": 8}},
        "table2": {"n_train": 8, "n_test": 8, "matrix": False,
                   "train": {"epochs": 1, "batch_size": 8},
                   "eval": {"batch_size": 8, "max_new_tokens": 8}},
    }  # fmt: skip
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    # the machine's speed now against the calibration's (it is shared: load changes 5x)
    slow = cpu_device().rates["forward"].flops_per_s / _forward_rate_now()
    est = {e.name: e.seconds * slow for e in estimate(path, "cpu").stages}
    marks: list[tuple[str, float]] = []
    run_experiment(ExperimentFile.read(path), str(path), progress=False,
                   echo=lambda text: marks.append((text, time.perf_counter())))  # fmt: skip
    times = {
        h.split()[2].rstrip(":"): t1 - t0
        for (h, t0), (_, t1) in zip(marks[::2], marks[1::2], strict=True)
    }
    assert set(times) == set(est)
    print(f"slower than at calibration: {slow:.2f}x; measured / predicted:",
          {n: round(t / est[n], 2) for n, t in times.items()})  # fmt: skip
    for name, seconds in times.items():
        assert est[name] / 3 <= seconds <= est[name] * 3, (name, seconds, est[name])


def _forward_rate_now() -> float:
    """FLOP/s of a no-grad forward of the embedded model now (batch 8 x 64, median of 3)."""
    import torch

    from taskneurons.models.loading import load_model

    model, _ = load_model("smollm2-135m")
    ids = torch.randint(10, 40000, (8, 64), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        for _ in range(4):
            t0 = time.perf_counter()
            model(input_ids=ids, logits_to_keep=1, use_cache=False)
            times.append(time.perf_counter() - t0)
    return 8 * 64 * KNOWN_SHAPES["smollm2-135m"].flops_per_token(64) / sorted(times[1:])[1]


def test_cpu_calibration_is_recorded():
    dev = cpu_device()
    assert set(dev.rates) >= {"forward", "attribution", "train_neurons", "decode"}
    assert all(r.flops_per_s > 0 for r in dev.rates.values())
    assert "load" in dev.what
    assert estimate_stage  # the cost model is importable without torch's model code


def test_continual_peak_counts_the_weight_copies_held_in_host_memory():
    """Snapshots and per-task models, counted by hand: the suite's snapshot (1), the seeds'
    (1), per-task FT's base and one model per task (1 + 2 tasks): 5 copies on the CPU; on a
    GPU they sit in host RAM and are named in a note instead."""
    smol = KNOWN_SHAPES["smollm2-135m"]
    sizes = [_size(t) for t in "abc"]
    spec = _continual_spec()
    plain = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    assert plain.host_copies == 1 + 1  # the suite's snapshot, the seeds'
    spec["continual"]["methods"] = ["seqft", "wncft", "pertask"]
    work = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    assert work.host_copies == 1 + 1 + (1 + 2)
    bare = work.__class__("continual", work.jobs)  # the same jobs, no copies
    est, est0 = (estimate_stage(w, smol, cpu_device(), "float32") for w in (work, bare))
    assert est.peak_bytes - est0.peak_bytes == pytest.approx(5 * smol.n_params * 4)
    gpu, gpu0 = (estimate_stage(w, smol, device("h100"), "bfloat16") for w in (work, bare))
    assert gpu.peak_bytes == gpu0.peak_bytes
    assert any("host RAM beside the GPU: 5 copies" in n for n in gpu.notes)


def test_continual_counts_each_task_vector_once_per_seed(tmp_path):
    """W-NCFT and EPI read the same vectors from one cache: per seed one vector job per task
    (2 batches of 8), not one per method; the seeds draw other subsets: counted again."""
    smol = KNOWN_SHAPES["smollm2-135m"]
    sizes = [_size(t) for t in "abc"]
    spec = _continual_spec()
    vector = lambda w: [j for j in w.jobs if j.kind == "forward" and j.context * 16 == j.tokens]  # noqa: E731
    spec["continual"]["methods"] = ["wncft"]
    one = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    spec["continual"]["methods"] = ["wncft", "epi"]
    both = stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol)
    assert len(vector(one)) == len(vector(both)) == 2 * 2  # 2 seeds x 2 tasks
    spec["continual"]["seeds"] = [0, 1, 2]
    assert len(vector(stage_work("continual", ExperimentFile.from_dict(spec), sizes, smol))) == 6
