"""Training throughput: xelm's loop vs `transformers.Trainer`, same model, data, batch, precision.

Each side runs in its own subprocess (separate peak RSS, same thread count), for the same number
of optimizer steps on the same packed blocks of the demo corpus; the first steps are warm-up and
not timed. Both sides run on one device: CUDA when there is one (`--device auto`), else the
CPU. Also measures that device's matmul peak (fp32 and bf16) to report MFU =
6 · params · tokens/s / peak (embeddings counted, attention not), with the peak of the precision
actually used.

    .venv/bin/python benchmarks/train_throughput.py [--steps 40] [--rounds 3] [--device auto]

Needs the demo corpus and tokenizer (`xelm run configs/demo.yaml`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP_STEPS = 5


def matmul_peak_gflops(dtype_name: str, device: str = "cpu", seconds: float = 2.0) -> float:
    """Square-matmul throughput on `device`. A 512 probe first: where a dtype has no fast
    kernels (bf16 on CPUs without AVX-512-BF16/AMX runs at ~1 GFLOPS) a 2048 matmul would take
    minutes; on a GPU, 8192 (smaller ones do not fill it)."""
    import torch

    dtype = getattr(torch, dtype_name)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rate = 0.0
    for n in (512, 8192) if device == "cuda" else (512, 2048):
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        a @ b
        sync()
        reps, t = 0, time.perf_counter()
        while reps == 0 or time.perf_counter() - t < seconds:
            a @ b
            reps += 1
            if reps % 10 == 0:
                sync()
        sync()
        rate = max(rate, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
        if rate < 20:
            break
    return rate


def run_ours(args) -> dict:
    from xelm.config import TrainConfig
    from xelm.train.loop import train

    out = Path(tempfile.mkdtemp()) / "model"
    tokens_per_step = args.micro_batch_size * args.seq_len
    cfg = TrainConfig(
        corpus=args.corpus,
        tokenizer=args.tokenizer,
        out=str(out),
        preset=args.preset,
        max_tokens=args.steps * tokens_per_step,
        seq_len=args.seq_len,
        micro_batch_size=args.micro_batch_size,
        log_every=WARMUP_STEPS,  # the loss is read (the host waits for the GPU) only then
        precision=args.precision,
        eval_blocks=1,
        fused_loss=args.fused_loss,
        compile=args.compile,
    )
    train(cfg, progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows if "loss" in r}
    info = json.loads((out / "xelm_train.json").read_text())
    timed = args.steps - WARMUP_STEPS
    seconds = steps[args.steps]["elapsed"] - steps[WARMUP_STEPS]["elapsed"]
    return {
        "tokens_per_s": timed * tokens_per_step / seconds,
        "params": info["params"],
        "precision": info["precision"],
        "final_loss": steps[args.steps]["loss"],
    }


def run_trainer(args) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from xelm.corpus import Corpus, sampling_shares
    from xelm.models import build_model, count_parameters, use_bf16
    from xelm.tokenizer import load_tokenizer
    from xelm.tokens import BlockSampler, token_streams

    tokenizer = load_tokenizer(args.tokenizer)
    corpus = Corpus(args.corpus)
    streams = token_streams(corpus, tokenizer, "train", corpus.train_langs)
    weights = sampling_shares({k: s.tokens for k, s in streams.items()}, 1.0)
    sampler = BlockSampler({k: s.array() for k, s in streams.items()}, args.seq_len, weights)
    # The same packed blocks our loop trains on (Trainer's models take seq_len inputs and shift
    # the labels themselves).
    blocks = sampler.next_batch(args.steps * args.micro_batch_size)[:, : args.seq_len]
    dataset = [{"input_ids": b, "labels": b} for b in blocks]
    model = build_model(args.preset, tokenizer, args.seq_len)
    bf16 = use_bf16(args.precision, args.device)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, *a, **k):
            if args.device == "cuda" and state.global_step in (WARMUP_STEPS, args.steps):
                import torch

                torch.cuda.synchronize()  # the step's work done, not just queued
            times.append(time.perf_counter())

    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.micro_batch_size,
        max_steps=args.steps,
        learning_rate=3e-3,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.steps // 20),
        weight_decay=0.1,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=bf16,
        use_cpu=args.device == "cpu",
        report_to=[],
        save_strategy="no",
        logging_steps=args.steps,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        torch_compile=args.compile,
    )
    Trainer(model=model, args=targs, train_dataset=dataset, callbacks=[Clock()]).train()
    timed = args.steps - WARMUP_STEPS
    seconds = times[-1] - times[WARMUP_STEPS - 1]
    return {
        "tokens_per_s": timed * args.micro_batch_size * args.seq_len / seconds,
        "params": count_parameters(model),
        "precision": "bf16" if bf16 else "fp32",
    }


def child(args) -> None:
    result = run_ours(args) if args.side == "ours" else run_trainer(args)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device == "cuda":
        import torch

        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", default="runs/demo/corpus")
    p.add_argument("--tokenizer", default="runs/demo/tokenizer")
    p.add_argument("--preset", default="demo")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--rounds", type=int, default=3, help="runs per side (median reported)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--fused-loss",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="xelm's side: train.fused_loss (default: on)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="both sides compiled (xelm: train.compile; Trainer: torch_compile)",
    )
    p.add_argument("--side", choices=["ours", "trainer"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps <= WARMUP_STEPS or args.steps % WARMUP_STEPS:
        p.error(f"--steps: a multiple of {WARMUP_STEPS} above it (the first are warm-up)")
    if args.side:
        return child(args)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    for path in (args.corpus, args.tokenizer):
        if not Path(path).exists():
            sys.exit(f"error: {path} not found; build it with `xelm run configs/demo.yaml`")

    runs: dict[str, list[dict]] = {"ours": [], "trainer": []}
    for _ in range(args.rounds):  # alternate the sides: the machine's load drifts over minutes
        for side in runs:
            cmd = [
                sys.executable,
                __file__,
                "--side",
                side,
                "--corpus",
                args.corpus,
                "--tokenizer",
                args.tokenizer,
                "--preset",
                args.preset,
                "--steps",
                str(args.steps),
                "--seq-len",
                str(args.seq_len),
                "--micro-batch-size",
                str(args.micro_batch_size),
                "--precision",
                args.precision,
                "--device",
                args.device,
                "--fused-loss" if args.fused_loss else "--no-fused-loss",
                *(["--compile"] if args.compile else []),
            ]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            if args.device == "cpu":  # xelm's loop (accelerate) takes a GPU wherever one is seen
                env["CUDA_VISIBLE_DEVICES"] = ""
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            runs[side].append(json.loads(line[0][len("RESULT ") :]))
            print(f"{side}: {runs[side][-1]['tokens_per_s']:,.0f} tokens/s", flush=True)
    # the median run of each side (by tokens/s)
    results = {
        side: sorted(rs, key=lambda r: r["tokens_per_s"])[len(rs) // 2] for side, rs in runs.items()
    }

    peaks = {d: matmul_peak_gflops(d, args.device) for d in ("float32", "bfloat16")}
    peaks = {"fp32": peaks["float32"], "bf16": peaks["bfloat16"]}
    where = (
        f"device {torch.cuda.get_device_name(0)}"
        if args.device == "cuda"
        else f"device CPU, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {where}"
    )
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOPS, bf16 {peaks['bf16']:.0f} GFLOPS")
    print(
        f"model: preset {args.preset}, {results['ours']['params']:,} parameters, batch "
        f"{args.micro_batch_size}x{args.seq_len}, {args.steps} steps ({WARMUP_STEPS} warm-up); "
        f"xelm with fused_loss={args.fused_loss}; compiled: {args.compile}"
    )
    for side, rs in runs.items():
        print(f"{side} tokens/s per run: " + ", ".join(f"{r['tokens_per_s']:,.0f}" for r in rs))
    print(f"{'side':<10}{'precision':>10}{'tokens/s':>12}{'ratio':>8}{'peak RSS':>12}{'MFU':>8}")
    base = results["trainer"]["tokens_per_s"]
    for side, r in results.items():
        mfu = 6 * r["params"] * r["tokens_per_s"] / (peaks[r["precision"]] * 1e9)
        gpu = f"  GPU peak {r['peak_gpu_mib']:,.0f} MiB" if "peak_gpu_mib" in r else ""
        print(
            f"{side:<10}{r['precision']:>10}{r['tokens_per_s']:>12,.0f}"
            f"{r['tokens_per_s'] / base:>7.2f}x{r['peak_rss_mib']:>9,.0f} MiB{mfu:>7.0%}{gpu}"
        )


if __name__ == "__main__":
    main()
