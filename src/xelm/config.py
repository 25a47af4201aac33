"""A run's configuration: the stages' own settings classes, composed into one `RunConfig`.

Each section is declared once, by the stage that uses it (`xelm.spec` says how settings are
loaded, overridden and fingerprinted); this module only puts them together and says what the
embedded demo runs by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from xelm.adapt import AdaptSpec
from xelm.allocate import AllocationSpec, TfidfAllocationSpec, TypologySpec
from xelm.data.build import DataConfig
from xelm.ensemble.build import PriorSpec
from xelm.ensemble.routers import RouterChoice
from xelm.experts import BranchSpec
from xelm.icl.tasks import IclSpec
from xelm.launch import LaunchSpec
from xelm.spec import Spec, dump_spec, fingerprint, load_spec, no_effect
from xelm.tokenizer import TokenizerSpec
from xelm.train import TrainConfig

__all__ = [
    "AdaptConfig",
    "AllocationSpec",
    "DataConfig",
    "EnsembleConfig",
    "EvalConfig",
    "ExpertsConfig",
    "RouterChoice",
    "RunConfig",
    "TokenizerSpec",
    "TrainConfig",
    "dump_config",
    "fingerprint",
    "load_config",
]


class EvalConfig(Spec):
    """Per-language evaluation of the run's models."""

    split: str = "test"
    """in-domain split of the corpus"""
    max_docs: int | None = Field(None, ge=1)
    """documents per language (none: all)"""
    udhr: bool = True
    """also on the UDHR out-of-domain test set (when the data stage built it)"""
    install_guide: bool = True
    """also on the installation guide test set (when the data stage built it)"""
    debian_faq: bool = True
    """also on the Debian FAQ test set (when the data stage built it)"""
    stress: bool = True
    """also on the preamble stress set (when the data stage built it)"""
    max_docs_ood: int | None = Field(None, ge=1)
    """documents per language on the installation guide, FAQ and stress sets (none: max_docs)"""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 autocast where the hardware does it fast (log-softmax and sums in fp32)"""


class IclConfig(IclSpec):
    """Few-shot in-context evaluation (`xelm data icl` tasks, scored by lm-eval)."""

    langs: list[str] | None = None
    """languages to score (none: the training languages)"""
    shots: list[int] = Field(default_factory=lambda: [0, 1, 4, 8])
    """numbers of demonstrations"""
    seeds: int = Field(5, ge=1)
    """demonstration seeds per shot count (0-shot runs once)"""
    routers: Literal["first", "all"] = "first"
    """X-ELMs: with their first applicable router (the plotted one) or with every router"""
    merged: bool = True
    """also the parameter-averaged models"""
    batch_size: int = no_effect(8, ge=1)

    @field_validator("shots")
    @classmethod
    def _shots(cls, shots: list[int]) -> list[int]:
        if not shots or any(n < 0 for n in shots):
            raise ValueError("give at least one number of demonstrations, each ≥ 0")
        return sorted(set(shots))


class ExpertsConfig(BranchSpec, LaunchSpec):
    """Stage 2 (Branch-Train): k experts per allocation, and the compute-matched dense run.
    Both get `tokens` in all, with the same training settings (see `xelm.experts`)."""

    dense: bool = no_effect(True)
    """also train the dense (k=1) baseline"""
    multi_round: int | None = no_effect(None, ge=2)
    """also train each typology allocation's experts in this many rounds (HMR), as the X-ELM
    `<allocation>-r<R>`, to compare with single-round experts at the same k"""


def _demo_routers() -> list[RouterChoice]:
    return [
        RouterChoice(router="posterior"),
        RouterChoice(router="tfidf", top_k=1),
        RouterChoice(router="lid", top_k=1),
        RouterChoice(router="prior"),
    ]


class EnsembleConfig(Spec):
    """Stage 3: an X-ELM ensemble per allocation, scored with each router, and BTM's merge."""

    routers: list[RouterChoice] = Field(default_factory=_demo_routers)
    """each is evaluated for every allocation it applies to; the first is the one plotted"""
    prior: PriorSpec = PriorSpec()
    """BTM's cached prior, stored in the ensemble folder"""
    route_tokens: int = Field(32, ge=1)
    """prefix routers: the head of each document that routes it"""
    merge: bool = True
    """also evaluate the parameter average of each allocation's experts"""


