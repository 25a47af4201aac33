"""Branch-Train launchers: wall time of k experts trained sequentially (one process, all cores)
vs `--launcher local --workers 2` (two processes, one core each) vs `--launcher ray` (two Ray
tasks, one CPU each), for the same experts and the same total tokens.

Each launcher runs as the user runs it, `xelm train experts ... --launcher X` in a fresh process,
so interpreter start-up, planning, and Ray's start-up are part of its time. Within one round the
launchers run back to back (in a rotated order each round) and the ratios are taken per round,
so slow drift of this shared machine cancels out.

    .venv/bin/python benchmarks/experts_parallel.py [--tokens 400000] [--rounds 2]

Needs the demo run (`xelm run configs/demo.yaml`): its seed and its TF-IDF k=4 allocation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHERS = {
    "sequential": ["--launcher", "sequential"],
    "local x2": ["--launcher", "local", "--workers", "2"],
    "ray x2": ["--launcher", "ray", "--workers", "2"],
}


def run(name: str, args, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "xelm",
        "train",
        "experts",
        "--seed",
        args.seed,
        "--allocation",
        args.allocation,
        "--tokens",
        str(args.tokens),
        "--out",
        str(out),
        "--quiet",
        "--set",
        f"lr={args.lr}",
        *LAUNCHERS[name],
    ]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})
    wall = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"{name} failed:\n{res.stderr[-2000:]}")
    from xelm.experts import ExpertRecord, expert_folders

    infos = [ExpertRecord.read(p) for p in expert_folders(out)]
    return {
        "wall": wall,
        "tokens": sum(i.tokens for i in infos),
        "train_seconds": sum(i.seconds for i in infos),
        "experts": len(infos),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", default="runs/demo/seed")
    ap.add_argument("--allocation", default="runs/demo/allocation/tfidf-k4")
    ap.add_argument("--tokens", type=int, default=400_000, help="total budget of the k experts")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--launchers", default=",".join(LAUNCHERS))
    args = ap.parse_args()
    for path in (args.seed, args.allocation):
        if not Path(path).exists():
            sys.exit(f"{path} is missing: run `xelm run configs/demo.yaml` first")
    names = args.launchers.split(",")
    print(
        f"{os.cpu_count()} cores; seed {args.seed}; allocation {args.allocation}; "
        f"T = {args.tokens:,} tokens"
    )
    rows = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            out = Path(tempfile.mkdtemp(prefix="xelm-bench-")) / "experts"
            res = run(name, args, out)
            shutil.rmtree(out.parent, ignore_errors=True)
            rows[name].append(res)
            print(
                f"round {r + 1} {name:>10}: {res['wall']:6.1f} s wall, {res['experts']} "
                f"experts, {res['tokens']:,} tokens, {res['train_seconds']:.1f} s in the "
                f"training loops",
                flush=True,
            )
    print()
    print(f"{'launcher':>10}  {'wall s':>8}  {'tokens/s':>9}  {'vs sequential':>13}")
    for name in names:
        walls = [x["wall"] for x in rows[name]]
        base = rows.get("sequential", [])
        ratios = [x["wall"] / s["wall"] for x, s in zip(rows[name], base, strict=False)]
        tps = rows[name][0]["tokens"] / min(walls)
        ratio = " / ".join(f"{q:.2f}x" for q in ratios)
        print(f"{name:>10}  {min(walls):8.1f}  {tps:9,.0f}  {ratio:>13}")
    print("(ratio = wall time / sequential's in the same round; < 1 is faster)")


if __name__ == "__main__":
    main()
