"""Per-language scores of many models: gathered from the evaluation files, and as tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xelm.ensemble.routers import RouterChoice


@dataclass(frozen=True)
class EvalModel:
    """A model a run evaluates (and its report compares)."""

    name: str  # seed, unigram, dense, <allocation>/<router>, merged/<allocation>
    kind: Literal["seed", "unigram", "dense", "x-elm", "merged"]
    path: Path | None  # None: the unigram baseline
    key: str  # fingerprint of what built it
    allocation: str | None = None
    router: RouterChoice | None = None


def collect(files: dict[str, Path]) -> dict[str, dict]:
    """{test set: {model: {lang: scores}}} from one `{test set: {lang: scores}}` file per model."""
    sets: dict[str, dict] = {}
    for model, path in files.items():
        for set_name, scores in json.loads(Path(path).read_text()).items():
            sets.setdefault(set_name, {})[model] = scores
    return sets


def mean_bits(scores: dict[str, dict]) -> float:
    """Mean over languages of bits per byte (every language counts the same)."""
    values = [s["bits_per_byte"] for s in scores.values()]
    return sum(values) / len(values)


def score_rows(
    models: dict[str, dict],
    baseline: str | None = "dense",
    bold: tuple[str, str] = ("[bold]", "[/bold]"),
) -> tuple[list[str], dict[str, list[str]]]:
    """Row labels and each model's column of cells: bits/byte per language (the best of each
    row in bold, the unigram baseline not competing), the mean and, against `baseline`, on how
    many languages each model is better."""
    names = list(models)
    langs = list(dict.fromkeys(lang for scores in models.values() for lang in scores))
    columns: dict[str, list[str]] = {n: [] for n in names}
    for lang in langs:
        values = {n: models[n][lang]["bits_per_byte"] for n in names if lang in models[n]}
        best = min(v for n, v in values.items() if n != "unigram")
        for n in names:
            cell = "" if n not in values else f"{values[n]:.3f}"
            columns[n].append(f"{bold[0]}{cell}{bold[1]}" if values.get(n) == best else cell)
    rows = [*langs, f"{bold[0]}mean{bold[1]}"]
    for n in names:
        columns[n].append(f"{mean_bits(models[n]):.3f}")
    if baseline in models:
        rows.append(f"better than {baseline}")
        base = models[baseline]
        for n in names:
            common = [lang for lang in base if lang in models[n]]
            won = sum(models[n][x]["bits_per_byte"] < base[x]["bits_per_byte"] for x in common)
            columns[n].append("" if n == baseline else f"{won}/{len(common)}")
    return rows, columns


def markdown_table(models: dict[str, dict], baseline: str | None = "dense") -> str:
    """`score_rows` as a Markdown table (languages as rows, models as columns)."""
    rows, columns = score_rows(models, baseline, bold=("**", "**"))
    names = list(columns)
    lines = ["| lang | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i, row in enumerate(rows):
        lines.append(f"| {row} | " + " | ".join(columns[n][i] for n in names) + " |")
    return "\n".join(lines) + "\n"
