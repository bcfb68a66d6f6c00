"""Every stage's result files on tiny models, reduced to what must not change in a restructuring.

The oracle of ``tests/test_stage_outputs.py``: it runs every stage of the runner (and every
``taskneurons analyze`` command) on a tiny random Llama and small task folders, then reduces each
file the runs wrote to a comparable form:

* JSON, JSON Lines, YAML and safetensors metadata: the parsed values, minus what changes from run to
  run (``created``, ``command``, ``versions``, durations ``*_s`` / ``seconds``) and with the
  temporary folder replaced by ``<BASE>``; a checksum (``sha256:<hex>``) as ``<sha256>``: it is
  there, but its value covers the volatile keys and the float bytes of another CPU;
* text (Markdown, CSV): the text with every number cut out, plus the numbers;
* tensors (safetensors, ``.pt``): dtype, shape and the values (long ones as sums and the first
  values); integer and bool tensors by an exact digest;
* PNG: that it exists (pixels depend on the font library); the HTML report likewise (it
  inlines the PNGs; ``tests/test_report_page.py`` checks its content).

Numbers are compared with a small tolerance (another CPU may round float32 differently), and
so are the weights digests of models trained in a run (present, not compared); the skeletons
exactly (``check --exact``: numbers and digests too). ``python tests/stage_outputs.py write`` records the golden file from the code
as it is; it was first written before the restructuring of issue 21.

Example:
    >>> reduce_text("acc 50.0 (CI 25..75)")
    {'text': 'acc # (CI #..#)', 'numbers': [50.0, 25.0, 75.0]}
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).with_name("golden") / "stage_outputs.json"

#: keys whose values differ from one run to the next
VOLATILE_KEYS = {"created", "command", "versions", "seconds", "transformers_version"}
#: digests of records that hold the volatile keys
VOLATILE_DIGESTS = {"meta_sha256", "suite_sha256"}
#: a checksum a file records of its content (``taskneurons._io.checksum``): kept as ``<sha256>``
CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")
#: a duration in text ("2 s", "1.5 s")
DURATION = re.compile(r"\b\d+(?:\.\d+)? s\b")
NUMBER = re.compile(r"(?<![A-Za-z0-9_])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
#: tensors up to this many elements are kept whole
WHOLE = 64

TASKS = {
    "mood": (["good", "bad"], ["the movie was good", "the film was bad", "I loved it",
                               "I hated it", "very fun story", "boring plot"]),
    "answer": (["yes", "no"], ["is the cat on the mat", "is the dog red", "is it blue",
                               "was it sad", "is she happy", "were they funny"]),
    "polar": (["up", "down"], ["prices rose", "prices fell", "the stock went up",
                               "sales dropped", "it grew", "it shrank"]),
    "pets": (["cat", "dog"], ["it purrs", "it barks", "meows at night", "fetches a ball",
                              "climbs trees", "wags its tail"]),
}  # fmt: skip

GROUPS = [{"name": "g", "train": ["mood", "answer"], "test": ["polar", "pets"]}]
TRAIN = {"lr": 0.01, "batch_size": 2}


def write_tasks(root: Path) -> dict[str, str]:
    """The four tiny classification task folders under ``root``; id -> folder."""
    out = {}
    for name, (labels, texts) in TASKS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        info = {"id": name, "name": name, "kind": "classification", "labels": labels}
        info.update(instruction="Classify the text .", metric="accuracy")
        (folder / "task.json").write_text(json.dumps(info))
        lines = [
            json.dumps({"input": f"Text : {x}", "output": labels[i % 2]})
            for i, x in enumerate(texts)
        ]
        for split in ("train", "test"):
            (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        out[name] = str(folder)
    return out


def experiments(model: str, tasks: dict[str, str], base: Path) -> dict[str, dict]:
    """One experiment file per group of stages, together running every stage."""
    two = [tasks["mood"], tasks["answer"]]
    detect = {"k": 20, "attribution": {"n_examples": 4}}
    deact = {"n_test": 4, "n_boot": 20, "n_permutations": 10}
    common = {"model": model, "seed": 0}
    return {
        "sets": {
            **common, "experiment": ["detect", "deactivate", "table2"], "tasks": two,
            "detect": {**detect, "selection": {"method": "specific"}}, "deactivate": deact,
            "table2": {"n_train": 4, "n_test": 4, "train": TRAIN},
        },
        "sweep": {
            **common, "experiment": "sweep", "tasks": two, "detect": detect, "deactivate": deact,
            "sweep": {"k": [20, 40], "selections": ["topk", "specific", "contrastive", "lape"]},
        },
        "training": {
            **common, "experiment": ["detect", "ablation_check", "crosstrain", "budget", "prompts"],
            "tasks": two, "detect": detect,
            "ablation_check": {"per_layer": 4, "top_k": 3, "n_examples": 4},
            "crosstrain": {"n_train": 4, "n_test": 4, "n_boot": 10, "train": {"batch_size": 2}},
            "budget": {"optimizers": ["sgd", "adamw"], "lrs": [0.1, 0.01], "steps": [1, 2],
                       "k": [20], "seeds": [0, 1], "n_train": 4, "n_test": 4, "n_boot": 10,
                       "train": {"batch_size": 2}},
            "prompts": {"n_test": 4, "n_boot": 20, "variants": [
                {"name": "plain"}, {"name": "cue", "answer_prefix": "Option:"}]},
        },
        "generalization": {
            **common, "tasks": list(tasks.values()), "groups": GROUPS, "detect": detect,
            "experiment": ["overlap", "generalization", "controlled_overlap", "similarity"],
            "overlap": {"proportions": [50, 100], "proportion_of": "set"},
            "generalization": {"proportions": [50, 100], "proportion_of": "set", "n_train": 4,
                               "n_test": 4, "train": TRAIN},
            "controlled_overlap": {"proportions": [50], "proportion_of": "set", "overlaps": [0, 100],
                                   "seeds": [0, 1], "n_train": 4, "n_test": 4, "train": TRAIN},
            "similarity": {"n_train": 4, "n_test": 4, "n_boot": 20, "train": TRAIN},
        },
        "continual": {
            **common, "experiment": "continual", "tasks": two,
            "continual": {
                "methods": ["seqft", "seqlora", "olora", "epi", "pertask", "ncft", "wncft",
                            "wncft-inferred"],
                "n_train": 4, "n_test": 4, "train": TRAIN, "single_train": TRAIN,
                "method": {"k": 20, "attribution": {"n_examples": 4}, "n_vector_samples": 4},
            },
        },
        "multitask": {
            **common, "experiment": "multitask", "tasks": two,
            "multitask": {"n_train": 4, "save_model": True, "train": TRAIN,
                          "detect": detect, "deactivate": deact},
        },
    }  # fmt: skip


def analyses(base: Path) -> dict[str, list[str]]:
    """``taskneurons analyze`` commands over the runs of :func:`experiments`."""
    gen = str(base / "generalization")
    return {
        "analyze-table5": ["table5", str(base / "continual"), "--out", str(base / "analyze-table5")],
        "analyze-sweep": ["sweep", str(base / "sweep"), "--out", str(base / "analyze-sweep")],
        "analyze-overlap": ["overlap", gen, "--selection", "specific", "--proportions", "50,100",
                            "--out", str(base / "analyze-overlap")],
        "analyze-figure2": ["figure2", gen, "--out", str(base / "analyze-figure2")],
        "analyze-similarity": ["similarity", gen, "--layers", "1",
                               "--out", str(base / "analyze-similarity")],
        "analyze-correlate": ["correlate", gen, "--layers", "0-1", "--score", "gain",
                              "--n-boot", "20", "--out", str(base / "analyze-correlate")],
    }  # fmt: skip


def run_all(base: Path) -> None:
    """Run every experiment and analysis of this module into ``base``."""
    import torch
    import yaml

    from taskneurons.cli import main

    from tiny_models import tiny_model
    from tiny_tokenizer import tiny_tokenizer

    model_dir = base / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    tasks = write_tasks(base / "tasks")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, data in experiments(str(model_dir), tasks, base).items():
            path = base / f"{name}.yaml"
            path.write_text(yaml.safe_dump({**data, "out": str(base / name)}))
            assert main(["run", str(path)]) == 0, name
        for argv in analyses(base).values():
            assert main(["analyze", *argv]) == 0, argv
    finally:
        torch.set_num_threads(threads)


# -- reduction ----------------------------------------------------------------------------------
def reduce_text(text: str) -> dict:
    """The text with numbers cut out (``#``) and the numbers."""
    text = DURATION.sub("<T> s", text)
    numbers = [float(m) for m in NUMBER.findall(text)]
    return {"text": NUMBER.sub("#", text), "numbers": numbers}


def _volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key in VOLATILE_DIGESTS or key.endswith("_s")


def reduce_json(value: Any) -> Any:
    """``value`` without the volatile keys, at any depth; checksums as ``<sha256>``."""
    if isinstance(value, dict):
        return {k: reduce_json(v) for k, v in value.items() if not _volatile(str(k))}
    if isinstance(value, list):
        return [reduce_json(v) for v in value]
    if isinstance(value, str) and CHECKSUM.fullmatch(value):
        return "<sha256>"
    return value


def reduce_tensor(t) -> dict:
    """dtype, shape and values (or an exact digest of an integer or bool tensor)."""
    import torch

    out: dict[str, Any] = {"dtype": str(t.dtype), "shape": list(t.shape)}
    if not t.is_floating_point():
        data = t.detach().cpu().contiguous().view(-1)
        out["digest"] = hashlib.sha256(data.numpy().tobytes()).hexdigest()[:16]
        return out
    flat = t.detach().cpu().double().reshape(-1)
    if flat.numel() <= WHOLE:
        out["values"] = flat.tolist()
    else:
        out["sum"] = float(flat.sum())
        out["abs_sum"] = float(flat.abs().sum())
        out["first"] = flat[:8].tolist()
    out["finite"] = bool(torch.isfinite(flat).all())
    return out


def _reduce_object(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return reduce_tensor(obj)
    if isinstance(obj, dict):
        return {str(k): _reduce_object(v) for k, v in obj.items() if not _volatile(str(k))}
    if isinstance(obj, (list, tuple)):
        return [_reduce_object(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return {"bytes": hashlib.sha256(bytes(obj)).hexdigest()[:16]}
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return _reduce_object(obj.tolist())
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return reduce_json(obj)
    return {"type": type(obj).__name__}


def reduce_file(path: Path, base: str) -> Any:
    """The comparable form of one result file (see the module docstring)."""
    suffix = path.suffix
    if suffix == ".png":
        return {"png": True}
    if suffix == ".html":  # the report page: inlined PNGs and the time it was written
        return {"html": True}
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = {k: _maybe_json(v.replace(base, "<BASE>")) for k, v in f.metadata().items()}
            tensors = {k: reduce_tensor(f.get_tensor(k)) for k in sorted(f.keys())}
        return {"metadata": reduce_json(meta), "tensors": tensors}
    if suffix in (".pt", ".bin"):
        import torch

        return _reduce_object(torch.load(path, map_location="cpu", weights_only=False))
    text = path.read_text(encoding="utf-8").replace(base, "<BASE>")
    if suffix == ".json":
        return reduce_json(json.loads(text))
    if suffix == ".yaml":  # a mapping: its keys' order is not its content
        import yaml

        return reduce_json(yaml.safe_load(text))
    if suffix == ".jsonl":
        return [reduce_json(json.loads(line)) for line in text.splitlines() if line.strip()]
    return reduce_text(text)


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def reduce_runs(base: Path) -> dict[str, Any]:
    """``relative path -> reduced file`` for every file the runs wrote under ``base``."""
    skip = {"model", "tasks"}
    out = {}
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = path.relative_to(base)
        if rel.parts[0] in skip or (len(rel.parts) == 1 and path.suffix == ".yaml"):
            continue
        out[rel.as_posix()] = reduce_file(path, str(base))
    return out


# -- comparison ---------------------------------------------------------------------------------
def differences(
    golden: Any, now: Any, where: str = "", rtol=1e-3, atol=1e-5, digests=False
) -> list[str]:
    """Where ``now`` differs from ``golden``: structure exactly, numbers within tolerance.

    A model fingerprint's ``weights`` digest (16 hex digits) of a model trained in the run
    covers float bytes that another CPU rounds differently (on one machine a fine-tuned tiny
    model's digest changed, and LoRA sums moved by 2e-4 relative, with no change of code):
    like checksums, such digests must be present but are compared only with ``digests``
    (``check --exact``). Example:

        >>> differences({"weights": "f8908a72ed8edac3"}, {"weights": "b3402e00044aeadd"})
        []
    """
    if not digests and _weights_digest(where, golden) and _weights_digest(where, now):
        return []
    if isinstance(golden, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(golden) | set(now)):
            if key not in now:
                out.append(f"{where}/{key}: missing now")
            elif key not in golden:
                out.append(f"{where}/{key}: new (not in the golden file)")
            else:
                out += differences(golden[key], now[key], f"{where}/{key}", rtol, atol, digests)
        return out
    if isinstance(golden, list) and isinstance(now, list):
        if len(golden) != len(now):
            return [f"{where}: {len(golden)} items in the golden file, {len(now)} now"]
        out = []
        for i, (a, b) in enumerate(zip(golden, now, strict=True)):
            out += differences(a, b, f"{where}[{i}]", rtol, atol, digests)
        return out
    numbers = (int, float)
    if isinstance(golden, numbers) and isinstance(now, numbers):
        if not isinstance(golden, bool) and not isinstance(now, bool):
            if math.isnan(golden) and math.isnan(now):
                return []
            if math.isclose(golden, now, rel_tol=rtol, abs_tol=atol):
                return []
    if golden == now:
        return []
    return [f"{where}: {_short(golden)} in the golden file, {_short(now)} now"]


def _weights_digest(where: str, value: Any) -> bool:
    """A ``weights`` digest of a model fingerprint: 16 lower-case hex digits."""
    return (
        where.endswith("/weights")
        and isinstance(value, str)
        and len(value) == 16
        and all(c in "0123456789abcdef" for c in value)
    )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:200] + "..."


def main(argv: list[str]) -> int:
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    mode = argv[0] if argv else "check"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        run_all(base)
        now = reduce_runs(base)
    if mode == "write":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(now, indent=0, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}: {len(now)} files")
        return 0
    tol = {"rtol": 0.0, "atol": 0.0, "digests": True} if "--exact" in argv else {}
    diff = differences(json.loads(GOLDEN.read_text()), now, **tol)
    print("\n".join(diff) if diff else f"all {len(now)} files as in the golden file")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
