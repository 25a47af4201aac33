"""The one training loop: seed pretraining, continued training, experts and the dense baseline.

Build -> maybe resume -> loop -> evaluate -> save, top to bottom. Accelerate places the model and
runs the mixed precision, so the same loop runs on one CPU, one GPU or several (`accelerate
launch`). Work in progress lives in `OUT.work/` (checkpoints, metrics); the finished model is
written to `OUT/` in one atomic step, so `OUT/` existing means the run is complete.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xelm.config import TRAIN_FIELDS_WITHOUT_EFFECT, TrainConfig
from xelm.corpus import Corpus
from xelm.errors import XelmError
from xelm.models import build_model, check_vocab, count_parameters, load_model, save_model
from xelm.tokenizer import load_tokenizer
from xelm.tokens import BlockSampler, cluster_streams, language_weights, token_streams

TRAIN_INFO = "xelm_train.json"


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast only where it is fast: on CPUs without AVX-512-BF16/AMX it is several times
    slower than fp32 (measured 16 vs 114 GFLOPS on an AVX2 EPYC), so `auto` then picks fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def lr_lambda(cfg: TrainConfig, total_steps: int):
    warmup = max(1, round(cfg.warmup_fraction * total_steps))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else (
            1 - progress)  # fmt: skip
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay

    return f


def lm_loss(model, block: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of packed blocks (seq_len + 1 tokens
    in, seq_len predictions): no position is wasted on a shifted-away label."""
    logits = model(input_ids=block[:, :-1]).logits
    return F.cross_entropy(logits.float().flatten(0, 1), block[:, 1:].flatten())


# ---------------------------------------------------------------------------------------------
# Checkpoints: HF model folder + optimizer/scheduler/RNG + train state + completeness marker
# ---------------------------------------------------------------------------------------------


def _checkpoints(work: Path) -> list[Path]:
    return sorted(p for p in (work / "checkpoints").glob("step_*") if (p / "COMPLETE").exists())


def save_checkpoint(work: Path, model, optimizer, scheduler, state: dict[str, Any], keep: int):
    from xelm.paths import atomic_dir

    with atomic_dir(work / "checkpoints" / f"step_{state['step']:08d}") as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "trainer_state.pt")  # fmt: skip
        (tmp / "train_state.json").write_text(json.dumps(state, indent=1))
        (tmp / "COMPLETE").write_text("")
    for old in _checkpoints(work)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(ckpt: Path, model, optimizer, scheduler, cfg: TrainConfig) -> dict[str, Any]:
    from safetensors.torch import load_file

    state = json.loads((ckpt / "train_state.json").read_text())
    saved = state["config"]
    changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in dataclasses.asdict(cfg).items()
               if k not in TRAIN_FIELDS_WITHOUT_EFFECT and saved.get(k) != v]  # fmt: skip
    if changed:
        raise XelmError(
            f"{ckpt}: checkpoint is from a different config ({'; '.join(changed)}); resume "
            "with the same settings or train into a new --out"
        )
    weights = {}
    for f in sorted((ckpt / "model").glob("*.safetensors")):
        weights.update(load_file(f))
    try:
        model.load_state_dict(weights, strict=False)
    except RuntimeError as e:
        raise XelmError(f"{ckpt}: weights don't fit the model ({str(e).splitlines()[0]})") from None
    blob = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    return state


