"""Per-language scores of many models: gathered from the evaluation files, and as tables."""

from __future__ import annotations

import json
from pathlib import Path


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


def markdown_table(models: dict[str, dict], baseline: str | None = "dense") -> str:
    """Languages as rows, models as columns (bits/byte; the best of each row in bold), a mean
    row and, against `baseline`, on how many languages each model is better."""
    names = list(models)
    langs = list(dict.fromkeys(lang for scores in models.values() for lang in scores))
    lines = ["| lang | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for lang in langs:
        values = {n: models[n][lang]["bits_per_byte"] for n in names if lang in models[n]}
        best = min(v for n, v in values.items() if n != "unigram")
        cells = [("" if n not in values else
                  f"**{values[n]:.3f}**" if values[n] == best else f"{values[n]:.3f}")
                 for n in names]  # fmt: skip
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"{mean_bits(models[n]):.3f}" for n in names) + " |")
    if baseline in models:
        base = models[baseline]
        wins = []
        for n in names:
            common = [lang for lang in base if lang in models[n]]
            won = sum(models[n][lang]["bits_per_byte"] < base[lang]["bits_per_byte"]
                      for lang in common)  # fmt: skip
            wins.append("" if n == baseline else f"{won}/{len(common)}")
        lines.append(f"| better than {baseline} | " + " | ".join(wins) + " |")
    return "\n".join(lines) + "\n"
