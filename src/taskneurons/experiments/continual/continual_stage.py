"""The ``continual`` stage: methods learning the tasks in order (Table 5, Figure 4)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from taskneurons.config import Config, ConfigError, build, deep_merge
from taskneurons.config_fields import NO_FLAGS, defaults_of, flag, test_examples, train_examples
from taskneurons.continual.method_config import MethodConfig
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.continual.tune_config import TuneConfig
from taskneurons.experiments.knob_checks import check_count, check_ids
from taskneurons.experiments.stage import Stage, register
from taskneurons.training.train_config import TrainConfig


@dataclass
class ContinualConfig(Config):
    """Knobs of the continual-learning experiment.

    Attributes:
        order: task ids in training order (``None``: the order the tasks are given in).
        method: the method and its options (:class:`~taskneurons.continual.base.MethodConfig`).
        train: each stage's training (lr, steps, LoRA knobs; the method sets ``method``).
        single_train: the single-task training behind A(i) (``full`` or ``lora``).
        eval: how tasks are scored.
        n_train: train examples per task (label-stratified with ``seed``; ``None``: all).
        n_test: test examples per task.
        seed: seed of the data subsets.
        eval_unseen: also score the tasks not trained yet (needed for FWT).
        reference_cache: the JSON cache of A(i) and b(i) (``None``:
            ``<out_dir>/reference_cache.json``); point the runs of several methods at one file
            to compute them once. W-NCFT's task vectors and EPI's prototypes are kept beside
            it in ``task_vectors.json`` (:mod:`taskneurons.continual.vector_cache`).
        n_val: validation examples per task, carved from the train examples the run does not
            train on and disjoint from the test inputs
            (:func:`~taskneurons.data.validation.validation_split`; ``None``: no split).
        score_on: score the matrix on the ``"test"`` examples (results) or on the
            ``"validation"`` split (choosing hyper-parameters; needs ``n_val``).
        held_out: ids of loaded tasks that no method trains on: after the last task each is
            scored (``n_test`` test examples) against its zero-shot score (general ability
            kept); they are left out of ``order``.
    """

    order: list[str] | None = None
    method: MethodConfig = field(default_factory=MethodConfig.make)
    train: TrainConfig = field(default_factory=TrainConfig)
    single_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(method="full", lr=2e-5), metadata=NO_FLAGS
    )
    eval: EvalConfig = field(default_factory=EvalConfig)
    n_train: int | None = train_examples(512)
    n_test: int | None = test_examples(200)
    seed: int = 0
    eval_unseen: bool = True
    reference_cache: str | None = None
    n_val: int | None = None
    score_on: Literal["test", "validation"] = "test"
    held_out: list[str] | None = None

    def validate(self) -> None:
        if self.single_train.method not in ("full", "lora"):
            raise ValueError(
                f"single_train.method must be 'full' or 'lora', got {self.single_train.method!r}"
            )
        if self.score_on == "validation" and self.n_val is None:
            raise ValueError("score_on: validation needs n_val (validation examples per task)")
        for name in ("n_train", "n_test", "n_val"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.order is not None and len(set(self.order)) != len(self.order):
            raise ValueError(f"order repeats a task: {self.order}")
        both = sorted(set(self.order or []) & set(self.held_out or []))
        if both:
            raise ValueError(f"held_out: {both} also in order; a held-out task is never trained")

    def check_tasks(self, tasks: Sequence[Any], key: str = "continual") -> None:
        """Two tasks or more, and ``order`` lists each of them once."""
        held = set(self.held_out or [])
        check_ids(self.held_out, tasks, f"{key}.held_out")
        trained = [t for t in tasks if t.id not in held]
        check_count(trained, key, "BWT, FWT and forgetting compare tasks learnt one after another")
        check_ids(self.order, tasks, f"{key}.order")
        left = [t.id for t in trained if self.order is not None and t.id not in self.order]
        if left:
            raise ValueError(
                f"{key}.order: leaves out the tasks {left}; list every task of the run once "
                "(CL, BWT and FWT average over them all), or leave order out to learn the "
                "tasks as given, or name them in held_out"
            )


@dataclass
class ContinualSuiteConfig(ContinualConfig):
    """A :class:`ContinualConfig` run once per method.

    Attributes:
        method: options shared by the methods that take them (``k`` for NCFT and W-NCFT,
            ``lambda_orth`` for O-LoRA, ...); each method's config holds only its own
            (:class:`~taskneurons.continual.method_config.MethodConfig`), and an option no
            listed method takes is refused. Without ``methods``, ``method.name`` names the one
            method to run (default ``ncft``).
        methods: method names (``seqft``, ``seqlora``, ``olora``, ``epi``, ``migu``,
            ``pertask``, ``ncft``, ``wncft``; ``wncft-inferred`` is W-NCFT without task ids).
        tune: each method's training values chosen from a grid on the validation split of
            the first order by a fixed rule, then frozen (:mod:`.tune_config`,
            :mod:`.lr_choice`); ``None``: every method trains with ``train`` as given.
        seeds: run the whole suite once per seed (``<out>/seed<s>/``), each seed setting the
            training order of examples and LoRA's init (``train.seed``) and the methods' random
            subsets (``method.seed``, ``method.attribution.seed``); the data (train, validation
            and test examples: ``seed``) and the references stay fixed (:mod:`.seeds`).
            ``None``: one run with the seeds as configured.
    """

    method: dict[str, Any] = field(default_factory=dict, metadata={"options_of": MethodConfig})
    methods: list[str] | None = field(
        default=None,
        metadata=flag("--method", help="the continual-learning methods, comma-separated"),
    )
    tune: TuneConfig | None = None
    seeds: list[int] | None = None

    def validate(self) -> None:
        super().validate()
        if self.methods is not None and not self.methods:
            raise ValueError(
                "methods: an empty list runs no method; name one or more, or leave methods out "
                "to run method.name (default ncft)"
            )
        if self.seeds is not None and (
            len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds)
        ):
            raise ValueError(f"seeds: give two or more different seeds, got {self.seeds}")
        twice = sorted({m for m in self.methods or [] if self.methods.count(m) > 1})
        if twice:
            raise ValueError(f"methods: {twice} listed twice (each method has one results folder)")
        if isinstance(self.method, MethodConfig):  # one method's config: its options, shared
            self.method = self.method.to_dict()
        self.runs()  # every method's config built: names, options and values checked

    def for_seed(self, seed: int) -> ContinualSuiteConfig:
        """The suite of one seed: ``train.seed``, and the listed methods' ``seed`` and
        ``attribution.seed`` where they take them, set to ``seed``; nothing else changes.

        Example:
            >>> cfg = ContinualSuiteConfig(methods=["seqft", "wncft"], seeds=[0, 1])
            >>> one = cfg.for_seed(1)
            >>> one.train.seed, one.method["seed"], one.method["attribution"]["seed"], one.seed
            (1, 1, 1, 0)
        """
        names = [_method_name(label) for label in self.labels()]
        takes = {key for n in names for key in MethodConfig.keys(n)}
        method = dict(self.method)
        if "seed" in takes:
            method["seed"] = seed
        if "attribution" in takes:
            att = method.get("attribution", {})
            att = att.to_dict() if hasattr(att, "to_dict") else dict(att)
            method["attribution"] = {**att, "seed": seed}
        return self.replace(seeds=None, train=self.train.replace(seed=seed), method=method)

    def check_tasks(self, tasks: Sequence[Any], key: str = "continual") -> None:
        """As :meth:`ContinualConfig.check_tasks`; with ``tune``, its order's tasks are loaded
        and each has ``tune.n_val`` train examples beyond the ``n_train`` it trains on."""
        super().check_tasks(tasks, key)
        if self.tune is None:
            return
        check_ids(self.tune.order, tasks, f"{key}.tune.order")
        for t in tasks:
            if self.tune.order is not None and t.id not in self.tune.order:
                continue
            used = min(self.n_train, len(t.train)) if self.n_train else len(t.train)
            if len(t.train) - used < self.tune.n_val:
                raise ValueError(
                    f"{key}.tune.n_val: task {t.id!r} has {len(t.train)} train examples, "
                    f"{used} trained on (n_train): {len(t.train) - used} left for "
                    f"{self.tune.n_val} validation examples"
                )

    def method_defaults(self, name: str) -> dict[str, Any]:
        """What method ``name`` takes from the suite unless ``method`` sets it: the suite's
        ``seed`` for its seeds and its training prompt (fitted to the model's context by the
        runner) for its prompts."""
        shared = {
            "seed": self.seed,
            "random_seed": self.seed,
            "prompt": self.train.prompt.to_dict(),
        }
        return defaults_of(MethodConfig.variant(name), shared)

    def labels(self) -> list[str]:
        """The runs' labels: ``methods``, or the one method of ``method.name``."""
        return list(self.methods or [self.method.get("name", MethodConfig.default)])

    def runs(self) -> list[tuple[str, ContinualConfig]]:
        """``(label, config)`` of every method to run, each with its own options only."""
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(ContinualConfig)}
        labels = self.labels()
        names = [_method_name(label) for label in labels]
        _check_shared(self.method, names)
        out = []
        for label, name in zip(labels, names, strict=True):
            options = {k: v for k, v in self.method.items() if k in MethodConfig.keys(name)}
            if label.endswith("-inferred"):
                options["mode"] = "inferred"
            options = deep_merge(self.method_defaults(name), options)
            try:
                method = build(MethodConfig, {**options, "name": name}, where="")
            except ConfigError as exc:
                raise ValueError(f"method ({label}): {exc}") from None
            out.append((label, ContinualConfig(**{**base, "method": method})))
        return out


