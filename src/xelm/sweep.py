"""`xelm sweep`: how many experts are best? The same total budget for every k (k=1 is the dense
run), both allocation methods, scored per language; a plot of bits/byte against k.

The sweep is the run's own pipeline with one allocation per (method, k), so it re-uses whatever
the run directory already holds (corpus, tokenizer, seed, and the experts of any k already
trained) and trains only what is missing. Its outputs go to `RUN_DIR/sweep/`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from xelm.allocate import METHODS, allocation_spec
from xelm.config import EnsembleConfig, RouterChoice, RunConfig
from xelm.ensemble.routers import ROUTERS
from xelm.errors import XelmError
from xelm.layout import RunLayout
from xelm.paths import atomic_write_text
from xelm.report import SET_TITLES, _plt
from xelm.results import mean_bits, read_scores


def sweep_config(
    cfg: RunConfig, ks: list[int], methods: list[str], router: RouterChoice
) -> RunConfig:
    """The run's config with one allocation per (method, k > 1) and one router."""
    if not ks or any(k < 1 for k in ks):
        raise XelmError(f"--k {ks}: give numbers of experts ≥ 1, e.g. 1,2,4,8")
    if unknown := [m for m in methods if m not in METHODS]:
        raise XelmError(f"--methods: unknown {', '.join(unknown)}; use {' and/or '.join(METHODS)}")
    if any(not router.applies_to(m) for m in methods):
        needs = ROUTERS[router.router].allocation_method
        raise XelmError(
            f"--router {router.router} needs {needs} allocations; use --methods "
            f"{needs} or another router (posterior, lid)"
        )
    if cfg.experts is None or not cfg.experts.dense:
        raise XelmError("a sweep needs the config's experts section with dense: true (k=1)")
    by_name = {a.name: a for a in cfg.allocations}  # keep the config's settings where it has them
    allocations = [
        by_name.get(f"{m}-k{k}", allocation_spec(m, k=k))
        for k in sorted(set(ks))
        if k > 1
        for m in methods
    ]
    ensembles = (cfg.ensembles or EnsembleConfig()).replace(routers=[router], merge=False)
    return cfg.replace(allocations=allocations, ensembles=ensembles)


def collect_sweep(cfg: RunConfig, ks: list[int], methods: list[str], router: RouterChoice) -> dict:
    """{"k": [...], "methods": {method: {set: {k: {lang: scores}}}}} (k=1: the dense run)."""
    run = RunLayout(cfg.run_dir)
    out: dict = {
        "k": sorted(set(ks)),
        "router": router.name,
        "tokens": cfg.experts.tokens,
        "methods": {},
    }
    for method in methods:
        per_set: dict[str, dict] = {}
        for k in out["k"]:
            name = "dense" if k == 1 else f"{method}-k{k}/{router.name}"
            for set_name, scores in read_scores(run.scores(name)).items():
                by_lang = {  # the training languages (dense also has an adaptation's new ones)
                    lang: s.model_dump(exclude_none=True)
                    for lang, s in scores.items()
                    if lang in cfg.data.train_langs
                }
                per_set.setdefault(set_name, {})[k] = by_lang
        out["methods"][method] = per_set
    return out


def _bits(scores: dict[str, dict]) -> dict[str, float]:
    return {lang: s["bits_per_byte"] for lang, s in scores.items()}


def plot_sweep(sweep: dict, path: Path) -> None:
    """Per test set: mean bits/byte against k for each method (thick), and each language's
    change relative to k=1 (thin, right axis)."""
    plt = _plt()
    sets = list(next(iter(sweep["methods"].values())))
    fig, axes = plt.subplots(2, len(sets), figsize=(5.5 * len(sets), 7), squeeze=False)
    colors = {"typology": "tab:blue", "tfidf": "tab:orange"}
    ks = sweep["k"]
    for col, set_name in enumerate(sets):
        top, bottom = axes[0, col], axes[1, col]
        for method, per_set in sweep["methods"].items():
            by_k = per_set[set_name]
            top.plot(
                ks,
                [mean_bits(_bits(by_k[k])) for k in ks],
                "o-",
                color=colors.get(method),
                label=method,
                linewidth=2,
            )
            for lang in by_k[ks[0]]:
                base = by_k[ks[0]][lang]["bits_per_byte"]
                bottom.plot(
                    ks,
                    [100 * (by_k[k][lang]["bits_per_byte"] / base - 1) for k in ks],
                    color=colors.get(method),
                    alpha=0.35,
                    linewidth=1,
                )
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.grid(alpha=0.3)
        top.set_title(f"{SET_TITLES.get(set_name, set_name)}: mean over languages")
        top.set_ylabel("bits per byte")
        top.legend()
        bottom.axhline(0, color="black", linewidth=0.8)
        bottom.set_title("each language, relative to k=1 (dense)")
        bottom.set_ylabel(f"% vs k={ks[0]}")
        bottom.set_xlabel(f"experts k (same total budget: {sweep['tokens']:,} tokens)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_markdown(sweep: dict) -> str:
    """Mean bits/byte per k and method, per test set, and on how many languages each beats k=1."""
    lines = []
    ks = sweep["k"]
    for set_name in next(iter(sweep["methods"].values())):
        lines += [
            f"### {SET_TITLES.get(set_name, set_name)}: mean bits/byte "
            f"(languages better than k=1)\n",
            "| k | " + " | ".join(sweep["methods"]) + " |",
            "|---:|" + "---:|" * len(sweep["methods"]),
        ]
        for k in ks:
            cells = []
            for per_set in sweep["methods"].values():
                by_k = per_set[set_name]
                won = (
                    sum(
                        by_k[k][lang]["bits_per_byte"] < by_k[1][lang]["bits_per_byte"]
                        for lang in by_k[k]
                    )
                    if 1 in by_k and k != 1
                    else None
                )
                cells.append(
                    f"{mean_bits(_bits(by_k[k])):.3f}"
                    + (f" ({won}/{len(by_k[k])})" if won is not None else "")
                )
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def run_sweep(
    cfg: RunConfig,
    ks: list[int],
    methods: list[str] | None = None,
    router: RouterChoice | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train and score what is missing for every k, then write `RUN_DIR/sweep/`; returns the
    sweep's scores (`collect_sweep`)."""
    from xelm.pipeline import run

    methods = list(methods or METHODS)
    router = router or RouterChoice(router="posterior", top_k=1)
    scfg = sweep_config(cfg, ks, methods, router)
    run(scfg, log, report=False)
    sweep = collect_sweep(scfg, ks, methods, router)
    out = RunLayout(cfg.run_dir).sweep
    out.mkdir(parents=True, exist_ok=True)
    plot_sweep(sweep, out / "k_sweep.png")
    atomic_write_text(out / "sweep.md", sweep_markdown(sweep) + "\n![k sweep](k_sweep.png)\n")
    atomic_write_text(out / "sweep.json", json.dumps(sweep, indent=2) + "\n")
    return sweep
