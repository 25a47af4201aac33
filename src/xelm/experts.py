"""Branch-Train: k experts branched from one seed, each trained on its own cluster only, and the
compute-matched dense baseline (the same seed on all the data for the same tokens).

Compute matching (DESIGN.md): the budget T tokens is split across the experts in proportion to
their clusters' training tokens (or evenly). With `match="updates"` (the paper's setting, where
clusters × GPUs per expert is constant) every expert runs the dense run's number of optimizer
steps with its share of the dense batch; with `match="batch"` every expert keeps the dense batch
and runs its share of the steps. Either way the experts together see T tokens, like the dense run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from xelm.errors import XelmError
from xelm.paths import relative_to
from xelm.spec import Record, Spec, load_spec
from xelm.train import TrainConfig, TrainRecord

# Branch-Train's own training defaults: a lower peak learning rate than pretraining (the seed
# carries most of the compute) and checkpoints, since experts are the long jobs. A `train:`
# section in a config changes only the keys it names.
BRANCH_TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "checkpoint_every": 50}


def over_branch_defaults(cls, value: Any) -> Any:
    """A `train:` section changes only the keys it names of Branch-Train's defaults."""
    return {**BRANCH_TRAIN_DEFAULTS, **value} if isinstance(value, dict) else value


class BranchSpec(Spec):
    """How the experts (and the dense baseline) are trained from the seed."""

    tokens: int = Field(800_000, ge=1)
    """T: the experts' total budget in tokens, and the dense baseline's"""
    split: Literal["proportional", "even"] = "proportional"
    """the budget across experts: in proportion to their clusters' tokens, or evenly"""
    match: Literal["updates", "batch"] = "updates"
    """updates: every expert runs the dense run's steps with a share of its batch (the
    paper's); batch: the dense batch for a share of the steps"""
    train: TrainConfig = TrainConfig(**BRANCH_TRAIN_DEFAULTS)
    """the training loop's settings (corpus, init and out are filled in per expert)"""
    rounds: int = Field(1, ge=1)
    """HMR's multi-round training: 1 branches every expert from the seed (BTM); R > 1 trains
    down a typology allocation's merge tree, round r on the tree cut at k/2^(R-r) clusters,
    each branched from its parent of round r-1, with T/R tokens per round"""

    _over_branch_defaults = field_validator("train", mode="before")(over_branch_defaults)


class AdaptedFrom(BaseModel):
    """Where a new-language expert came from (in its `xelm_expert.json`)."""

    language: str
    rule: str  # typology, posterior, seed, or index
    parent: int | None  # the ensemble's expert it branched from; None: the seed
    parent_languages: list[str]
    distance: float | None = None  # typology: URIEL distance to the parent's closest language
    loss: float | None = None  # posterior: the parent's loss on the language's validation pages
    budget: int  # tokens it was given


class ExpertRecord(Record):
    """`xelm_expert.json`: a finished expert's place in its X-ELM."""

    FILE = "xelm_expert.json"

    cluster: int
    languages: list[str]
    share: float  # of the budget
    tokens: int
    steps: int
    seconds: float
    resumed_at: list[int] = []
    seed: str  # the model it branched from (relative to the expert's folder)
    seed_hash: str  # of the seed's weights
    allocation: str | None = None  # relative to the expert's folder
    split: str
    match: str
    validation_loss: float | None = None  # mean over its languages
    validation: dict[str, dict[str, float]] = {}
    adapted: AdaptedFrom | None = None  # a new-language expert (`xelm adapt`): its origin


class ExpertJob(Spec):
    """Everything needed to train one expert, self-contained: the launchers pass it to worker
    processes, Ray tasks or a cluster scheduler as a YAML job file (`xelm train job FILE`)."""

    cluster: int
    languages: list[str]
    share: float  # of the budget
    seed: str  # the model it branches from
    split: Literal["proportional", "even"]
    match: Literal["updates", "batch"]
    config: TrainConfig  # the shared training loop's settings (init = seed, data = the cluster)

    @property
    def name(self) -> str:
        return f"expert_{self.cluster:02d}"

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def done(self) -> bool:
        return (self.out / ExpertRecord.FILE).exists()

    def info(self) -> ExpertRecord:
        """The finished expert's record."""
        return ExpertRecord.read(self.out)


def write_job(job: ExpertJob, folder: str | Path) -> Path:
    from xelm.spec import dump_spec

    path = Path(folder) / f"{job.name}.yaml"
    dump_spec(job, path)
    return path


def load_job(path: str | Path) -> ExpertJob:
    return load_spec(ExpertJob, path)


def seed_hash(seed: str | Path) -> str:
    """Fingerprint of a seed's weights: experts record which seed they were branched from."""
    h = hashlib.sha256()
    files = sorted(Path(seed).glob("*.safetensors")) or sorted(Path(seed).glob("*.bin"))
    if not files:
        raise XelmError(f"{seed}: no model weights (*.safetensors) to branch experts from")
    for f in files:
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()[:16]