# ---------------------------------------------------------------------------------------------
# Evaluation during training
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def validation_loss(model, streams, cfg: TrainConfig, accelerator) -> dict[str, dict[str, float]]:
    """Per-language mean loss on the first `eval_blocks` validation blocks, and bits per byte
    estimated with the stream's tokens/bytes ratio (`xelm eval ppl` does the exact accounting)."""
    model.eval()
    out = {}
    for lang, stream in streams.items():
        arr = stream.array()
        n = min(cfg.eval_blocks, (len(arr) - 1) // cfg.seq_len)
        if n < 1:
            continue
        blocks = np.stack([arr[i * cfg.seq_len : (i + 1) * cfg.seq_len + 1] for i in range(n)])
        block = torch.from_numpy(blocks.astype(np.int64)).to(accelerator.device)
        with accelerator.autocast():
            loss = lm_loss(model, block).item()
        bpb = loss * stream.tokens / stream.bytes / math.log(2)
        out[lang] = {"loss": round(loss, 5), "bits_per_byte": round(bpb, 5)}
    model.train()
    return out


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _require(cfg: TrainConfig) -> None:
    problems = []
    if not cfg.corpus:
        problems.append("corpus is required")
    if not cfg.out:
        problems.append("out is required")
    if cfg.max_tokens <= 0:
        problems.append("max_tokens must be > 0")
    if (cfg.preset is None) == (cfg.init is None):
        problems.append(
            "give exactly one of preset (a fresh model) or init (a model to start from)"
        )
    if cfg.preset is not None and cfg.tokenizer is None:
        problems.append("a fresh model (preset) needs a tokenizer")
    if (cfg.allocation is None) != (cfg.cluster is None):
        problems.append("allocation and cluster go together (an expert's cluster)")
    if problems:
        raise XelmError("train config: " + "; ".join(problems))


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train per `cfg`; returns the folder of the finished HF model."""
    from accelerate import Accelerator

    _require(cfg)
    out = Path(cfg.out)
    work = out.with_name(out.name + ".work")
    if _checkpoints(work) and not resume:
        raise XelmError(f"{work} has checkpoints of an unfinished run: pass --resume to continue "
                        "it, or delete that folder to start over")  # fmt: skip
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cpu = not torch.cuda.is_available()
    device = torch.device("cpu" if cpu else "cuda")
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_supported(device))
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=cpu)

    # --- build: tokenizer, data, model -------------------------------------------------------
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.init)
    corpus = Corpus(cfg.corpus)
    langs = cfg.langs or corpus.train_langs
    if cfg.allocation is None:
        train_streams = token_streams(corpus, tokenizer, "train", langs)
        val_streams = token_streams(corpus, tokenizer, "validation", langs)
    else:  # an expert: only its cluster's documents
        from xelm.allocate.allocation import Allocation

        alloc = Allocation(cfg.allocation)
        train_streams = cluster_streams(corpus, tokenizer, "train", langs, alloc, cfg.cluster)
        val_streams = cluster_streams(corpus, tokenizer, "validation", langs, alloc, cfg.cluster)
        # a TF-IDF cluster can hold a few stray documents of a language: less than one block
        # cannot be sampled, and is too little to matter, so it is left out
        train_streams = {k: s for k, s in train_streams.items() if s.tokens > cfg.seq_len}
        if not train_streams:
            raise XelmError(f"{cfg.allocation}: cluster {cfg.cluster} has no training documents "
                            f"(at least one block of {cfg.seq_len + 1} tokens)")  # fmt: skip
        langs = list(train_streams)
        val_streams = {k: s for k, s in val_streams.items() if k in train_streams}
    weights = language_weights({k: s.tokens for k, s in train_streams.items()}, cfg.sampling_alpha)
    sampler = BlockSampler({k: s.array() for k, s in train_streams.items()}, cfg.seq_len, weights,
                           cfg.seed)  # fmt: skip
    torch.manual_seed(cfg.seed)
    if cfg.preset is not None:
        model = build_model(cfg.preset, tokenizer, cfg.seq_len, cfg.seed)
    else:
        model = load_model(cfg.init)
    check_vocab(model, tokenizer, where=str(cfg.tokenizer or cfg.init))

    world = accelerator.num_processes
    tokens_per_step = cfg.micro_batch_size * cfg.grad_accum_steps * world * cfg.seq_len
    total_steps = cfg.max_tokens // tokens_per_step
    if total_steps < 1:
        raise XelmError(f"max_tokens {cfg.max_tokens:,} is less than one optimizer step "
                        f"({tokens_per_step:,} tokens); raise it or shrink the batch")  # fmt: skip

    # no weight decay on norms and biases (the 1-D parameters)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True,  # one kernel for all params
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    # The scheduler is stepped by us once per optimizer step, so it is not `prepare`d.
    model, optimizer = accelerator.prepare(model, optimizer)
    step_fn = torch.compile(model) if cfg.compile else model

    # --- maybe resume ----------------------------------------------------------------------------
    state: dict[str, Any] = {"step": 0, "tokens": 0, "elapsed": 0.0}
    ckpts = _checkpoints(work)
    if resume and ckpts:
        state = load_checkpoint(ckpts[-1], accelerator.unwrap_model(model), optimizer, scheduler,
                                cfg)  # fmt: skip
        sampler.load_state_dict(state["sampler"])
        state.setdefault("resumed_at", []).append(state["step"])  # recorded in TRAIN_INFO
    metrics = Metrics(work / "metrics.jsonl", after_step=state["step"],
                      enabled=accelerator.is_main_process)  # fmt: skip
    if state["step"] == 0:
        metrics.write({"event": "start", "params": count_parameters(model), "steps": total_steps,
                       "tokens_per_step": tokens_per_step, "precision": "bf16" if use_bf16
                       else "fp32", "languages": weights})  # fmt: skip

    # --- loop ------------------------------------------------------------------------------------
    model.train()
    rank = accelerator.process_index
    t0, elapsed0 = time.perf_counter(), state["elapsed"]
    window_t, window_tokens, window_loss = time.perf_counter(), 0, 0.0
    bar = _Progress(total_steps, state["step"], enabled=progress and accelerator.is_main_process)
    with bar:
        for step in range(state["step"], total_steps):
            loss_sum = 0.0
            for _ in range(cfg.grad_accum_steps):
                # every process draws the same global micro-batch and takes its own slice
                batch = sampler.next_batch(cfg.micro_batch_size * world)
                batch = batch[rank * cfg.micro_batch_size : (rank + 1) * cfg.micro_batch_size]
                with accelerator.autocast():
                    loss = lm_loss(step_fn, batch.to(accelerator.device)) / cfg.grad_accum_steps
                accelerator.backward(loss)
                loss_sum += loss.item()
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            state["step"] = step + 1
            state["tokens"] += tokens_per_step
            window_tokens += tokens_per_step
            window_loss += loss_sum
            state["elapsed"] = elapsed0 + time.perf_counter() - t0
            tps = window_tokens / max(time.perf_counter() - window_t, 1e-9)
            bar.update(state["step"], loss_sum, tps)
            if state["step"] % cfg.log_every == 0 or state["step"] == total_steps:
                n = cfg.log_every if state["step"] % cfg.log_every == 0 else (
                    state["step"] % cfg.log_every)  # fmt: skip
                metrics.write({"step": state["step"], "tokens": state["tokens"],
                               "loss": window_loss / n, "lr": scheduler.get_last_lr()[0],
                               "tokens_per_s": round(tps, 1),
                               "elapsed": round(state["elapsed"], 2)})  # fmt: skip
                window_t, window_tokens, window_loss = time.perf_counter(), 0, 0.0
            if (
                cfg.eval_every
                and state["step"] % cfg.eval_every == 0
                and state["step"] < total_steps
            ):
                metrics.write(
                    {
                        "step": state["step"],
                        "tokens": state["tokens"],
                        "eval": validation_loss(model, val_streams, cfg, accelerator),
                    }
                )
            if (
                cfg.checkpoint_every
                and state["step"] % cfg.checkpoint_every == 0
                and (state["step"] < total_steps)
            ):
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    state["sampler"] = sampler.state_dict()
                    state["config"] = dataclasses.asdict(cfg)
                    save_checkpoint(work, accelerator.unwrap_model(model), optimizer, scheduler,
                                    state, cfg.keep_checkpoints)  # fmt: skip

    # --- evaluate and save -----------------------------------------------------------------------
    final_eval = validation_loss(model, val_streams, cfg, accelerator)
    metrics.write({"step": state["step"], "tokens": state["tokens"], "eval": final_eval})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        info = {"config": dataclasses.asdict(cfg), "steps": state["step"],
                "tokens": state["tokens"], "seconds": round(state["elapsed"], 2),
                "params": count_parameters(model), "precision": "bf16" if use_bf16 else "fp32",
                "languages": langs, "resumed_at": state.get("resumed_at", []),
                "validation": final_eval}  # fmt: skip
        unwrapped = accelerator.unwrap_model(model)
        save_model(unwrapped, tokenizer, out, extra_files={
            TRAIN_INFO: json.dumps(info, indent=2) + "\n",
            "metrics.jsonl": (work / "metrics.jsonl").read_text(),
        })  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    accelerator.wait_for_everyone()  # no process returns before the model is on disk
    return out


class Metrics:
    """Metrics as JSONL (and TensorBoard scalars when it is installed). On resume, lines from
    after the checkpoint are dropped, so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, after_step: int, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.tb = None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            keep = [line for line in path.read_text().splitlines()
                    if json.loads(line).get("step", 0) <= after_step]  # fmt: skip
            path.write_text("".join(line + "\n" for line in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            pass

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "step" in record:
            for key in ("loss", "lr", "tokens_per_s"):
                if key in record:
                    self.tb.add_scalar(f"train/{key}", record[key], record["step"])
            for lang, ev in record.get("eval", {}).items():
                self.tb.add_scalar(f"eval/{lang}/loss", ev["loss"], record["step"])


class _Progress:
    """A rich progress bar: step, loss, tokens/s, ETA."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,  # fmt: skip
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        )  # fmt: skip
        self.task = self.progress.add_task("train", total=total, completed=done, loss=0.0, tps=0.0)

    def __enter__(self):
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)

    def update(self, step: int, loss: float, tps: float) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=step, loss=loss, tps=tps)
