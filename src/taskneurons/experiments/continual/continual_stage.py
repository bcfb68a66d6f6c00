"""The ``continual`` stage: methods learning the tasks in order (Table 5, Figure 4)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from taskneurons.config import NO_FLAGS, Config, flag
from taskneurons.continual.method_config import METHOD_NAMES, MethodConfig
from taskneurons.evaluation.eval_config import EvalConfig
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
            to compute them once.
    """

    order: list[str] | None = None
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    single_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(method="full", lr=2e-5), metadata=NO_FLAGS
    )
    eval: EvalConfig = field(default_factory=EvalConfig)
    n_train: int | None = field(
        default=512, metadata=flag("--n-train", kind="count", help="train examples per task")
    )
    n_test: int | None = field(
        default=200, metadata=flag("--n-test", kind="count", help="test examples per task")
    )
    seed: int = 0
    eval_unseen: bool = True
    reference_cache: str | None = None

    def validate(self) -> None:
        if self.single_train.method not in ("full", "lora"):
            raise ValueError(
                f"single_train.method must be 'full' or 'lora', got {self.single_train.method!r}"
            )
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.order is not None and len(set(self.order)) != len(self.order):
            raise ValueError(f"order repeats a task: {self.order}")


@dataclass
class ContinualSuiteConfig(ContinualConfig):
    """A :class:`ContinualConfig` run once per method.

    Attributes:
        methods: method names (``seqft``, ``seqlora``, ``olora``, ``epi``, ``pertask``,
            ``ncft``, ``wncft``; ``wncft-inferred`` is W-NCFT without task ids); ``None``:
            the one in ``method.name``.
    """

    methods: list[str] | None = field(
        default=None,
        metadata=flag("--method", help="the continual-learning methods, comma-separated"),
    )

    def validate(self) -> None:
        super().validate()
        known = [*METHOD_NAMES, "wncft-inferred"]
        unknown = [m for m in self.methods or [] if m not in known]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; known: {known}")

    def runs(self) -> list[tuple[str, ContinualConfig]]:
        """``(label, config)`` of every method to run."""
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(ContinualConfig)}
        out = []
        for label in self.methods or [self.method.name]:
            name, _, mode = label.partition("-")
            method = dataclasses.replace(
                self.method, name=name, mode="inferred" if mode else self.method.mode
            )
            out.append((label, ContinualConfig(**{**base, "method": method})))
        return out


STAGE = register(
    Stage(
        name="continual",
        config=ContinualSuiteConfig,
        run="taskneurons.experiments.continual.suite:run_continual",
        result="taskneurons.experiments.continual.suite:ContinualSuiteResult",
        title="learn the tasks in order with each method; accuracy matrix, CL, FG, BWT, FWT",
        order=120,
        changes_model=True,
        files={
            "table5": "final score per task, CL, BWT, FWT per method (Table 5 layout)",
            "forgetting": "FG_j per stage for every method (Figure 4)",
            "suite": "Table 5 rows and FG_j curves as JSON",
            "reference_cache.json": "single-task and zero-shot scores shared by the methods",
            "forgetting_*": "FG_j per stage of a run's methods (Figure 4)",
        },
    )
)
