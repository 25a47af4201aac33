"""Branch-Train: k experts branched from one seed, each trained on its own cluster only, and the
compute-matched dense baseline (the same seed on all the data for the same tokens).

Compute matching (DESIGN.md): the budget T tokens is split across the experts in proportion to
their clusters' training tokens (or evenly). With `match="updates"` (the paper's setting, where
clusters × GPUs per expert is constant) every expert runs the dense run's number of optimizer
steps with its share of the dense batch; with `match="batch"` every expert keeps the dense batch
and runs its share of the steps. Either way the experts together see T tokens, like the dense run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic.dataclasses import dataclass as config_dataclass

from xelm.allocate.allocation import Allocation
from xelm.config import STRICT, TrainConfig, load_config, to_dict
from xelm.corpus import Corpus
from xelm.errors import XelmError
from xelm.paths import atomic_write_text
from xelm.tokenizer import load_tokenizer
from xelm.tokens import cluster_streams

EXPERT_INFO = "xelm_expert.json"


@dataclass(frozen=True)
class BranchSpec:
    tokens: int  # total budget T shared by the experts (the dense baseline gets the same)
    split: Literal["proportional", "even"] = "proportional"
    match: Literal["updates", "batch"] = "updates"


@config_dataclass(config=STRICT)
class ExpertJob:
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
        return (self.out / EXPERT_INFO).exists()

    def info(self) -> dict:
        """The finished expert's metadata (`xelm_expert.json`)."""
        return json.loads((self.out / EXPERT_INFO).read_text())


def write_job(job: ExpertJob, folder: str | Path) -> Path:
    from xelm.paths import atomic_write_text

    path = Path(folder) / f"{job.name}.yaml"
    atomic_write_text(path, yaml.safe_dump(to_dict(job), sort_keys=False, allow_unicode=True))
    return path


def load_job(path: str | Path) -> ExpertJob:
    return load_config(path, cls=ExpertJob)


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


def plan_experts(
    seed: str | Path, allocation: str | Path, out: str | Path, spec: BranchSpec, base: TrainConfig
) -> list[ExpertJob]:
    """One training config per cluster: init = the seed, data = the cluster, budget per `spec`."""
    alloc = Allocation(allocation)
    corpus = Corpus(alloc.info["settings"]["corpus"])
    tokenizer = load_tokenizer(base.tokenizer or str(seed))
    check_seed_vocab(seed, tokenizer, base.tokenizer or str(seed))
    langs = alloc.info["settings"]["languages"]
    sizes = []
    for c in range(alloc.k):
        streams = cluster_streams(corpus, tokenizer, "train", langs, alloc, c)
        if not streams:
            raise XelmError(f"{allocation}: cluster {c} has no training documents")
        sizes.append(sum(s.tokens for s in streams.values()))
    even = [1 / alloc.k] * alloc.k
    shares = [s / sum(sizes) for s in sizes] if spec.split == "proportional" else even
    batch_seqs = base.micro_batch_size * base.grad_accum_steps
    dense_steps = spec.tokens // (batch_seqs * base.seq_len)
    micros = apportion(base.micro_batch_size, shares)
    jobs = []
    for c, share in enumerate(shares):
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
        cfg = dataclasses.replace(
            base, corpus=str(corpus.path), init=str(seed), preset=None, max_tokens=tokens,
            micro_batch_size=micro, allocation=str(alloc.path), cluster=c,
            out=str(Path(out) / f"expert_{c:02d}"),
        )  # fmt: skip
        cluster_langs = list(alloc.clusters[c]["languages"])
        jobs.append(ExpertJob(c, cluster_langs, share, str(seed), spec.split, spec.match, cfg))
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
        raise XelmError(f"{where}: tokenizer has {len(tokenizer)} tokens but the seed {seed} only "
                        f"{vocab} embeddings; experts use the seed's own tokenizer")  # fmt: skip


def train_expert(job: ExpertJob, progress: bool = True) -> dict:
    """Train one expert (resuming its checkpoints if any); skip it if already finished."""
    from xelm.train import TRAIN_INFO, train

    if job.done:
        return job.info()
    train(job.config, resume=True, progress=progress)
    run = json.loads((job.out / TRAIN_INFO).read_text())
    info = {
        "cluster": job.cluster,
        "languages": job.languages,
        "share": round(job.share, 6),
        "tokens": run["tokens"],
        "steps": run["steps"],
        "seconds": run["seconds"],
        "resumed_at": run.get("resumed_at", []),
        "seed": job.seed,
        "seed_hash": seed_hash(job.seed),
        "allocation": job.config.allocation,
        "split": job.split,
        "match": job.match,
        "validation_loss": _mean_loss(run),
        "validation": run["validation"],
    }
    if os.environ.get("RANK", "0") == "0":  # one writer under `accelerate launch`
        atomic_write_text(job.out / EXPERT_INFO, json.dumps(info, indent=2) + "\n")
    return info


def train_experts(
    seed: str | Path,
    allocation: str | Path,
    out: str | Path,
    spec: BranchSpec,
    base: TrainConfig,
    progress: bool = True,
) -> list[dict]:
    """Plan and train every expert one after another in this process (the sequential
    launcher without its live view; `xelm.launch` has the others)."""
    return [train_expert(job, progress) for job in plan_experts(seed, allocation, out, spec, base)]


def train_dense(
    seed: str | Path, corpus: str | Path, out: str | Path, tokens: int, base: TrainConfig,
    progress: bool = True,
) -> dict:  # fmt: skip
    """The compute-matched k=1 baseline: the seed on all training data for the same tokens."""
    from xelm.train import TRAIN_INFO, train

    cfg = dataclasses.replace(base, corpus=str(corpus), init=str(seed), preset=None,
                              max_tokens=tokens, out=str(out))  # fmt: skip
    train(cfg, resume=True, progress=progress)
    run = json.loads((Path(out) / TRAIN_INFO).read_text())
    return {"tokens": run["tokens"], "steps": run["steps"], "seconds": run["seconds"],
            "seed_hash": seed_hash(seed), "validation_loss": _mean_loss(run),
            "validation": run["validation"]}  # fmt: skip


def _mean_loss(run: dict) -> float | None:
    """Mean over languages of a finished run's final validation loss."""
    losses = [v["loss"] for v in run["validation"].values()]
    return round(sum(losses) / len(losses), 4) if losses else None


def expert_folders(*paths: str | Path) -> list[Path]:
    """Expert folders, each given or found as expert_* inside a `train experts` output."""
    folders: list[Path] = []
    for p in map(Path, paths):
        inner = sorted(d for d in p.glob("expert_*") if d.is_dir() and not d.name.endswith(".work"))
        if not p.exists():
            raise XelmError(f"{p}: no such expert folder")
        folders += inner if not (p / "config.json").exists() and inner else [p]
    return folders
