"""Tests of taskneurons.evaluation: label scoring, generation, metrics and result files."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import pytest
import torch

from taskneurons.data.load import load_task
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.data.prompts import encode_example
from taskneurons.data.tasks import Example, Task, examples_hash, subset
from taskneurons.evaluation.dispatch import evaluate
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.evaluation.generation import answer_decided, cut_generation, generate_batch
from taskneurons.evaluation.metrics import exact_match, majority_rate, normalize_text, rouge_l
from taskneurons.evaluation.result import EvalResult
from taskneurons.models.loading import load_model
from taskneurons.provenance import model_fingerprint

from tiny_models import tiny_model
from tiny_tokenizer import tiny_tokenizer

#: labels of 1, 2 and 5 tokens under the tiny tokenizer
LABELS = ["good", "very bad", "not so good at all"]

#: several families: Llama-like gated (llama, qwen2, gemma, phi3), GPT-2 (Conv1D, learned
#: positions), GPT-NeoX (rotary, parallel), OPT (learned offset positions), Bloom (ALiBi)
FAMILIES = ["llama", "qwen2", "gemma", "phi3", "gpt2", "gpt_neox", "opt", "bloom"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def task() -> Task:
    test = [
        Example("the movie was good", "good"),
        Example("I hated it", "very bad"),
        Example("it was boring and the acting was awful , too boring", "not so good at all"),
        Example("fun", "good"),
        Example("the plot was not great but the music was fine", "very bad"),
    ]
    return Task(
        id="toy",
        kind="classification",
        instruction="Classify the sentiment of the review .",
        labels=list(LABELS),
        metric="accuracy",
        test=test,
        name="toy sentiment",
        source={"kind": "test"},
    )


@pytest.fixture(scope="module")
def gen_task() -> Task:
    test = [
        Example("the cat sat on the mat", "a cat sat", ("a cat sat", "the cat is on the mat")),
        Example("I loved the food", "good food"),
        Example("the dog was sad", "a sad dog", ("a sad dog", "the dog is sad", "sad")),
    ]
    return Task(
        id="toygen",
        kind="generation",
        instruction="summarize the text .",
        labels=None,
        metric="rougeL",
        test=test,
    )


def naive_log_likelihoods(model, tok, task: Task, prompt: PromptConfig) -> torch.Tensor:
    """``[examples, labels]`` summed answer log-probs, one unpadded forward per (example, label)."""
    rows = []
    for ex in task.test:
        row = []
        for label in task.labels:
            enc = encode_example(tok, task, ex.input, label, prompt)
            ids = torch.tensor([enc.input_ids])  # [1, pos]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
            row.append(
                sum(logp[j - 1, ids[0, j]].item() for j in range(enc.answer_start, ids.shape[1]))
            )
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def result_matrix(result: EvalResult, key: str = "log_likelihoods") -> torch.Tensor:
    return torch.tensor(
        [[p[key][label] for label in LABELS] for p in result.predictions], dtype=torch.float64
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_label_scoring_equals_naive_computation(family, tok, task, caplog):
    model = tiny_model(family, seed=1)
    prompt = PromptConfig()
    expected = naive_log_likelihoods(model, tok, task, prompt)  # [examples, labels]
    lengths = [len(tok(" " + lab, add_special_tokens=False)["input_ids"]) for lab in LABELS]
    assert lengths == [1, 2, 5]  # labels of different token lengths
    with caplog.at_level(logging.WARNING, logger="taskneurons.evaluation"):
        for scoring in ("cache", "concat"):
            for batch_size in (1, 3):
                cfg = EvalConfig(prompt=prompt, batch_size=batch_size, scoring=scoring)
                result = evaluate(model, tok, task, mode="score", config=cfg, progress=False)
                got = result_matrix(result)
                assert torch.allclose(got, expected, atol=1e-4, rtol=0), (scoring, batch_size)
                preds = [LABELS[i] for i in expected.argmax(1).tolist()]
                assert [p["prediction"] for p in result.predictions] == preds
                gold = [ex.output for ex in task.test]
                acc = 100.0 * sum(p == g for p, g in zip(preds, gold, strict=True)) / len(gold)
                assert result.score == pytest.approx(acc)
                assert result.metric == "accuracy" and result.n == len(task.test)
    # the cache path must not have fallen back to concatenation
    assert "no repeatable KV cache" not in caplog.text


def test_gold_nll_is_the_mean_gold_label_nll(tok, task):
    model = tiny_model("llama", seed=1)
    expected = naive_log_likelihoods(model, tok, task, PromptConfig())  # [examples, labels]
    gold = torch.tensor([LABELS.index(ex.output) for ex in task.test])
    want = float(-expected[torch.arange(len(gold)), gold].mean())
    for calibrate in (False, True):  # calibration moves the ranking, not the likelihoods
        cfg = EvalConfig(batch_size=3, calibrate=calibrate)
        result = evaluate(model, tok, task, config=cfg, progress=False)
        assert result.gold_nll() == pytest.approx(want, abs=1e-4)
    generated = evaluate(model, tok, task, mode="generate", progress=False)
    assert generated.gold_nll() is None


def test_label_scoring_with_sdpa_attention(tok, task):
    model = tiny_model("llama", seed=2)
    expected = naive_log_likelihoods(model, tok, task, PromptConfig())
    model.set_attn_implementation("sdpa")
    result = evaluate(model, tok, task, config=EvalConfig(batch_size=3), progress=False)
    assert torch.allclose(result_matrix(result), expected, atol=1e-4, rtol=0)


def test_length_normalisation(tok, task):
    model = tiny_model("llama", seed=3)
    plain = evaluate(model, tok, task, config=EvalConfig(batch_size=2), progress=False)
    norm = evaluate(
        model, tok, task, config=EvalConfig(batch_size=2, length_normalize=True), progress=False
    )
    lengths = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    sums = result_matrix(plain)
    assert torch.allclose(result_matrix(norm), sums, atol=1e-5)  # raw sums still reported
    assert torch.allclose(result_matrix(plain, "label_scores"), sums, atol=1e-6)
    means = result_matrix(norm, "label_scores")
    assert torch.allclose(means, sums / lengths, atol=1e-5)
    assert [p["prediction"] for p in norm.predictions] == [
        LABELS[i] for i in means.argmax(1).tolist()
    ]
    # sums favour the short label, per-token means do not, so the two rankings differ
    assert [p["prediction"] for p in norm.predictions] != [
        p["prediction"] for p in plain.predictions
    ]


def test_contextual_calibration(tok, task):
    model = tiny_model("gpt2", seed=10)
    cf_inputs = ("N/A", "", "[MASK]")
    cfg = EvalConfig(batch_size=2, calibrate=True, calibration_inputs=cf_inputs)
    cal = evaluate(model, tok, task, config=cfg, progress=False)
    # the prior is the mean label distribution of the content-free inputs, scored naively
    cf_task = Task("cf", "classification", task.instruction, list(LABELS), "accuracy")
    cf_task.test = [Example(text, LABELS[0]) for text in cf_inputs]
    cf_ll = naive_log_likelihoods(model, tok, cf_task, PromptConfig())  # [inputs, labels]
    prior = torch.softmax(cf_ll, dim=-1).mean(0)  # [labels]
    got_prior = torch.tensor([cal.calibration[lab] for lab in LABELS], dtype=torch.float64)
    assert torch.allclose(got_prior.exp(), prior, atol=1e-5)
    assert prior.sum().item() == pytest.approx(1.0)
    sums = result_matrix(cal)
    expected = naive_log_likelihoods(model, tok, task, PromptConfig())
    assert torch.allclose(sums, expected, atol=1e-4)  # raw log-likelihoods unchanged
    scores = result_matrix(cal, "label_scores")
    assert torch.allclose(scores, expected - prior.log(), atol=1e-4)
    assert [p["prediction"] for p in cal.predictions] == [
        LABELS[i] for i in scores.argmax(1).tolist()
    ]
    plain = evaluate(model, tok, task, config=EvalConfig(batch_size=2), progress=False)
    assert plain.calibration is None


def test_text_normalisation_and_exact_match():
    assert normalize_text("  Good!\n") == "good"
    assert normalize_text("Not  so,\tGOOD.") == "not so good"
    assert normalize_text("...") == ""
    assert exact_match("Very bad.", "very bad")
    assert exact_match(" very   BAD ", "Very bad")
    assert not exact_match("very badly", "very bad")
    assert not exact_match("good", "Good bad")


def testcut_generation():
    assert cut_generation("\n Good\nBad", stop_at_newline=True) == "Good"
    assert cut_generation(" very bad \n\n", stop_at_newline=True) == "very bad"
    assert cut_generation("a\nb", stop_at_newline=False) == "a\nb"


def test_rouge_l_multiple_references_pinned():
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 of 6 tokens each: F1 = 5/6;
    # against "a dog sat on a mat" the LCS is 3 ("sat on mat"): F1 = 1/2; the best counts
    pred = "the cat sat on the mat"
    assert rouge_l(pred, ["a dog sat on a mat"]) == pytest.approx(0.5)
    assert rouge_l(pred, ["the cat is on the mat"]) == pytest.approx(5 / 6)
    assert rouge_l(pred, ["a dog sat on a mat", "the cat is on the mat"]) == pytest.approx(5 / 6)
    # P = 2/2, R = 2/4: F1 = 2/3
    assert rouge_l("cat mat", ["the cat on mat"]) == pytest.approx(2 / 3)
    assert rouge_l("", ["anything"]) == 0.0
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_l("x", [])


class _ScriptedGenerator(torch.nn.Module):
    """Stands in for a causal LM: ``generate`` appends fixed token rows to the prompts."""

    def __init__(self, rows: list[list[int]]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.rows = torch.tensor(rows)
        self.kwargs = None

    def generate(self, input_ids, attention_mask, **kwargs):
        self.kwargs = kwargs
        return torch.cat([input_ids, self.rows[: input_ids.shape[0]]], dim=1)


def test_generation_is_cut_at_eos_and_newline(tok):
    ids = tok.convert_tokens_to_ids
    nl, eos, pad = ids("\n"), tok.eos_token_id, tok.pad_token_id
    rows = [
        [ids("very"), ids("bad"), ids("."), nl, ids("good"), pad],
        [nl, ids("good"), eos, ids("bad"), pad, pad],
        [ids("not"), ids("so"), eos, nl, ids("fun"), pad],
    ]
    model = _ScriptedGenerator(rows)
    prompts = [[1, ids("the")], [1, ids("a"), ids("cat")], [1]]
    out = generate_batch(model, tok, prompts, pad, 6, stop_at_newline=True)
    assert out == ["very bad .", "good", "not so"]
    assert model.kwargs["do_sample"] is False and model.kwargs["max_new_tokens"] == 6
    out = generate_batch(model, tok, prompts, pad, 6, stop_at_newline=False)
    assert out[0] == "very bad . \n good"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_generate_mode_classification(family, tok, task):
    model = tiny_model(family, seed=4)
    results = [
        evaluate(model, tok, task, mode="generate", config=EvalConfig(batch_size=b), progress=False)
        for b in (1, 3)
    ]
    r = results[0]
    assert r.mode == "generate" and r.metric == "accuracy" and r.n == len(task.test)
    assert r.config.max_new_tokens == 5 + 4  # longest label + slack
    preds = [p["prediction"] for p in r.predictions]
    assert all(isinstance(p, str) for p in preds)
    assert "\n" not in "".join(preds)
    assert [p["correct"] for p in r.predictions] == [
        exact_match(p, ex.output) for p, ex in zip(preds, task.test, strict=True)
    ]
    assert r.score == pytest.approx(100.0 * sum(p["correct"] for p in r.predictions) / r.n)
    # left-padded batched greedy decoding gives what one-by-one decoding gives
    assert [p["prediction"] for p in results[1].predictions] == preds


def test_generate_mode_matches_manual_greedy_loop(tok, task):
    model = tiny_model("qwen2", seed=5)
    cfg = EvalConfig(batch_size=3, max_new_tokens=4, stop_at_newline=False, stop_when_decided=False)
    result = evaluate(model, tok, task, mode="generate", config=cfg, progress=False)
    for ex, pred in zip(task.test, result.predictions, strict=True):
        ids = list(encode_example(tok, task, ex.input, None, cfg.prompt).input_ids)
        new = []
        with torch.no_grad():
            for _ in range(4):
                nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                new.append(nxt)
        assert pred["prediction"] == tok.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("stop_at_newline", [True, False])
def test_stop_when_decided_keeps_every_score(tok, task, stop_at_newline):
    model = tiny_model("llama", seed=7)
    runs = {
        early: evaluate(
            model,
            tok,
            task,
            mode="generate",
            config=EvalConfig(
                batch_size=2,
                max_new_tokens=8,
                stop_at_newline=stop_at_newline,
                stop_when_decided=early,
            ),
            progress=False,
        )
        for early in (False, True)
    }
    full, early = runs[False].predictions, runs[True].predictions
    assert [p["correct"] for p in early] == [p["correct"] for p in full]
    assert runs[True].score == runs[False].score
    assert all(
        f["prediction"].startswith(e["prediction"]) for e, f in zip(early, full, strict=True)
    )
    # the random model's answers are wrong after a token or two: it did stop early
    assert sum(map(len, (p["prediction"] for p in early))) < sum(
        map(len, (p["prediction"] for p in full))
    )


def test_answer_decided_never_decides_a_text_that_could_still_change():
    # once decided, no continuation changes the exact match of the final answer
    rng = random.Random(0)
    alphabet = "aAbB .,!\nΣσς\ufffd"
    decided = 0
    for _ in range(3000):
        gold = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        for newline in (True, False):
            if not answer_decided(text, [gold], newline):
                continue
            decided += 1
            now = exact_match(cut_generation(text, newline), gold)
            for _ in range(5):
                more = text + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
                assert exact_match(cut_generation(more, newline), gold) == now, (text, more, gold)
    assert decided > 1000


def test_answer_decided_cases():
    assert not answer_decided("Par", ["Paris"], True)
    assert not answer_decided("Paris", ["Paris"], True)  # "Paris France" is still possible
    assert answer_decided("Lyon", ["Paris"], True)
    assert answer_decided("Paris\n", ["Lyon"], False)
    assert not answer_decided("caf\ufffd", ["Lyon"], True)  # an incomplete character
    assert not answer_decided("ΟΔΟΣ", ["οδοσα"], False)  # final sigma may still change
    assert not answer_decided("anything", None, False)
    assert answer_decided(" x\ny", None, True)


def test_generation_task_rouge(tok, gen_task):
    model = tiny_model("llama", seed=6)
    result = evaluate(model, tok, gen_task, config=EvalConfig(max_new_tokens=6), progress=False)
    assert result.mode == "generate" and result.metric == "rougeL"
    assert [p["gold"] for p in result.predictions] == [
        list(ex.all_references) for ex in gen_task.test
    ]
    per = [100.0 * rouge_l(p["prediction"], p["gold"]) for p in result.predictions]
    assert [p["score"] for p in result.predictions] == pytest.approx(per)
    assert result.score == pytest.approx(sum(per) / len(per))
    with pytest.raises(ValueError, match="mode='generate'"):
        evaluate(model, tok, gen_task, mode="score", progress=False)


def test_model_mode_is_restored_and_eval_inside(tok, task):
    model = tiny_model("gpt2", seed=7)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    model.train()
    evaluate(model, tok, task, config=EvalConfig(batch_size=5), progress=False)
    hook.remove()
    assert seen and not any(seen)  # every forward ran in eval mode
    assert model.training  # the caller's mode is back
    model.eval()
    evaluate(model, tok, task, config=EvalConfig(batch_size=5), progress=False)
    assert not model.training


def test_save_writes_json_with_provenance(tmp_path, tok, task):
    model = tiny_model("llama", seed=8)
    result = evaluate(model, tok, task, task.test[:3], config=EvalConfig(batch_size=2))
    assert result.seconds > 0 and result.examples_per_s == pytest.approx(3 / result.seconds)
    path = tmp_path / "sub" / "eval.json"
    assert result.save(path) == path
    data = json.loads(path.read_text())
    assert sorted(p.name for p in path.parent.iterdir()) == ["eval.json"]  # no temp file left
    prov = data["provenance"]
    assert prov["model"] == model_fingerprint(model)
    assert prov["task"] == "toy" and prov["task_source"] == {"kind": "test"}
    assert prov["data_hash"] == examples_hash(task.test[:3]) == data["data_hash"]
    assert prov["config"]["batch_size"] == 2 and "versions" in prov
    assert data["score"] == pytest.approx(result.score) and data["n"] == 3
    assert data["predictions"][0]["log_likelihoods"].keys() == set(LABELS)
    back = EvalResult.load(path)
    assert back.config == result.config and back.predictions == result.predictions


def test_eval_config_round_trip():
    cfg = EvalConfig(prompt=PromptConfig(max_length=64), batch_size=3, length_normalize=True)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert EvalConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="unknown key 'batchsize'"):
        EvalConfig.from_dict({"batchsize": 2})
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(batch_size=0)
    with pytest.raises(ValueError, match="scoring"):
        EvalConfig(scoring="fast")


def test_errors_for_empty_examples_and_missing_labels(tok, task):
    model = tiny_model("llama", seed=9)
    with pytest.raises(ValueError, match="no examples"):
        evaluate(model, tok, task, [], progress=False)
    unlabeled = Task(
        id="nolabels",
        kind="classification",
        instruction="x",
        labels=None,
        metric="accuracy",
        test=list(task.test),
    )
    for mode in ("score", "generate"):
        with pytest.raises(ValueError, match="without labels"):
            evaluate(model, tok, unlabeled, mode=mode, progress=False)
    with pytest.raises(ValueError, match="mode must be"):
        evaluate(model, tok, task, mode="vote", progress=False)


def test_majority_rate():
    exs = [Example(str(i), lab) for i, lab in enumerate(["a", "b", "a", "a", "c"])]
    assert majority_rate(exs) == pytest.approx(60.0)
    assert majority_rate(exs[:1]) == 100.0
    with pytest.raises(ValueError):
        majority_rate([])


def _shared_data(request) -> Path:
    """The ``shared_data`` fixture of tests/conftest.py, else ``<repo>/../shared/data``."""
    try:
        return Path(request.getfixturevalue("shared_data"))
    except pytest.FixtureLookupError:
        return Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
def test_embedded_model_zero_shot_sst2(request):
    """SmolLM2-135M zero-shot on a seeded label-stratified 200-example SST-2 test subset.

    Plain label scoring puts "Good" above "Bad" for every example (50.0%, the majority rate):
    the 135M model's label prior swamps the input. Contextual calibration (Zhao et al. 2021)
    removes that prior; the calibrated accuracy must beat the majority rate. Both accuracies
    come from one run (the raw log-likelihoods are kept in the predictions).
    """
    task = load_task(_shared_data(request) / "sst2")
    examples = subset(task.test, 200, seed=0, labels=task.labels)
    model, tok = load_model("smollm2-135m")
    cfg = EvalConfig(calibrate=True)
    result = evaluate(model, tok, task, examples, mode="score", config=cfg, progress=False)
    base = majority_rate(examples)
    raw = [max(p["log_likelihoods"], key=p["log_likelihoods"].get) for p in result.predictions]
    raw_acc = 100.0 * sum(r == ex.output for r, ex in zip(raw, examples, strict=True)) / 200
    margin = torch.tensor(
        [p["log_likelihoods"]["Good"] - p["log_likelihoods"]["Bad"] for p in result.predictions]
    )
    is_good = torch.tensor([ex.output == "Good" for ex in examples])
    print(
        f"\nsmollm2-135m zero-shot SST-2 (200 test, stratified seed 0), label scoring: "
        f"calibrated accuracy {result.score:.1f}%, uncalibrated {raw_acc:.1f}%, majority "
        f"{base:.1f}%; mean log p(Good)-log p(Bad): {margin[is_good].mean():.3f} on Good, "
        f"{margin[~is_good].mean():.3f} on Bad examples; {result.seconds:.1f} s"
    )
    assert result.n == 200 and math.isfinite(result.score)
    assert margin[is_good].mean() > margin[~is_good].mean()  # the raw scores carry the signal
    assert result.score > base
