"""The ``prompts`` stage: zero-shot scores under prompt variants, paired differences."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from taskneurons.config import Config, build
from taskneurons.config_fields import test_examples
from taskneurons.data.prompt_config import PromptConfig
from taskneurons.evaluation.eval_config import EvalConfig
from taskneurons.experiments.stage import Stage, register


def _default_variants() -> list[dict[str, Any]]:
    return [{"name": "plain"}, {"name": "chat", "chat_template": True}]


@dataclass
class PromptVariantsConfig(Config):
    """Knobs of the prompt-variants experiment.

    Attributes:
        variants: ``{name: str, **PromptConfig overrides}`` per variant, the first being the
            reference every other is compared with; each variant's prompt is ``eval.prompt``
            with its overrides (e.g. ``{name: chat, chat_template: true}``).
        n_test: test examples per task (label-stratified with ``seed``; ``None``: all).
        seed: seed of the test subsets and of the statistics' resampling.
        eval: how tasks are evaluated (its ``prompt`` is the base of every variant).
        n_boot: bootstrap resamples for the CI, and sign-flip draws for the p-value.
    """

    variants: list[dict[str, Any]] = field(default_factory=_default_variants)
    n_test: int | None = test_examples(200)
    seed: int = 0
    eval: EvalConfig = field(default_factory=EvalConfig)
    n_boot: int = 2000

    def validate(self) -> None:
        if len(self.variants) < 2:
            raise ValueError(
                f"variants: need at least 2 prompt variants (a reference and one to compare), "
                f"got {len(self.variants)}"
            )
        allowed = [f.name for f in dataclasses.fields(PromptConfig)]
        seen: set[str] = set()
        for i, variant in enumerate(self.variants):
            name = variant.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"variants[{i}]: every variant needs a non-empty string 'name'")
            if name in seen:
                raise ValueError(f"variants[{i}]: variant name {name!r} is used twice")
            seen.add(name)
            unknown = sorted(k for k in variant if k != "name" and k not in allowed)
            if unknown:
                raise ValueError(
                    f"variants[{i}] ({name!r}): unknown prompt key {unknown[0]!r}; allowed: "
                    f"name, {', '.join(allowed)}"
                )
            try:  # the override values, typed as PromptConfig's fields
                self.prompt_for(name, where=f"variants[{i}] ({name!r})")
            except ValueError as exc:
                raise ValueError(str(exc)) from None  # from_dict adds the file and section
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {self.n_boot}")

    def names(self) -> list[str]:
        """The variants' names, reference first."""
        return [v["name"] for v in self.variants]

    def prompt_for(self, name: str, where: str = "") -> PromptConfig:
        """``eval.prompt`` with variant ``name``'s overrides (``ConfigError`` on a bad value)."""
        variant = next(v for v in self.variants if v.get("name") == name)
        overrides = {k: v for k, v in variant.items() if k != "name"}
        return build(PromptConfig, {**self.eval.prompt.to_dict(), **overrides}, where=where)


#: what the stage writes, for the run README
FILES = """
    prompt_variants: zero-shot score per task and prompt variant; paired difference to the
        first variant (bootstrap 95 % CI, sign-flip p)
    per_example.json: per-example scores per task and variant (and a rendered prompt of
        each)
    prompt_variants_config.json: prompt-variant knobs and provenance
"""

STAGE = register(Stage(
    name="prompts", config=PromptVariantsConfig, order=70, run=".prompt_variants:run_prompts",
    result=".prompt_variants:PromptVariantsResult", files=FILES,
    title="zero-shot scores under several prompt variants (plain vs chat template), paired "
    "differences",
))  # fmt: skip