def _method_name(label: str) -> str:
    """The method of a run label (``wncft-inferred`` is W-NCFT); ``ValueError`` if unknown."""
    known = [*MethodConfig.names(), "wncft-inferred"]
    if label not in known:
        raise ValueError(f"methods: unknown {[label]}; known: {known}")
    return label.partition("-")[0]


def _check_shared(options: dict[str, Any], names: list[str]) -> None:
    """Refuse a shared option that none of the methods ``names`` takes, naming those that do."""
    for key in options:
        if key == MethodConfig.tag or any(key in MethodConfig.keys(n) for n in names):
            continue
        takers = [n for n in MethodConfig.names() if key in MethodConfig.keys(n)]
        hint = f"an option of {', '.join(takers)}" if takers else "no method's option"
        raise ValueError(f"method.{key}: {hint}; none of the methods {names} takes it")


#: what the stage writes, for the run README
FILES = """
    table5: final score per task, CL, BWT, FWT per method (Table 5 layout)
    forgetting: FG_j per stage for every method (Figure 4)
    suite: Table 5 rows and FG_j curves as JSON
    reference_cache.json: single-task and zero-shot scores shared by the methods
    task_vectors.json: W-NCFT's task vectors and EPI's prototypes shared by the methods
    forgetting_*: FG_j per stage of a run's methods (Figure 4)
    held_out: each method's score on the tasks none trained on, against zero-shot
    routing: W-NCFT's and EPI's routing accuracy after the last task
    seeds: CL, BWT, FWT over seeds with intervals over seeds and test examples
    seed_pairs: methods compared by paired t-tests over seeds, Holm-adjusted
    lr_choice: the training values chosen per method on the validation split (tune)
    seed*: the suite of one seed
"""

STAGE = register(Stage(
    name="continual", config=ContinualSuiteConfig, order=120, changes_model=True,
    run=".seeds:run_continual", result=".suite:ContinualSuiteResult", files=FILES,
    check_folder=".suite:check_checkpoints",
    title="learn the tasks in order with each method; accuracy matrix, CL, FG, BWT, FWT",
))  # fmt: skip
