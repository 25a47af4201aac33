"""Evaluation speed, one run, as ratios: xelm's scorer against the transformers guide's
sliding-window perplexity loop, same model, documents, windows and numbers.

- ours: `xelm.evaluate.score_texts` (every window of every document batched together, sorted
  by length; the output layer and the log-softmax only where a token is scored);
- peer: the loop of the transformers guide "Perplexity of fixed-length models": one window per
  forward, the context's labels set to -100, the model's own loss;
- the demo's default X-ELM router (LID on the text before each window, the seed mixed in
  token by token: 2 model passes per token) against ours on one model, to see what routing
  adds beyond the second pass.

Both sides score every token once with the same context, so their bits/byte must agree (printed).

    .venv/bin/python benchmarks/evaluate.py [--docs 10] [--rounds 3] [--device auto]

Each round times every side once, in turn; a ratio is taken within each round (the shared
machine's drift cancels) and the median over rounds is printed, with the device.
Needs the demo run (`xelm run configs/demo.yaml`).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch


def timed(fn) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def guide_loop(model, tokenizer, texts: list[str], context: int, stride: int, device) -> float:
    """Summed NLL (nats), the transformers guide's way: window by window, batch 1."""
    from xelm.evaluate import _separator, windows

    sep = _separator(tokenizer)
    nll = 0.0
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        for window, n_score in windows([sep, *ids], context, stride):
            input_ids = torch.tensor([window], device=device)
            labels = input_ids.clone()
            labels[:, : len(window) - n_score] = -100
            loss = model(input_ids=input_ids, labels=labels).loss
            nll += loss.float().item() * n_score
    return nll


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="a finished demo run directory")
    ap.add_argument("--langs", default="de,ru,ja,el,fi,vi")
    ap.add_argument("--docs", type=int, default=10, help="test pages per language")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    ap.add_argument("--precision", default="auto", help="auto / bf16 / fp32 (both sides)")
    args = ap.parse_args()
    run = Path(args.run)
    if not (run / "seed").exists():
        raise SystemExit(f"{run}/seed is missing: run `xelm run configs/demo.yaml` first")

    from xelm.corpus import Corpus
    from xelm.ensemble import XELMForCausalLM
    from xelm.evaluate import score_texts, score_texts_routed
    from xelm.models import autocast, load_model
    from xelm.tokenizer import load_tokenizer

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    seed = load_model(run / "seed").eval().to(device)
    tokenizer = load_tokenizer(run / "seed")
    corpus = Corpus(run / "corpus")
    texts = [
        d.text
        for lang in args.langs.split(",")
        for d in list(corpus.documents("test", [lang]))[: args.docs]
    ]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    context = seed.config.max_position_embeddings - 1
    stride = context // 2
    ensembles = sorted(p.parent for p in (run / "ensembles").glob("*/config.json"))
    routed = None
    if ensembles:
        routed = XELMForCausalLM.from_pretrained(
            ensembles[0], router="lid", top_experts=1, use_fallback=True, window=32
        ).to(device)
    torch.set_grad_enabled(False)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {name} ({torch.get_num_threads()} threads); {len(texts)} documents, "
        f"{n_tokens:,} tokens; context {context}, stride {stride}; precision {args.precision}"
    )

    sides = {
        "ours (score_texts)": lambda: (
            score_texts(seed, tokenizer, texts, context, stride, device=device).nll
        ),
        "transformers guide loop": lambda: guide_loop(
            seed, tokenizer, texts, context, stride, device
        ),
    }
    if routed is not None:
        sides[f"X-ELM {ensembles[0].name}, LID follow + seed"] = lambda: (
            score_texts_routed(
                routed,
                routed.tokenizer,
                texts,
                context,
                stride=stride,
                route_tokens=16,  # the demo's head_tokens
                device=device,
                route_on="recent",
            ).nll
        )
    times: dict[str, list[float]] = {s: [] for s in sides}
    nll: dict[str, float] = {}
    with autocast(args.precision, device):
        score_texts(seed, tokenizer, texts[:4], context, stride, device=device)  # warm-up
        for _ in range(args.rounds):
            for side, fn in sides.items():
                seconds, nll[side] = timed(fn)
                times[side].append(seconds)
    print()
    for side, t in times.items():
        median = statistics.median(t)
        bits = nll[side] / math.log(2) / n_bytes
        print(f"{side:>44}: {median:7.2f} s  {n_tokens / median:9,.0f} tokens/s  {bits:.5f} bits/B")

    def ratio(a: str, b: str) -> str:  # per round, then the median and the range
        r = sorted(x / y for x, y in zip(times[a], times[b], strict=True))
        return f"{statistics.median(r):.2f}x  (rounds {r[0]:.2f}-{r[-1]:.2f})"

    ours, peer = list(sides)[:2]
    print(f"\nours vs the guide's loop, tokens/s: {ratio(peer, ours)}")
    if routed is not None:
        x = list(sides)[2]
        print(f"LID follow + seed vs one model, time: {ratio(x, ours)}  (2 model passes)")


if __name__ == "__main__":
    main()
