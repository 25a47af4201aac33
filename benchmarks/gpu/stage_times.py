"""Seconds per stage of finished runs, side by side: e.g. the demo on a GPU machine against the
same demo on the 2-core CPU (every stage stamps how long it took to build).

    .venv/bin/python benchmarks/gpu/stage_times.py runs/demo .gpu/demo [--kind eval]

Prints one row per stage both runs built, the ratio (first ÷ second), and the totals per kind
of stage (the first word of its name: eval, experts, lapt...). Stages a run skipped carry the
time of the run that built them.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def stage_seconds(run: Path) -> dict[str, float]:
    """{stage folder relative to the run: seconds} from the `.NAME.stage.json` stamps."""
    out = {}
    for stamp in run.rglob(".*.stage.json"):
        record = json.loads(stamp.read_text())
        if record.get("done") and "seconds" in record:
            name = stamp.name[1 : -len(".stage.json")]
            out[str(stamp.parent.relative_to(run) / name)] = record["seconds"]
    return out


def kind(stage: str) -> str:
    return stage.split("/")[0].removesuffix(".json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--kind", help="only stages of this kind (e.g. eval)")
    args = ap.parse_args()
    a, b = stage_seconds(args.first), stage_seconds(args.second)
    both = sorted(s for s in a.keys() & b.keys() if args.kind in (None, kind(s)))
    if not both:
        raise SystemExit("error: the two runs have no finished stage in common")
    width = max(len(s) for s in both)
    print(f"{'stage':<{width}}  {args.first.name:>10}  {args.second.name:>10}  ratio")
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for s in both:
        totals[kind(s)][0] += a[s]
        totals[kind(s)][1] += b[s]
        print(f"{s:<{width}}  {a[s]:>10.1f}  {b[s]:>10.1f}  {a[s] / max(b[s], 0.05):5.1f}x")
    print()
    for k, (x, y) in sorted(totals.items()):
        print(f"{k:<{width}}  {x:>10.1f}  {y:>10.1f}  {x / max(y, 0.05):5.1f}x")


if __name__ == "__main__":
    main()