def apportion(total: int, shares: list[float]) -> list[int]:
    """Split `total` sequences by `shares` into whole numbers (each ≥ 1) that sum to `total`
    (largest remainders), so the experts' batches add up to the dense batch exactly (only when
    there are more experts than sequences does the sum exceed it)."""
    raw = [total * s for s in shares]
    parts = [max(1, int(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    for i in order[: max(0, total - sum(parts))]:
        parts[i] += 1
    while sum(parts) > total and max(parts) > 1:  # minimums of 1 overshot: trim the largest
        parts[parts.index(max(parts))] -= 1
    return parts


def cluster_tokens(alloc, tokenizer) -> list[int]:
    """Training tokens of each cluster of an `Allocation` (tokenising the corpus on first use)."""
    from xelm.corpus import Corpus
    from xelm.tokens import cluster_streams

    corpus = Corpus(alloc.corpus)
    langs = alloc.languages
    sizes = []
    for c in range(alloc.k):
        streams = cluster_streams(corpus, tokenizer, "train", langs, alloc, c)
        if not streams:
            raise XelmError(f"{alloc.path}: cluster {c} has no training documents")
        sizes.append(sum(s.tokens for s in streams.values()))
    return sizes


def plan_experts(
    seed: str | Path, allocation: str | Path, out: str | Path, spec: BranchSpec
) -> list[ExpertJob]:
    """One training config per cluster: data = the cluster, budget per `spec`, branched from
    the seed (or, with `spec.rounds` > 1, from its parent of the previous round: these are the
    last round's jobs; `plan_rounds` gives every round's)."""
    return plan_rounds(seed, allocation, out, spec)[-1]


def plan_rounds(
    seed: str | Path, allocation: str | Path, out: str | Path, spec: BranchSpec
) -> list[list[ExpertJob]]:
    """Every round's jobs, in the order they must run (one round unless `spec.rounds` > 1).

    Round r < R trains the clusters of the allocation's merge tree cut at ⌈k / 2^(R-r)⌉ (on
    their languages), round R the allocation's own clusters (`out/expert_XX`). Each round gets
    T/R tokens, split across its clusters as `spec.split` and `spec.match` say, so the rounds
    together are compute-matched to the dense run (whole steps: up to R-1 steps fewer)."""
    from xelm.allocate.allocation import Allocation
    from xelm.tokenizer import load_tokenizer

    base = spec.train
    if not Path(seed).is_dir():
        raise XelmError(f"{seed}: no such seed folder (experts branch from a local model)")
    alloc = Allocation(allocation)
    tokenizer = load_tokenizer(base.tokenizer or str(seed))
    check_seed_vocab(seed, tokenizer, base.tokenizer or str(seed))
    last = list(alloc.clusters)
    final = [list(c.languages) for c in last]
    cuts = [max(1, -(-alloc.k // 2 ** (spec.rounds - r))) for r in range(1, spec.rounds)]
    if spec.rounds > 1 and alloc.record.tree is None:
        raise XelmError(
            f"{alloc.path}: experts.rounds {spec.rounds} trains down a typology allocation's "
            f"merge tree, and a {alloc.method} allocation has none; use rounds: 1"
        )
    per_round = spec.replace(tokens=spec.tokens // spec.rounds)
    rounds: list[list[ExpertJob]] = []
    parents = {lang: str(seed) for lang in alloc.languages}
    for r, k in enumerate(cuts, start=1):
        groups = tree_cut(alloc, k)
        sizes = [_language_tokens(alloc, tokenizer, g) for g in groups]
        folder = Path(out) / f"round_{r}"
        jobs = _jobs(groups, sizes, [parents[g[0]] for g in groups], per_round, alloc, folder)
        rounds.append(jobs)
        parents = {lang: str(j.out) for j in jobs for lang in j.languages}
    sizes = cluster_tokens(alloc, tokenizer)
    inits = [parents[langs[0]] for langs in final]
    rounds.append(_jobs(final, sizes, inits, per_round, alloc, Path(out), clusters=True))
    return rounds


def tree_cut(alloc, k: int) -> list[list[str]]:
    """The languages of each cluster when a typology allocation's merge tree is cut at k (the
    first n - k merges), ordered as the allocation orders its clusters."""
    from xelm.allocate.typology import PairingTree

    labels = alloc.record.tree["labels"]
    merges = [
        {**m, "members": sorted(labels.index(x) for x in m["languages"])}
        for m in alloc.record.tree["merges"]
    ]
    return [[labels[i] for i in c] for c in PairingTree(len(labels), merges).clusters(k)]


def _language_tokens(alloc, tokenizer, langs: list[str]) -> int:
    from xelm.corpus import Corpus
    from xelm.tokens import token_streams

    streams = token_streams(Corpus(alloc.corpus), tokenizer, "train", langs)
    return sum(s.tokens for s in streams.values())


def _jobs(
    groups: list[list[str]],
    sizes: list[int],
    inits: list[str],
    spec: BranchSpec,
    alloc,
    out: Path,
    clusters: bool = False,
) -> list[ExpertJob]:
    """One job per group of languages, the budget split per `spec`; `clusters`: the groups
    are the allocation's clusters (its document assignments select the data)."""
    base = spec.train
    k = len(groups)
    shares = [s / sum(sizes) for s in sizes] if spec.split == "proportional" else [1 / k] * k
    dense_steps = spec.tokens // base.tokens_per_step()
    micros = apportion(base.micro_batch_size, shares)
    jobs = []
    for c, (langs, share, init) in enumerate(zip(groups, shares, inits, strict=True)):
        if spec.match == "updates":  # the dense run's steps, this share of its batch
            micro = micros[c]
            tokens = dense_steps * micro * base.grad_accum_steps * base.seq_len
        else:  # the dense batch, this share of its steps
            micro, tokens = base.micro_batch_size, round(spec.tokens * share)
        if tokens < micro * base.grad_accum_steps * base.seq_len:
            raise XelmError(
                f"--tokens {spec.tokens:,} is too small: expert {c} ({share:.0%} of the budget) "
                "would not make one optimizer step; raise the budget or shrink the batch"
            )
        data = (
            {"allocation": str(alloc.path), "cluster": c}
            if clusters
            else {"langs": langs, "allocation": None, "cluster": None}
        )
        cfg = base.replace(
            corpus=str(Path(alloc.corpus)),
            init=init,
            preset=None,
            max_tokens=tokens,
            micro_batch_size=micro,
            out=str(out / (f"expert_{c:02d}" if clusters else f"node_{c:02d}")),
            **data,
        )
        jobs.append(
            ExpertJob(
                cluster=c,
                languages=langs,
                share=share,
                seed=init,
                split=spec.split,
                match=spec.match,
                config=cfg,
            )
        )
    return jobs


def check_seed_vocab(seed: str | Path, tokenizer, where: str) -> None:
    """Refuse a tokenizer the seed has no embeddings for before any expert starts (each would
    fail the same way, k times over)."""
    from transformers import AutoConfig

    try:
        vocab = AutoConfig.from_pretrained(str(seed)).vocab_size
    except (OSError, ValueError) as e:
        raise XelmError(f"{seed}: not an HF model folder ({str(e).splitlines()[0]})") from None
    if len(tokenizer) > vocab:
        raise XelmError(
            f"{where}: tokenizer has {len(tokenizer)} tokens but the seed {seed} only "
            f"{vocab} embeddings; experts use the seed's own tokenizer"
        )


def train_expert(job: ExpertJob, progress: bool = True) -> ExpertRecord:
    """Train one expert (resuming its checkpoints if any); skip it if already finished."""
    from xelm.train.loop import train

    if job.done:
        return job.info()
    train(job.config, resume=True, progress=progress)
    run = TrainRecord.read(job.out)
    record = ExpertRecord(
        cluster=job.cluster,
        languages=job.languages,
        share=round(job.share, 6),
        tokens=run.tokens,
        steps=run.steps,
        seconds=run.seconds,
        resumed_at=run.resumed_at,
        seed=relative_to(job.seed, job.out),
        seed_hash=seed_hash(job.seed),
        allocation=relative_to(job.config.allocation, job.out) if job.config.allocation else None,
        split=job.split,
        match=job.match,
        validation_loss=run.mean_validation_loss,
        validation=run.validation,
    )
    if os.environ.get("RANK", "0") == "0":  # one writer under `accelerate launch`
        record.write(job.out)
    return record


def train_experts(
    seed: str | Path,
    allocation: str | Path,
    out: str | Path,
    spec: BranchSpec,
    progress: bool = True,
) -> list[ExpertRecord]:
    """Plan and train every expert one after another in this process, round by round (the
    sequential launcher without its live view; `xelm.launch` has the others)."""
    rounds = plan_rounds(seed, allocation, out, spec)
    return [train_expert(job, progress) for jobs in rounds for job in jobs][-len(rounds[-1]) :]


def train_dense(
    seed: str | Path, corpus: str | Path, out: str | Path, spec: BranchSpec, progress: bool = True
) -> TrainRecord:
    """The compute-matched k=1 baseline: the seed on all training data for the same tokens."""
    from xelm.train.loop import train

    cfg = spec.train.replace(
        corpus=str(corpus), init=str(seed), preset=None, max_tokens=spec.tokens, out=str(out)
    )
    train(cfg, resume=True, progress=progress)
    return TrainRecord.read(out)


def expert_folders(*paths: str | Path) -> list[Path]:
    """Expert folders, each given or found as expert_* inside a `train experts` output."""
    folders: list[Path] = []
    for p in map(Path, paths):
        inner = sorted(d for d in p.glob("expert_*") if d.is_dir() and not d.name.endswith(".work"))
        if not p.exists():
            raise XelmError(f"{p}: no such expert folder")
        folders += inner if not (p / "config.json").exists() and inner else [p]
    return folders
