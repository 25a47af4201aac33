"""The adaptation part of a run's report: new languages learnt by HMR against LAPT, and
forgetting (how the training languages fare after adaptation), from `results.json`.

Per new language the columns are the seed, the dense model, LAPT (the dense model continued on
that language), and each adapted X-ELM (new experts branched by a parent rule); the seed's
bytes per token show how well the tokenizer, trained without these languages, covers them.
Forgetting compares, on the training languages in domain, the dense model with each LAPT model
and the X-ELM before adaptation with each adapted one (same router).
"""

from __future__ import annotations

from pathlib import Path

from xelm.report import SET_TITLES, _plt
from xelm.results import Results, mean_bits


def _adapted(results: Results) -> dict[str, str]:
    """Each adapted X-ELM → the X-ELM it grew from (same allocation and router)."""
    out = {}
    for name, m in results.models.items():
        if m.kind == "adapted":
            out[name] = f"{m.allocation}/{m.router}"
    return out


def adaptation_sets(results: Results) -> list[str]:
    """The test sets the adaptation's models were scored on (not every set the run has)."""
    adapted = [m for m in results.models.values() if m.kind in ("adapted", "lapt")]
    return [s for s in results.sets if any(s in m.scores for m in adapted)]


def new_language_scores(results: Results, set_name: str) -> dict[str, dict[str, float]]:
    """{column: {new language: bits/byte}}: seed, dense, LAPT and the adapted X-ELMs."""
    langs = results.new_langs
    columns: dict[str, dict[str, float]] = {}
    for name in ("seed", "dense"):
        if name in results.models:
            columns[name] = results.bits(name, set_name, langs)
    lapt = {
        lang: results.bits(f"lapt/{lang}", set_name, [lang])[lang]
        for lang in langs
        if f"lapt/{lang}" in results.models
    }
    if lapt:
        columns["LAPT"] = lapt
    for name, m in results.models.items():
        if m.kind == "adapted":
            columns[f"X-ELM + HMR ({m.rule} parent)"] = results.bits(name, set_name, langs)
    return columns


def bytes_per_token(results: Results, langs: list[str]) -> dict[str, float]:
    """The seed tokenizer's bytes per token on each language's in-domain test pages."""
    scores = results.models["seed"].scores["in_domain"]
    return {lang: scores[lang].bytes / scores[lang].tokens for lang in langs if lang in scores}


def forgetting(results: Results) -> list[dict]:
    """Per adapted model: mean bits/byte over the training languages in domain, before
    (its starting model) and after, and on how many languages it is worse or identical."""
    pairs = [(f"lapt/{lang}", "dense") for lang in results.new_langs]
    pairs += list(_adapted(results).items())
    rows = []
    for after, before in pairs:
        if after not in results.models or before not in results.models:
            continue
        a, b = results.bits(after, "in_domain"), results.bits(before, "in_domain")
        common = [lang for lang in b if lang in a]
        rows.append(
            {
                "model": after,
                "from": before,
                "before": mean_bits({x: b[x] for x in common}),
                "after": mean_bits({x: a[x] for x in common}),
                "worse": sum(a[x] > b[x] for x in common),
                "identical": sum(a[x] == b[x] for x in common),
                "languages": len(common),
            }
        )
    return rows


def adaptation_summary(results: Results) -> list[str]:
    """Sentences written from the numbers: HMR vs LAPT per parent rule, and forgetting."""
    if not results.new_langs:
        return []
    lines = []
    for set_name in adaptation_sets(results):
        cols = new_language_scores(results, set_name)
        lapt = cols.get("LAPT")
        for col, scores in cols.items():
            if not col.startswith("X-ELM") or not lapt:
                continue
            langs = [lang for lang in scores if lang in lapt]
            wins = [lang for lang in langs if scores[lang] < lapt[lang]]
            lines.append(
                f"**{col}**, {SET_TITLES.get(set_name, set_name)}: better than LAPT on "
                f"{len(wins)}/{len(langs)} new languages; mean "
                f"{mean_bits({x: scores[x] for x in langs}):.3f} vs "
                f"{mean_bits({x: lapt[x] for x in langs}):.3f} bits/byte."
            )
    for row in forgetting(results):
        change = row["after"] / row["before"] - 1
        lines.append(
            f"**{row['model']}** on the {row['languages']} training languages: mean "
            f"{row['before']:.3f} → {row['after']:.3f} bits/byte ({change:+.2%}); worse on "
            f"{row['worse']}, identical on {row['identical']}."
        )
    return lines


