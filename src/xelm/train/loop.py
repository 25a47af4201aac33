"""The one training loop: seed pretraining, continued training, experts, the dense baseline.

`train` reads top to bottom: build (data, model, optimizer) → maybe resume → fit (the step loop)
→ evaluate and save. accelerate places the model and runs the mixed precision, so the same loop
runs on one CPU, one GPU or several (`accelerate launch`). Work in progress lives in `OUT.work/`
(checkpoints, metrics); the finished model is written to `OUT/` in one atomic step, so `OUT/`
existing means the run is complete.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from xelm.errors import XelmError
from xelm.models import (
    build_model,
    check_vocab,
    count_parameters,
    load_model,
    save_model,
    to_device,
    use_bf16,
)
from xelm.paths import hf_ref, writable
from xelm.tokenizer import load_tokenizer
from xelm.train.checkpoint import Checkpointer, TrainState
from xelm.train.config import TrainConfig
from xelm.train.data import TrainingData, training_data
from xelm.train.metrics import MetricsLog, fusable_head, lm_loss, progress_bar, validation_loss
from xelm.train.record import TrainRecord


def lr_lambda(cfg: TrainConfig, total_steps: int):
    """Linear warmup, then cosine/linear decay to `min_lr_ratio` (or constant).

    Not transformers' `get_cosine_with_min_lr_schedule_with_warmup`: its warmup starts at a
    learning rate of 0, which wastes the first update (experts run few steps), and it has no
    linear variant with a floor."""
    warmup = max(1, round(cfg.warmup_fraction * total_steps))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if cfg.schedule == "cosine":
            decay = 0.5 * (1 + math.cos(math.pi * progress))
        else:
            decay = 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay

    return f


@dataclass
class Run:
    """A built run: what the step loop works on."""

    cfg: TrainConfig
    accelerator: object
    model: torch.nn.Module
    step_fn: torch.nn.Module  # the model, compiled when asked
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    data: TrainingData
    tokenizer: object
    state: TrainState
    total_steps: int
    tokens_per_step: int
    precision: str


def _accelerator(cfg: TrainConfig, work: Path):
    from accelerate import Accelerator
    from accelerate.utils import is_tensorboard_available

    cpu = not torch.cuda.is_available()
    device = torch.device("cpu" if cpu else "cuda")
    bf16 = use_bf16(cfg.precision, device)
    tensorboard = "tensorboard" if is_tensorboard_available() else None
    accelerator = Accelerator(
        mixed_precision="bf16" if bf16 else "no",
        cpu=cpu,
        log_with=tensorboard,
        project_dir=str(work),
    )
    if tensorboard:
        accelerator.init_trackers("tensorboard")
    return accelerator


def _optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    # no weight decay on norms and biases (the 1-D parameters)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def build(cfg: TrainConfig, work: Path) -> Run:
    """Data, model, optimizer and schedule, prepared by accelerate; the state at step 0."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.init is not None:
        hf_ref(cfg.init)  # a missing model folder is said as such, before its tokenizer
    accelerator = _accelerator(cfg, work)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.init)
    data = training_data(cfg, tokenizer)
    torch.manual_seed(cfg.seed)
    if cfg.preset is not None:
        model = build_model(cfg.preset, tokenizer, cfg.seq_len, cfg.seed)
    else:
        model = load_model(cfg.init)
    check_vocab(model, tokenizer, where=str(cfg.tokenizer or cfg.init))
    tokens_per_step = cfg.tokens_per_step(accelerator.num_processes)
    total_steps = cfg.max_tokens // tokens_per_step
    if total_steps < 1:
        raise XelmError(
            f"max_tokens {cfg.max_tokens:,} is less than one optimizer step "
            f"({tokens_per_step:,} tokens); raise it or shrink the batch"
        )
    optimizer = _optimizer(cfg, model)
    # stepped by us once per optimizer step (accelerate would step a prepared one per process)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, data.sampler, state)
    step_fn = _compiled(model, cfg.fused_loss) if cfg.compile else model
    precision = "bf16" if accelerator.mixed_precision == "bf16" else "fp32"
    return Run(
        cfg,
        accelerator,
        model,
        step_fn,
        optimizer,
        scheduler,
        data,
        tokenizer,
        state,
        total_steps,
        tokens_per_step,
        precision,
    )


def _compiled(model, fused_loss: bool):
    """torch.compile for the training step. With the fused loss, only the decoder is compiled
    (in place), so the output layer and the loss stay fused; otherwise the whole model."""
    if fused_loss and fusable_head(model) is not None:
        model.get_decoder().compile()
        return model
    return torch.compile(model)