class AdaptConfig(AdaptSpec):
    """Stage 4 (HMR vs LAPT): one allocation's X-ELM grown by the new languages, once per
    parent rule, and the dense model continued on each new language (LAPT), same budget."""

    allocation: str | None = None
    """the allocation whose X-ELM is adapted (default: the first; its URIEL settings are the
    typology rule's when it is a typology allocation)"""
    parents: list[str] = ["typology", "seed"]
    """one adapted X-ELM per parent rule (overrides `parent`)"""
    lapt: bool = True
    """also LAPT of the dense model (needs experts.dense)"""

    @field_validator("parents")
    @classmethod
    def _rules(cls, rules: list[str]) -> list[str]:
        for rule in rules:
            AdaptSpec._rule(rule)
        if not rules or len(set(rules)) < len(rules):
            raise ValueError("name each parent rule once (at least one)")
        return rules

    def rule(self, parent: str) -> AdaptSpec:
        """The library's settings for one parent rule."""
        return self.part(AdaptSpec).replace(parent=parent)


# The demo's seed: most of the compute goes here (the paper's regime: a well-trained seed, then
# a smaller branch budget). A `seed:` section in a config changes only the keys it names.
SEED_DEFAULTS: dict[str, Any] = {"preset": "demo", "max_tokens": 2_300_000, "checkpoint_every": 50}


class RunConfig(Spec):
    """One X-ELM run: every stage writes one folder under `run_dir`."""

    run_dir: str = no_effect("runs/demo")
    """the run directory"""
    data: DataConfig = DataConfig()
    tokenizer: TokenizerSpec = TokenizerSpec()
    seed: TrainConfig = TrainConfig(**SEED_DEFAULTS)
    """the multilingual seed (corpus, tokenizer and out are filled in)"""
    allocations: list[AllocationSpec] = Field(
        default_factory=lambda: [TypologySpec(k=4), TfidfAllocationSpec(k=4)]
    )
    """each is written to allocation/<method>-k<k>"""
    experts: ExpertsConfig | None = ExpertsConfig()
    """experts/<allocation>/expert_XX and dense/ (null: stop after the allocations)"""
    ensembles: EnsembleConfig | None = EnsembleConfig()
    """ensembles/<allocation> and merged/<allocation> (null: none; needs experts)"""
    eval: EvalConfig = EvalConfig()
    adapt: AdaptConfig | None = None
    """adapted/<allocation>-<rule> and lapt/<lang> (null: no adaptation; needs ensembles)"""
    icl: IclConfig | None = None
    """few-shot evaluation: icl/tasks and icl/scores/<model>.json (null: none)"""

    @field_validator("seed", mode="before")
    @classmethod
    def _over_seed_defaults(cls, value: Any) -> Any:
        return {**SEED_DEFAULTS, **value} if isinstance(value, dict) else value

    @field_validator("allocations")
    @classmethod
    def _distinct(cls, allocations: list) -> list:
        names = [a.name for a in allocations]
        if len(set(names)) < len(names):
            raise ValueError(f"two entries named the same ({', '.join(names)})")
        return allocations

    @model_validator(mode="after")
    def _adaptable(self) -> RunConfig:
        a = self.adapt
        if a is None:
            return self
        if self.ensembles is None or self.experts is None:
            raise ValueError("adapt: needs experts and ensembles (an X-ELM to adapt)")
        if not a.langs:
            raise ValueError("adapt.langs: name the new languages (e.g. data.heldout_langs)")
        old = [lang for lang in a.langs if lang in self.data.train_langs]
        if old:
            raise ValueError(f"adapt.langs: {', '.join(old)} already in data.train_langs")
        names = [spec.name for spec in self.allocations]
        if a.allocation is not None and a.allocation not in names:
            raise ValueError(f"adapt.allocation {a.allocation!r}: use one of {', '.join(names)}")
        if a.lapt and not self.experts.dense:
            raise ValueError("adapt.lapt: needs the dense run (experts.dense: true)")
        return self

    @property
    def adapted_allocation(self):
        """The allocation spec whose X-ELM `adapt` grows."""
        name = self.adapt.allocation or self.allocations[0].name
        return next(spec for spec in self.allocations if spec.name == name)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> RunConfig:
    """A RunConfig from YAML (or the demo's defaults), CLI values and `--set` overrides."""
    return load_spec(RunConfig, path, overrides, values)


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    dump_spec(cfg, path)
