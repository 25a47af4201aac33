"""Few-shot scoring speed, one run, as ratios: examples/s of an X-ELM with top-1 routing
(`--model xelm`, our lm-eval class) vs the dense model through lm-eval's own `HFLM`, on the same
tasks, shots and demonstrations. Target: ≥ 0.8× with a top-1 router.

    .venv/bin/python benchmarks/icl.py [--tasks runs/demo/icl/tasks] [--rounds 3]

Routers measured: lid (reads the context's text: no extra forward pass) and posterior top-1
(every expert reads each context once to route it, then one expert scores the options). Each
round times every side once, in turn; the ratio is taken within a round and the median printed.

Needs the demo run (`xelm run configs/demo.yaml`; without an `icl:` section, build the tasks with
`xelm data icl --corpus runs/demo/corpus --out runs/demo/icl/tasks`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--tasks", default=None, help="default: RUN/icl/tasks")
    ap.add_argument("--allocation", default="typology-k4")
    ap.add_argument("--langs", default="de,ru,ja,fi")
    ap.add_argument("--limit", type=int, default=16, help="questions per task and language")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    run = Path(args.run)
    tasks = Path(args.tasks or run / "icl" / "tasks")
    for need in (run / "dense", run / "ensembles" / args.allocation, tasks / "manifest.json"):
        if not need.exists():
            raise SystemExit(f"{need} is missing: see this script's docstring")

    import torch

    from xelm.icl.harness import evaluate_icl, load_lm
    from xelm.models import bf16_supported

    # a task folder restricted to --langs (the manifest lists what is scored)
    subset = Path("/tmp") / f"xelm-icl-bench-{os.getpid()}"
    subset.mkdir(exist_ok=True)
    manifest = json.loads((tasks / "manifest.json").read_text())
    langs = args.langs.split(",")
    for entry in manifest["tasks"].values():
        entry["langs"] = {k: v for k, v in entry["langs"].items() if k in langs}
    (subset / "manifest.json").write_text(json.dumps(manifest))
    (subset / "lm_eval").symlink_to((tasks / "lm_eval").resolve())
    examples = sum(
        min(v["test"], args.limit) for e in manifest["tasks"].values() for v in e["langs"].values()
    )

    sides = {
        "dense (HFLM)": load_lm(run / "dense"),
        "X-ELM lid top-1": load_lm(run / "ensembles" / args.allocation, "lid", 1),
        "X-ELM posterior top-1": load_lm(run / "ensembles" / args.allocation, "posterior", 1),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    accuracy = {}
    for _ in range(args.rounds):
        for name, lm in sides.items():
            t = time.perf_counter()
            res = evaluate_icl(lm, [subset], [args.shots], seeds=1, limit=args.limit)
            times[name].append(time.perf_counter() - t)
            accuracy[name] = statistics.mean(
                c["acc_norm"][0] for r in res.values() for c in r["shots"].values()
            )
    precision = "bf16 autocast" if bf16_supported(torch.device("cpu")) else "fp32"
    print(
        f"device: cpu ({torch.get_num_threads()} threads, {precision}); {examples} questions, "
        f"{args.shots}-shot, {len(manifest['tasks'])} tasks × {len(langs)} languages"
    )
    dense = "dense (HFLM)"
    for name, ts in times.items():
        ratios = [d / t for d, t in zip(times[dense], ts, strict=True)]
        print(
            f"  {name:24s} {examples / statistics.median(ts):7.1f} examples/s "
            f"(median of {len(ts)}), {statistics.median(ratios):.2f}× dense, "
            f"mean acc_norm {accuracy[name]:.3f}"
        )


if __name__ == "__main__":
    main()
