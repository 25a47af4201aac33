"""Run configuration: typed dataclasses (validated by pydantic), YAML on disk, CLI overrides.

Precedence: dataclass defaults < YAML file < `--set key.path=value` overrides. Every problem
(unknown key, wrong type) is collected and reported at once, naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from xelm.data.libreoffice import DEFAULT_HELDOUT_LANGS, DEFAULT_TRAIN_LANGS
from xelm.errors import XelmError

STRICT = ConfigDict(extra="forbid")
T = TypeVar("T")


@dataclass(config=STRICT)
class DataConfig:
    """Stage 0: the demo corpus (LibreOffice help) and its out-of-domain test set (UDHR)."""

    train_langs: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_TRAIN_LANGS))
    heldout_langs: list[str] = dataclasses.field(
        default_factory=lambda: list(DEFAULT_HELDOUT_LANGS)
    )
    min_translated_share: float = 0.3  # of a page's characters that must differ from English
    min_bytes: int = 200  # drop near-empty pages
    validation_fraction: float = 0.05  # of each language's pages (by hash of the page id)
    test_fraction: float = 0.05
    udhr: bool = True  # also build the UDHR out-of-domain test set
    # Any other corpus instead of the demo's (as `xelm data import`): files, folders or hf:NAME
    # hub datasets; only train_langs and heldout_langs are kept. Hub datasets are read per
    # config (default: one per language, as mC4's), which names the records' language.
    sources: list[str] | None = None
    hf_configs: list[str] | None = None
    hf_split: str = "train"
    text_field: str = "text"
    lang_field: str = "lang"
    id_field: str = "id"
    max_docs_per_lang: int | None = None
    license: str = "unknown"  # of the sources, for the manifest


@dataclass(config=STRICT)
class TokenizerConfig:
    """The shared tokenizer of the seed and every expert."""

    vocab_size: int = 4096  # byte-level BPE vocabulary size, special tokens included
    sample_chars: int = 20_000_000  # characters of the language-balanced training sample
    alpha: float = 0.3  # language sampling exponent, p_l ∝ n_l^alpha (mC4/XGLM: 0.3)
    min_frequency: int = 2
    include_heldout: bool = False  # sample the held-out languages too (default: training only)
    pretrained: str | None = None  # use this HF tokenizer (folder or hub name) instead


@dataclass(config=STRICT)
class TrainConfig:
    """One training run (seed pretraining, continued training, an expert, the dense baseline).

    Budgets are in tokens so runs can be compute-matched; one optimizer step consumes
    `micro_batch_size × grad_accum_steps × processes × seq_len` tokens.
    """

    corpus: str = ""  # corpus folder (its train split is trained on, validation evaluated)
    out: str = ""  # the HF model folder to write
    max_tokens: int = 0  # training budget in tokens
    preset: str | None = None  # build a fresh Llama of this preset (tiny, demo, small) ...
    init: str | None = None  # ... or start from this HF causal LM (folder or hub name)
    tokenizer: str | None = None  # default: the init model's tokenizer
    langs: list[str] | None = None  # default: the corpus's training languages
    allocation: str | None = None  # with `cluster`: train only on that cluster's documents
    cluster: int | None = None  # (an expert: `xelm allocate` folder + cluster id)
    sampling_alpha: float = 1.0  # language sampling p_l ∝ tokens_l^alpha (1: natural mix)
    seq_len: int = 256  # tokens per training sequence
    micro_batch_size: int = 16  # sequences per forward/backward pass (per process)
    grad_accum_steps: int = 1
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    warmup_fraction: float = 0.05  # of the optimizer steps
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm (0: off)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where the hardware has it
    seed: int = 0
    eval_every: int = 0  # optimizer steps between validation evaluations (0: at the end only)
    eval_blocks: int = 8  # validation sequences per language in those evaluations
    log_every: int = 10  # optimizer steps between metric lines
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0: none)
    keep_checkpoints: int = 2  # the last M checkpoints are kept
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    compile: bool = False  # torch.compile the model (measured: no gain on small CPU models)


# TrainConfig fields that don't change the trained model: they may differ between a run and its
# resumption, and changing them does not make a pipeline stage stale.
TRAIN_FIELDS_WITHOUT_EFFECT = frozenset(
    {"out", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints", "threads", "compile"}
)


@dataclass(config=STRICT)
class EvalConfig:
    """Per-language evaluation of the run's models."""

    split: str = "test"  # in-domain split of the corpus
    max_docs: int | None = None  # per language (None: all)
    udhr: bool = True  # also on the UDHR out-of-domain test set (when the data stage built it)


@dataclass(config=STRICT)
class AllocationConfig:
    """One allocation of the training data into k clusters, one per expert (stage 1)."""

    method: Literal["tfidf", "typology"] = "typology"
    k: int = 4
    # typology: lang2vec feature set(s) ("a+b" concatenates); cap cluster bytes at F × total/k
    features: str = "syntax_average"
    max_size_factor: float | None = None
    # tfidf: largest/smallest cluster (documents), char n-grams 1..ngram_max, SVD dims, ...
    max_ratio: float = 1.05
    ngram_max: int = 2
    svd_dims: int = 100
    max_chars: int = 2000
    vocab_docs: int = 5_000
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.method}-k{self.k}"


