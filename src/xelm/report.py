"""The run's report: `results.json` (every model × language × test set, plus training costs),
`report.md` and `report.html` (tables, plots and a summary written from the numbers), `plots/`.

Models are named `seed`, `unigram`, `dense`, `<allocation>/<router>` (an X-ELM ensemble scored
with that router) and `merged/<allocation>`. The plots show one router per allocation (the
first of the config's routers that applies to it), the tables all of them.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from xelm.layout import RunLayout
from xelm.paths import atomic_write_text
from xelm.results import (
    Cost,
    EvalModel,
    ModelResults,
    Results,
    markdown_table,
    mean_bits,
    read_scores,
)

SET_TITLES = {
    "in_domain": "in-domain test pages",
    "udhr": "UDHR (out of domain)",
    "install_guide": "Debian installation guide (out of domain)",
    "debian_faq": "Debian FAQ (out of domain)",
    "stress": "test pages behind English or code preambles",
}
SET_SHORT = {
    "in_domain": "in domain",
    "udhr": "UDHR",
    "install_guide": "install guide",
    "debian_faq": "Debian FAQ",
}


def training_costs(run: RunLayout, models: list[EvalModel]) -> dict[str, Cost]:
    """Tokens and seconds each model was trained for after the seed (the seed's own cost is the
    `seed` entry, shared by every model branched from it). An ensemble's experts train
    independently: `seconds` is their sum (one machine), `parallel_seconds` the longest one
    (as many machines as experts). Each record is read once, however many routers share it."""
    from functools import cache

    from xelm.experts import expert_folders
    from xelm.train import TrainRecord

    seed = TrainRecord.find(run.seed) or TrainRecord()

    @cache
    def experts(name: str) -> Cost:
        """A set of experts; multi-round ones with their earlier rounds (`round_r/node_XX`),
        which run one after another: in parallel, each round takes its longest expert."""
        folder = run.experts(name)
        final = [TrainRecord.read(e) for e in expert_folders(folder)]
        earlier = [
            [TrainRecord.read(n) for n in sorted(r.glob("node_*"))]
            for r in sorted(folder.glob("round_*"))
        ]
        every = [i for r in earlier for i in r] + final
        return Cost(
            tokens=sum(i.tokens for i in every),
            seconds=round(sum(i.seconds for i in every), 2),
            parallel_seconds=round(sum(max(i.seconds for i in r) for r in [*earlier, final]), 2),
            experts=len(final),
            seed_tokens=seed.tokens,
        )

    costs = {}
    for m in models:
        if m.kind == "seed":
            costs[m.name] = Cost(tokens=seed.tokens, seconds=seed.seconds)
        elif m.kind == "dense":
            info = TrainRecord.read(run.dense)
            costs[m.name] = Cost(tokens=info.tokens, seconds=info.seconds, seed_tokens=seed.tokens)
        elif m.kind in ("x-elm", "merged"):
            costs[m.name] = experts(m.experts or m.allocation)
        elif m.kind in ("adapted", "lapt"):  # what it cost on top of the model it grew from
            start = (
                experts(m.allocation)
                if m.kind == "adapted"
                else Cost(**TrainRecord.read(run.dense).model_dump(include={"tokens", "seconds"}))
            )
            folders = (
                expert_folders(run.adapted_experts(m.allocation, m.rule))
                if m.kind == "adapted"
                else [m.path]
            )
            new = [TrainRecord.read(f) for f in folders]
            costs[m.name] = start.model_copy(
                update={
                    "tokens": start.tokens + sum(i.tokens for i in new),
                    "seconds": round(start.seconds + sum(i.seconds for i in new), 2),
                }
            )
        else:
            costs[m.name] = Cost(tokens=0, seconds=0)
    return costs


def build_results(
    run: RunLayout,
    models: list[EvalModel],
    langs: list[str],
    plotted: list[str],
    new_langs: list[str] | None = None,
) -> Results:
    """Every model's scores (its evaluation file) and training cost."""
    costs = training_costs(run, models)
    entries = {}
    for m in models:
        scores = read_scores(run.scores(m.name))
        entries[m.name] = ModelResults(
            kind=m.kind,
            cost=costs[m.name],
            allocation=m.allocation if m.kind in ("x-elm", "adapted") else None,
            router=m.router.name if m.router else None,
            rule=m.rule,
            scores=scores,
        )
    sets = list(next(iter(entries.values())).scores)
    return Results(
        train_langs=langs, new_langs=new_langs or [], sets=sets, plotted=plotted, models=entries
    )