def adaptation_markdown(results: Results, plot: str | None) -> str:
    if not results.new_langs:
        return ""
    parts = ["## Adapting to new languages: HMR vs LAPT\n"]
    parts += [f"- {line}" for line in adaptation_summary(results)]
    parts.append("")
    fertility = bytes_per_token(results, results.new_langs)
    trained = bytes_per_token(results, results.train_langs)
    for set_name in adaptation_sets(results):
        cols = new_language_scores(results, set_name)
        names = list(cols)
        parts.append(
            f"### New languages, bits per byte, {SET_TITLES.get(set_name, set_name)} "
            "(lower is better)\n"
        )
        parts.append("| lang | " + " | ".join(names) + " | bytes/token (seed tokenizer) |")
        parts.append("|---|" + "---:|" * (len(names) + 1))
        for lang in results.new_langs:
            values = {n: cols[n].get(lang) for n in names}
            best = min(v for v in values.values() if v is not None)
            cells = [
                "" if v is None else (f"**{v:.3f}**" if v == best else f"{v:.3f}")
                for v in values.values()
            ]
            parts.append(f"| {lang} | " + " | ".join(cells) + f" | {fertility.get(lang, 0):.2f} |")
        means = [f"{mean_bits(cols[n]):.3f}" for n in names]
        parts.append("| **mean** | " + " | ".join(means) + " | |\n")
    if trained:
        parts.append(
            f"The training languages average {sum(trained.values()) / len(trained):.2f} bytes "
            "per token with the seed's tokenizer; a new language far below that is split into "
            "many short tokens (each carries little, and its bits/byte stay high whatever the "
            "model learns).\n"
        )
    rows = forgetting(results)
    if rows:
        parts.append("### Forgetting: the training languages, in domain, before → after\n")
        parts.append("| model | from | before | after | change | worse | identical |")
        parts.append("|---|---|---:|---:|---:|---:|---:|")
        for r in rows:
            parts.append(
                f"| {r['model']} | {r['from']} | {r['before']:.3f} | {r['after']:.3f} | "
                f"{r['after'] / r['before'] - 1:+.2%} | {r['worse']}/{r['languages']} | "
                f"{r['identical']}/{r['languages']} |"
            )
        parts.append("")
    if plot:
        parts.append(f"![adaptation]({plot})\n")
    return "\n".join(parts)


def plot_adaptation(results: Results, path: Path) -> None:
    """Left: new-language bits/byte per method (in domain); right: the change of the training
    languages' mean bits/byte per adapted model (forgetting)."""
    plt = _plt()
    cols = new_language_scores(results, "in_domain")
    langs = results.new_langs
    rows = forgetting(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(cols)
    for i, (name, scores) in enumerate(cols.items()):
        left.bar(
            [x + (i - (len(cols) - 1) / 2) * width for x in range(len(langs))],
            [scores.get(lang, 0) for lang in langs],
            width,
            label=name,
        )
    left.set_xticks(range(len(langs)), langs)
    left.set_ylabel("bits per byte (lower is better)")
    left.set_title("New languages, in-domain test pages")
    left.legend(fontsize=7)
    left.grid(axis="y", alpha=0.3)
    labels = [r["model"].replace("adapted/", "") for r in rows]
    right.barh(
        range(len(rows)), [100 * (r["after"] / r["before"] - 1) for r in rows], color="tab:red"
    )
    right.set_yticks(range(len(rows)), labels, fontsize=7)
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlabel("% change of the training languages' mean bits/byte")
    right.set_title("Forgetting (right of 0: worse)")
    right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