def _branch_train() -> TrainConfig:
    return TrainConfig(lr=1e-3, checkpoint_every=50)


@dataclass(config=STRICT)
class ExpertsConfig:
    """Stage 2 (Branch-Train): k experts per allocation, and the compute-matched dense run.

    Both get `tokens` in all, with the same training settings (`train`; corpus, init and out
    are filled in by the pipeline). See `xelm.experts` for the budget split and matching.
    """

    tokens: int = 800_000  # T: the experts' total budget, and the dense baseline's
    split: Literal["proportional", "even"] = "proportional"
    match: Literal["updates", "batch"] = "updates"
    dense: bool = True  # also train the dense (k=1) baseline
    train: TrainConfig = dataclasses.field(default_factory=_branch_train)
    # where the experts train (no effect on the result): xelm.launch
    launcher: Literal["sequential", "local", "ray"] = "sequential"
    workers: int = 2
    gpus_per_expert: int = 0
    address: str | None = None  # ray: a running cluster


@dataclass(config=STRICT)
class RouterChoice:
    """One way to set the ensemble's α, evaluated for every allocation it applies to."""

    router: Literal["uniform", "prior", "posterior", "tfidf", "lid"] = "posterior"
    top_k: int | None = None  # keep the k largest α (fixed routers: the others are not run)
    temperature: float | None = None  # posterior: 1, tfidf: 0.1 (the defaults)

    @property
    def name(self) -> str:
        top = f"-top{self.top_k}" if self.top_k else ""
        temp = f"-T{self.temperature:g}" if self.temperature is not None else ""
        return f"{self.router}{top}{temp}"


def _demo_routers() -> list[RouterChoice]:
    return [RouterChoice("posterior"), RouterChoice("tfidf", top_k=1), RouterChoice("lid", top_k=1),
            RouterChoice("prior")]  # fmt: skip


@dataclass(config=STRICT)
class EnsembleConfig:
    """Stage 3: an X-ELM ensemble per allocation, scored with each router, and BTM's merge."""

    # each evaluated for every allocation it applies to; the first is the one plotted
    routers: list[RouterChoice] = dataclasses.field(default_factory=_demo_routers)
    prior_docs: int = 20  # validation documents per language for the cached prior
    route_tokens: int = 32  # prefix routers: each document's head that routes it
    merge: bool = True  # also evaluate the parameter average of each allocation's experts


def _demo_allocations() -> list[AllocationConfig]:
    return [AllocationConfig("typology", 4), AllocationConfig("tfidf", 4)]


def _demo_seed() -> TrainConfig:
    return TrainConfig(preset="demo", max_tokens=2_300_000, checkpoint_every=50)


@dataclass(config=STRICT)
class RunConfig:
    """One X-ELM run: every stage writes one folder under `run_dir`."""

    run_dir: str = "runs/demo"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    # corpus/tokenizer/out of the seed are filled in by the pipeline
    seed: TrainConfig = dataclasses.field(default_factory=_demo_seed)
    # each is written to allocation/<method>-k<k>
    allocations: list[AllocationConfig] = dataclasses.field(default_factory=_demo_allocations)
    # experts/<allocation name>/expert_XX and dense/ (null: stop after the allocations)
    experts: ExpertsConfig | None = dataclasses.field(default_factory=ExpertsConfig)
    # ensembles/<allocation> and merged/<allocation> (null: no ensembles; needs experts)
    ensembles: EnsembleConfig | None = dataclasses.field(default_factory=EnsembleConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise XelmError(f"--set {dotted}: {key!r} is not a section")
    tree[leaf] = value


def _format_errors(source: str, err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        unknown = e["type"] in ("extra_forbidden", "unexpected_keyword_argument")
        msg = "unknown key" if unknown else e["msg"].lower()
        problems.append(f"{key}: {msg}")
    return f"{source}: " + "; ".join(problems)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    cls: type[T] = RunConfig,  # type: ignore[assignment]
    values: dict[str, Any] | None = None,
) -> T:
    """Load a `cls` (default RunConfig) from YAML (or defaults when `path` is None), then `values`
    (e.g. CLI options), then `key.path=value` overrides (parsed as YAML, so
    `--set tokenizer.vocab_size=4096` is an int)."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.exists():
            raise XelmError(f"{path}: no such config file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise XelmError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise XelmError(f"{path}: expected a mapping of sections at the top level")
        tree = loaded or {}
    tree.update({k: v for k, v in (values or {}).items() if v is not None})
    for item in overrides or []:
        if "=" not in item:
            raise XelmError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    try:
        return TypeAdapter(cls).validate_python(tree)
    except ValidationError as e:
        raise XelmError(_format_errors(source, e)) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of configuration values: a stage re-runs when its inputs' change."""
    blob = json.dumps(
        [to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    from xelm.paths import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