# --- numbers → words --------------------------------------------------------------------------


def relative(
    results: Results, name: str, set_name: str, baseline: str = "dense"
) -> dict[str, float]:
    """Per language: the model's bits/byte relative to the baseline's (−0.03: 3 % better)."""
    a, b = results.bits(name, set_name), results.bits(baseline, set_name)
    return {lang: a[lang] / b[lang] - 1 for lang in b}


def summary(results: Results) -> list[str]:
    """One honest sentence per (X-ELM or merged model, test set): wins over dense, by how much."""
    lines = []
    if "dense" not in results.models:
        return lines
    for set_name in results.sets:
        dense_mean = mean_bits(results.bits("dense", set_name))
        for name in results.plotted:
            if name in ("seed", "dense"):
                continue
            rel = relative(results, name, set_name)
            wins = [lang for lang, r in rel.items() if r < 0]
            losses = sorted((lang for lang in rel if lang not in wins), key=lambda x: -rel[x])
            mean = mean_bits(results.bits(name, set_name))
            text = (
                f"**{name}**, {SET_TITLES.get(set_name, set_name)}: better than dense on "
                f"{len(wins)}/{len(rel)} languages; mean {mean:.3f} vs {dense_mean:.3f} "
                f"bits/byte ({mean / dense_mean - 1:+.1%}); per language from "
                f"{min(rel.values()):+.1%} to {max(rel.values()):+.1%}"
            )
            if losses:
                text += ". Worse on " + ", ".join(f"{x} ({rel[x]:+.1%})" for x in losses)
            lines.append(text + ".")
    return lines


def training_shares(run: RunLayout, allocation: str) -> list[dict[str, float]]:
    """Per expert of the allocation's ensemble: each language's share of its training documents
    that the expert's cluster holds."""
    from xelm.allocate.allocation import Allocation
    from xelm.ensemble.modeling import XELMConfig

    clusters = Allocation(run.allocation(allocation)).clusters
    ensemble = XELMConfig.from_pretrained(run.ensemble(allocation))
    totals: dict[str, int] = {}
    for c in clusters:
        for lang, stats in c.languages.items():
            totals[lang] = totals.get(lang, 0) + stats.documents
    by_id = {c.id: c for c in clusters}
    return [
        {lang: stats.documents / totals[lang] for lang, stats in by_id[cluster].languages.items()}
        for cluster in ensemble.expert_clusters
    ]


def routing_analysis(run: RunLayout, results: Results) -> list[str]:
    """Where the routers sent each language's test documents, against where the language's
    training documents went: the first thing to look at when an X-ELM loses a language."""
    lines = []
    for name, model in results.models.items():
        if model.kind != "x-elm":
            continue
        shares = training_shares(run, model.allocation)
        for set_name in results.sets:
            scores = model.scores[set_name]
            if any(s.routed is None for s in scores.values()):
                continue  # a full mixture: no routing to report
            home = {
                lang: max(range(len(shares)), key=lambda e: shares[e].get(lang, 0))
                for lang in scores
            }
            at_home = sum(s.routed[home[lang]] for lang, s in scores.items())
            total = sum(s.documents for s in scores.values())
            text = (
                f"**{name}**, {SET_TITLES.get(set_name, set_name)}: {at_home}/{total} "
                f"documents ({at_home / total:.0%}) went to the expert holding most of their "
                "language's training documents"
            )
            if any(f"-{on}" in (model.router or "") for on in ("recent", "prefix")):
                text += " (by their first tokens; every later window is routed again)"
            rel = relative(results, name, set_name) if "dense" in results.models else {}
            notes = []
            for lang in sorted((x for x in rel if rel[x] >= 0), key=lambda x: -rel[x]):
                routed = scores[lang].routed
                where = ", ".join(
                    f"{n} to expert {e} (holds {shares[e].get(lang, 0):.0%} of "
                    f"the {lang} training documents)"
                    for e, n in enumerate(routed)
                    if n
                )
                notes.append(f"{lang} ({rel[lang]:+.1%} vs dense): {where}")
            if notes:
                text += ". Languages not better than dense: " + "; ".join(notes)
            lines.append(text + ".")
    return lines


# --- plots -----------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def set_langs(results: Results, set_name: str) -> list[str]:
    """The training languages a test set has (the installation guide lacks some)."""
    first = results.plotted[0] if results.plotted else next(iter(results.models))
    return list(results.bits(first, set_name))


