"""Fair hyper-parameters for the continual methods: a grid per method, chosen by a fixed rule.

Every method gets its own training values (learning rate, and LoRA rank for the LoRA methods)
from a small grid (:class:`TuneConfig`, the suite's ``tune`` section, fixed in the experiment
file before running). Each candidate runs the whole order ``tune.order`` (the first order) with
the matrix scored on a validation split carved from each task's train examples
(:func:`~taskneurons.data.validation.validation_split`: outside the examples trained on and the
test inputs), and the rule picks one candidate per method:

* ``rule: final_mean`` — the best mean validation score after the last task (CL on the
  validation split); candidates within ``ties`` points of the best are tied, and the tie goes
  to the smallest values, compared key by key in the grid's order (``lr`` first, so the smaller
  learning rate; then the smaller rank).

The choice is frozen: it is written to ``choice_file`` (``lr_choice.json`` with
``lr_choice.md``: the grid, every candidate's validation score, the choice), and every later
run naming the same file (orders 2, 3, ...) reads it instead of tuning again; a run whose
settings differ from the recorded ones is refused. W-NCFT inferred takes W-NCFT's choice when
both run (they share one training).

The rule and the grid are :mod:`.tune_config`'s.

Example:
    >>> chosen = tune_methods(ctx, suite_config, Path("runs/order1"))  # doctest: +SKIP
    >>> chosen["seqlora"]  # doctest: +SKIP
    {'lr': 0.001, 'lora_r': 8}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskneurons._io import check_record, write_json_sealed, write_text_atomic
from taskneurons.data.tasks import examples_hash
from taskneurons.experiments.continual.method_run import continual_experiment
from taskneurons.experiments.continual.tune_config import (
    TuneConfig,
    candidate_folder,
    candidates,
    choice_path,
    choose,
    tuning_label,
)
from taskneurons.provenance import model_fingerprint
from taskneurons.report.tables import markdown_table
from taskneurons.store.settings import model_identity, normal
from taskneurons.training.snapshot import ModelSnapshot


def read_choices(path: Path) -> dict[str, Any]:
    """The methods recorded in a choice file (``{}`` when it does not exist)."""
    if not path.is_file():
        return {}
    return dict(check_record(json.loads(path.read_text(encoding="utf-8")), path)["methods"])


def write_choices(path: Path, methods: dict[str, Any], tune: TuneConfig) -> None:
    """``lr_choice.json`` (sealed) and ``lr_choice.md``: every candidate's score, the choice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_sealed(path, {"rule": tune.rule, "ties": tune.ties, "methods": methods})
    rows = [
        [
            label,
            json.dumps(row["values"]),
            row["score"],
            "yes" if row["values"] == m["choice"] else "",
        ]
        for label, m in methods.items()
        for row in m["rows"]
    ]
    title = (
        f"Training values chosen per method on the validation split of order "
        f"{' -> '.join(next(iter(methods.values()))['record']['order'] or [])} "
        f"(rule {tune.rule}: best mean validation score after the last task; ties within "
        f"{tune.ties} points -> smaller values, lr first)"
    )
    header = ["method", "candidate", "mean validation score after the last task", "chosen"]
    text = f"# {title}\n\n{markdown_table(header, rows, digits=2)}\n"
    write_text_atomic(path.with_suffix(".md"), text)


def tuning_config(cfg: Any, tune: TuneConfig) -> Any:
    """A method's run config as tuned: the tuning order, scored on the validation split (the
    tasks seen so far only: the rule reads the last column; no held-out task)."""
    return cfg.replace(
        order=tune.order if tune.order is not None else cfg.order,
        score_on="validation",
        n_val=tune.n_val,
        reference_cache=None,
        eval_unseen=False,
        held_out=None,
    )


def tuning_record(cfg: Any, tune: TuneConfig, model: Any, tasks: Sequence[Any]) -> dict:
    """What must match for a recorded choice to be reused: the tuned config (candidate values
    aside), the grid and rule, the base model and the train examples of the tasks."""
    spec = {k: v for k, v in tune.to_dict().items() if k not in ("choice_file", "only")}
    ids = set(cfg.order or [t.id for t in tasks])
    return normal(
        {
            "config": cfg.to_dict(),
            "tune": spec,
            "order": cfg.order,
            "model": model_identity(model_fingerprint(model)),
            "train_hash": {t.id: examples_hash(t.train) for t in tasks if t.id in ids},
        }
    )


def tune_methods(ctx: Any, config: Any, out: Path) -> dict[str, dict[str, Any]]:
    """Each run label's chosen training values (``config.tune``), read or tuned and written.

    A method already in the choice file is reused when its record matches (else
    ``ValueError``); the others run their grid (each candidate in ``<choice dir>/tune/<method>/
    <values>/``, resumable) and are added to the file. The model is restored after each run.
    """
    tune = config.tune
    path = choice_path(tune, out)
    methods = read_choices(path)
    runs = config.runs()
    labels = [label for label, _ in runs]
    initial = ModelSnapshot.take(ctx.model)
    for label, cfg in runs:
        if tuning_label(label, labels) != label:
            continue
        base = tuning_config(cfg, tune)
        initial.restore(ctx.model)  # the base model, not the one the last candidate left
        record = tuning_record(base, tune, ctx.model, ctx.tasks)
        if label in methods:
            if methods[label]["record"] != record:
                diff = sorted(k for k in record if record[k] != methods[label]["record"].get(k))
                raise ValueError(
                    f"{path}: {label}'s training values were chosen with other settings "
                    f"(different {', '.join(diff)}); use the same settings or another choice_file"
                )
            continue
        rows = []
        for values in candidates(tune, label):
            initial.restore(ctx.model)
            run = base.replace(train=base.train.replace(**values))
            run = run.replace(reference_cache=str(path.parent / "tune" / "reference_cache.json"))
            folder = candidate_folder(tune, out, label, values)
            res = continual_experiment(
                ctx.model, ctx.tokenizer, ctx.tasks, run, folder, resume=True,
                progress=ctx.progress,
            )  # fmt: skip
            rows.append({"values": values, "score": float(res.metrics["cl"])})
        methods[label] = {"record": record, "rows": rows, "choice": choose(rows, tune.ties)}
        write_choices(path, methods, tune)
    initial.restore(ctx.model)
    return {label: methods[tuning_label(label, labels)]["choice"] for label in labels}
