"""Ensemble inference cost, one run, as ratios:

1. evaluation tokens/s of a top-1 routed ensemble (TF-IDF router; each document's first 32
   tokens scored by the posterior over all experts, the rest by the one routed expert) vs one
   expert scoring the same documents (target ≥ 0.9×);
2. the full k-expert mixture (uniform α) vs running the k HF models one after another on the
   same documents (target ≤ 1.1× the cost);
3. `generate()` tokens/s with the per-expert KV caches vs without caches.

    .venv/bin/python benchmarks/ensemble.py [--docs 12] [--rounds 5] [--device auto]

Every side runs on one device: CUDA when there is one (`--device auto`), else the CPU.

Each round times every side once, in turn; a ratio is taken within each round (so the shared
machine's drift cancels) and the median over rounds is printed.

Needs the demo run's TF-IDF experts (`xelm run configs/demo.yaml`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def timed(fn) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", default="runs/demo/experts/tfidf-k4")
    ap.add_argument("--corpus", default="runs/demo/corpus")
    ap.add_argument("--langs", default="de,ru,ja,el")
    ap.add_argument("--docs", type=int, default=12, help="per language")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if not Path(args.experts).exists():
        raise SystemExit(f"{args.experts} is missing: run `xelm run configs/demo.yaml` first")

    from xelm.corpus import Corpus
    from xelm.ensemble import XELMForCausalLM
    from xelm.ensemble.build import build_ensemble
    from xelm.evaluate import score_texts, score_texts_routed

    experts = sorted(p for p in Path(args.experts).glob("expert_??") if p.is_dir())
    folder = Path(tempfile.mkdtemp()) / "ens"
    build_ensemble(experts, folder, router="tfidf", top_experts=1)
    top1 = XELMForCausalLM.from_pretrained(folder).to(device)
    full = XELMForCausalLM.from_pretrained(folder, router="uniform").to(device)
    full.config.top_experts = None
    tok = top1.tokenizer
    corpus = Corpus(args.corpus)
    texts = [
        d.text
        for lang in args.langs.split(",")
        for d in list(corpus.documents("test", [lang]))[: args.docs]
    ]
    n_tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
    context = top1.experts[0].config.max_position_embeddings - 1
    torch.set_grad_enabled(False)
    print(
        f"{len(experts)} experts; {len(texts)} documents, {n_tokens:,} tokens; "
        f"context {context}; {torch.get_num_threads()} threads; device "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}"
    )

    single = top1.experts[0]
    runs = {
        "one expert": lambda: score_texts(single, tok, texts, context, device=device),
        "top-1 routed ensemble": lambda: score_texts_routed(
            top1, tok, texts, context, device=device
        ),
        "k models one after another": lambda: [
            score_texts(m, tok, texts, context, device=device) for m in full.experts
        ],
        "full mixture (uniform)": lambda: score_texts(full, tok, texts, context, device=device),
    }
    prompt = tok(texts[0][:200], return_tensors="pt").input_ids.to(device)
    kw = {"max_new_tokens": args.new_tokens, "do_sample": False, "min_new_tokens": args.new_tokens}
    gen = {
        "generate, KV caches": lambda: full.generate(prompt, **kw),
        "generate, no cache": lambda: full.generate(prompt, use_cache=False, **kw),
    }
    score_texts(single, tok, texts[:2], context, device=device)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in [*runs, *gen]}
    for _ in range(args.rounds):
        for name, fn in [*runs.items(), *gen.items()]:
            times[name].append(timed(fn))
    t = {name: statistics.median(v) for name, v in times.items()}
    print()
    for name in runs:
        print(f"{name:>28}: {t[name]:7.2f} s  {n_tokens / t[name]:8,.0f} tokens/s")
    for name in gen:
        print(f"{name:>28}: {t[name]:7.2f} s  {args.new_tokens / t[name]:8,.1f} new tokens/s")
    print()

    def ratio(a: str, b: str) -> str:  # per round, then the median and the range
        r = sorted(x / y for x, y in zip(times[a], times[b], strict=True))
        return f"{statistics.median(r):.2f}x  (rounds {r[0]:.2f}-{r[-1]:.2f})"

    print(
        f"top-1 ensemble tokens/s vs one expert:   {ratio('one expert', 'top-1 routed ensemble')}"
        "  target >= 0.9x"
    )
    print(
        f"full mixture cost vs k models in a row:  "
        f"{ratio('full mixture (uniform)', 'k models one after another')}  target <= 1.1x"
    )
    print(
        f"generate() with KV caches vs without:    "
        f"{ratio('generate, no cache', 'generate, KV caches')} faster"
    )


if __name__ == "__main__":
    main()