def plot_bits_per_byte(results: Results, set_name: str, path: Path) -> None:
    """Grouped bars: bits/byte per language, seed vs dense vs the X-ELMs (lower is better)."""
    plt = _plt()
    names = results.plotted
    langs = set_langs(results, set_name)
    fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(langs) + 2), 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [results.bits(name, set_name)[lang] for lang in langs]
        ax.bar(
            [x + (i - (len(names) - 1) / 2) * width for x in range(len(langs))],
            values,
            width,
            label=name,
        )
    ax.set_xticks(range(len(langs)), langs)
    ax.set_ylabel("bits per byte (lower is better)")
    low = min(results.bits(n, set_name)[lang] for n in names for lang in langs)
    ax.set_ylim(bottom=0.85 * low)
    ax.set_title(f"Bits per byte per language, {SET_TITLES.get(set_name, set_name)}")
    ax.legend(fontsize=8, ncol=len(names))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_improvement(results: Results, path: Path) -> None:
    """Relative change of bits/byte against the dense baseline, per language and test set."""
    plt = _plt()
    names = [n for n in results.plotted if n not in ("seed", "dense")]
    langs = results.train_langs  # one x axis for every set; a set without a language: no bar
    sets = results.sets
    fig, axes = plt.subplots(
        len(sets), 1, figsize=(max(8, 0.75 * len(langs) + 2), 3.2 * len(sets)), squeeze=False
    )
    width = 0.8 / max(1, len(names))
    for ax, set_name in zip(axes[:, 0], sets, strict=True):
        for i, name in enumerate(names):
            rel = relative(results, name, set_name)
            ax.bar(
                [x + (i - (len(names) - 1) / 2) * width for x in range(len(langs))],
                [100 * rel.get(lang, 0.0) for lang in langs],
                width,
                label=name,
            )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(langs)), langs)
        ax.set_ylabel("% vs dense")
        ax.set_title(
            f"Bits/byte relative to the dense baseline (below 0: better), "
            f"{SET_TITLES.get(set_name, set_name)}"
        )
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=max(1, len(names)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost_models(results: Results) -> list[str]:
    """The models of the cost comparison: all but the unigram and the adaptation's."""
    return [n for n in results.main_models if results.models[n].kind != "unigram"]


def plot_bits_vs_cost(results: Results, path: Path) -> None:
    """Per test set: each model's mean bits/byte relative to dense against the model passes it
    spends per token (the frontier a router choice moves along)."""
    plt = _plt()
    sets = results.sets
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 4.2), squeeze=False)
    dense = {s: mean_bits(results.bits("dense", s)) for s in sets}
    for ax, set_name in zip(axes[0], sets, strict=True):
        for name in cost_models(results):
            cost = results.passes(name, set_name)
            if cost is None:
                continue
            rel = 100 * (mean_bits(results.bits(name, set_name)) / dense[set_name] - 1)
            kind = results.models[name].kind
            ax.scatter(cost, rel, s=28, marker="o" if kind == "x-elm" else "s")
            ax.annotate(name, (cost, rel), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("model passes per token (dense = 1)")
        ax.set_ylabel("mean bits/byte, % vs dense")
        ax.set_title(SET_SHORT.get(set_name, set_name))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sets_table(results: Results) -> str:
    """One row per model: on every test set its mean bits/byte, the languages where it beats
    dense, and what it costs to run (model passes per token)."""
    sets = results.sets
    head = " | ".join(f"{SET_SHORT.get(s, s)}: bits/byte | better | passes" for s in sets)
    lines = [f"| model | {head} |", "|---|" + "---:|---:|---:|" * len(sets)]
    for name in cost_models(results):
        cells = []
        for set_name in sets:
            mine, base = results.bits(name, set_name), results.bits("dense", set_name)
            won = sum(mine[x] < base[x] for x in base if x in mine)
            better = "" if name == "dense" else f"{won}/{len(base)}"
            cost = results.passes(name, set_name)
            passes = "" if cost is None else f"{cost:.2f}"
            cells.append(f"{mean_bits(mine):.3f} | {better} | {passes}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- the report --------------------------------------------------------------------------------


def _cost_table(results: Results) -> str:
    """One row for the seed, the dense run and each allocation's experts (routers share them)."""
    lines = [
        "| model | training tokens | seconds (one machine) | seconds (experts in parallel) |",
        "|---|---:|---:|---:|",
    ]
    allocations = set()
    for name, m in results.models.items():
        if m.kind in ("seed", "dense"):
            label = name
        elif m.kind == "x-elm" and m.allocation not in allocations:
            allocations.add(m.allocation)
            label = f"{m.allocation} (X-ELM experts)"
        else:
            continue
        c = m.cost
        parallel = f"{c.parallel_seconds:.0f}" if c.parallel_seconds is not None else ""
        lines.append(f"| {label} | {c.tokens:,} | {c.seconds:.0f} | {parallel} |")
    return "\n".join(lines) + "\n"


def report_markdown(
    results: Results, plots: dict[str, str], title: str, analysis: list[str] | None = None
) -> str:
    parts = [f"# {title}\n"]
    parts.append("## Summary\n")
    parts += [f"- {line}" for line in summary(results)] or ["- (no dense baseline to compare)"]
    parts.append("")
    for set_name in results.sets:
        scores = {n: results.bits(n, set_name) for n in results.main_models}
        parts.append(f"## Bits per byte, {SET_TITLES.get(set_name, set_name)} (lower is better)\n")
        parts.append(markdown_table(scores))
        if set_name in plots:
            parts.append(f"![bits per byte, {set_name}]({plots[set_name]})\n")
    if "improvement" in plots:
        parts.append("## Relative to the dense baseline\n")
        parts.append(f"![improvement over dense]({plots['improvement']})\n")
    if "cost" in plots:
        parts.append("## Every test set, with what each model costs to run\n")
        parts.append(
            "Mean bits/byte over the training languages, on how many of them the model beats "
            "dense, and model forward passes per token (token positions all its models ran "
            "on, routing included, over those of one model scoring the same windows).\n"
        )
        parts.append(sets_table(results))
        parts.append(f"![bits per byte vs cost]({plots['cost']})\n")
    if analysis:
        parts.append("## Routing\n")
        parts += [f"- {line}" for line in analysis]
        parts.append("")
    parts.append("## Training cost (after the seed; the seed's own is its row)\n")
    parts.append(_cost_table(results))
    parts.append(
        "Models: `seed` (every expert's starting point), `dense` (the seed trained on "
        "all data for the experts' total budget: the compute-matched k=1 baseline), "
        "`<allocation>/<router>` (the allocation's experts as one X-ELM, α set by the "
        "router), `merged/<allocation>` (BTM's parameter average of those experts), "
        "`unigram` (per-language token frequencies: the bar to clear).\n"
    )
    return "\n".join(parts)


def markdown_to_html(markdown: str, base: Path, title: str) -> str:
    """The report as one self-contained HTML page (images embedded as data URIs)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)

    def embed(match: re.Match) -> str:
        path = base / match.group(1)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>\n{body}</body></html>\n"
    )


def write_report(
    run: RunLayout,
    models: list[EvalModel],
    langs: list[str],
    plotted: list[str],
    title: str = "X-ELM run report",
    new_langs: list[str] | None = None,
    icl_models: list[str] | None = None,
) -> Results:
    """`results.json`, `report.md`, `report.html` and `plots/` of the run; report.md is written
    last, so its presence means the report is complete."""
    from xelm.adapt_report import adaptation_markdown, plot_adaptation
    from xelm.icl.report import icl_markdown, plot_icl

    results = build_results(run, models, langs, plotted, new_langs)
    results.icl = {m: json.loads(run.icl(m).read_text()) for m in icl_models or []}
    run.plots.mkdir(exist_ok=True)
    plots = {}
    for set_name in results.sets:
        plot_bits_per_byte(results, set_name, run.plots / f"bits_per_byte_{set_name}.png")
        plots[set_name] = f"plots/bits_per_byte_{set_name}.png"
    if "dense" in results.models and len(plotted) > 2:
        plot_improvement(results, run.plots / "improvement_over_dense.png")
        plots["improvement"] = "plots/improvement_over_dense.png"
    if "dense" in results.models:
        plot_bits_vs_cost(results, run.plots / "bits_vs_cost.png")
        plots["cost"] = "plots/bits_vs_cost.png"
    adaptation_plot = None
    if results.new_langs:
        plot_adaptation(results, run.plots / "adaptation.png")
        adaptation_plot = "plots/adaptation.png"
    atomic_write_text(run.results, results.dumps())
    markdown = report_markdown(results, plots, title, routing_analysis(run, results))
    markdown += adaptation_markdown(results, adaptation_plot)
    if results.icl:
        plot_icl(results.icl, run.plots / "icl.png")
        markdown += icl_markdown(results.icl, "plots/icl.png")
    atomic_write_text(run.report_html, markdown_to_html(markdown, run.root, title))
    atomic_write_text(run.report, markdown)
    return results