def train_step(run: Run) -> torch.Tensor:
    """One optimizer step over `grad_accum_steps` micro-batches; returns the step's loss, on
    the device: reading it (a host sync) would make the host wait for the GPU every step."""
    cfg, acc = run.cfg, run.accelerator
    world, rank = acc.num_processes, acc.process_index
    loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
    for _ in range(cfg.grad_accum_steps):
        # every process draws the same global micro-batch and takes its own slice
        batch = run.data.sampler.next_batch(cfg.micro_batch_size * world)
        batch = batch[rank * cfg.micro_batch_size : (rank + 1) * cfg.micro_batch_size]
        with acc.autocast():
            loss = lm_loss(run.step_fn, to_device(batch, acc.device), cfg.fused_loss)
            loss = loss / cfg.grad_accum_steps
        acc.backward(loss)
        loss_sum += loss.detach().double()
    if cfg.grad_clip > 0:
        acc.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum


def fit(run: Run, metrics: MetricsLog, checkpointer: Checkpointer, progress: bool) -> None:
    """The step loop, from the state's step to the end: metrics every `log_every` steps,
    validation every `eval_every`, checkpoints every `checkpoint_every`."""
    cfg, state = run.cfg, run.state
    run.model.train()
    t0, elapsed0 = time.perf_counter(), state.elapsed
    window_t, window_tokens, window_loss = time.perf_counter(), 0, 0.0
    shown, tps = 0.0, 0.0  # on the bar: as of the last metrics line
    with progress_bar(progress and run.accelerator.is_main_process) as bar:
        task = bar.add_task("train", total=run.total_steps, completed=state.step, loss=0.0, tps=0.0)
        while state.step < run.total_steps:
            loss = train_step(run)
            state.step += 1
            state.tokens += run.tokens_per_step
            state.elapsed = elapsed0 + time.perf_counter() - t0
            window_tokens += run.tokens_per_step
            window_loss += loss
            if state.step % cfg.log_every == 0 or state.step == run.total_steps:
                n = (state.step - 1) % cfg.log_every + 1  # steps in this window
                shown = float(window_loss) / n  # the host reads the loss only here
                state.elapsed = elapsed0 + time.perf_counter() - t0  # the GPU caught up
                tps = window_tokens / max(time.perf_counter() - window_t, 1e-9)
                metrics.write(
                    {
                        "step": state.step,
                        "tokens": state.tokens,
                        "loss": shown,
                        "lr": run.scheduler.get_last_lr()[0],
                        "tokens_per_s": round(tps, 1),
                        "elapsed": round(state.elapsed, 2),
                    }
                )
                window_t, window_tokens, window_loss = time.perf_counter(), 0, 0.0
            bar.update(task, completed=state.step, loss=shown, tps=tps)
            if (
                cfg.eval_every
                and state.step % cfg.eval_every == 0
                and (state.step < run.total_steps)
            ):
                metrics.write({"step": state.step, "tokens": state.tokens, "eval": _validate(run)})
            if checkpointer.due(state.step, run.total_steps):
                checkpointer.save(run.accelerator, state.step)


def _validate(run: Run) -> dict[str, dict[str, float]]:
    return validation_loss(
        run.model, run.data.validation, run.cfg.seq_len, run.cfg.eval_blocks, run.accelerator
    )


def finish(run: Run, metrics: MetricsLog, out: Path, work: Path) -> None:
    """Final validation, then the HF model folder with its training record, atomically."""
    final = _validate(run)
    metrics.write({"step": run.state.step, "tokens": run.state.tokens, "eval": final})
    acc = run.accelerator
    acc.wait_for_everyone()
    if acc.is_main_process:
        record = TrainRecord(
            config=run.cfg,
            steps=run.state.step,
            tokens=run.state.tokens,
            seconds=round(run.state.elapsed, 2),
            params=count_parameters(run.model),
            precision=run.precision,
            languages=run.data.langs,
            resumed_at=run.state.resumed_at,
            validation=final,
        )
        save_model(
            acc.unwrap_model(run.model),
            run.tokenizer,
            out,
            extra_files={
                TrainRecord.FILE: record.dumps(),
                "metrics.jsonl": (work / "metrics.jsonl").read_text(),
            },
        )
        shutil.rmtree(work, ignore_errors=True)
    acc.wait_for_everyone()  # no process returns before the model is on disk
    acc.end_training()  # closes the trackers (and, under `accelerate launch`, the process group)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train per `cfg`; returns the folder of the finished HF model. `resume`: continue from the
    last checkpoint in `OUT.work/` (refused if it was made with other settings)."""
    cfg.check()
    out = writable(cfg.out)
    work = out.with_name(out.name + ".work")
    checkpointer = Checkpointer(work, cfg)
    if checkpointer.complete() and not resume:
        raise XelmError(
            f"{work} has checkpoints of an unfinished run: pass --resume to continue "
            "it, or delete that folder to start over"
        )
    run = build(cfg, work)
    if resume and checkpointer.load_latest(run.accelerator):
        run.state.resumed_at.append(run.state.step)
    metrics = MetricsLog(work / "metrics.jsonl", run.accelerator, after_step=run.state.step)
    if run.state.step == 0:
        metrics.write(
            {
                "event": "start",
                "params": count_parameters(run.model),
                "steps": run.total_steps,
                "tokens_per_step": run.tokens_per_step,
                "precision": run.precision,
                "languages": run.data.weights,
            }
        )
    fit(run, metrics, checkpointer, progress)
    finish(run, metrics, out, work)
    return out
