"""Per-language scores of many models: the evaluation files, a run's `results.json`, tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, model_serializer, model_validator

from xelm.ensemble.routers import RouterChoice
from xelm.spec import Record

# seed, unigram, dense, an X-ELM (`<allocation>/<router>`), BTM's merge; after adaptation: an
# adapted X-ELM (`adapted/<allocation>-<rule>/<router>`) and LAPT (`lapt/<lang>`)
Kind = Literal["seed", "unigram", "dense", "x-elm", "merged", "adapted", "lapt"]


@dataclass(frozen=True)
class EvalModel:
    """A model a run evaluates (and its report compares)."""

    name: str  # seed, unigram, dense, <allocation>/<router>, merged/<allocation>, ...
    kind: Kind
    path: Path | None  # None: the unigram baseline
    key: str  # fingerprint of what built it
    allocation: str | None = None
    router: RouterChoice | None = None
    langs: dict[str, list[str]] | None = None  # per test set (None: the training languages)
    rule: str | None = None  # adapted X-ELMs: the parent rule
    experts: str | None = None  # X-ELMs: the set of experts (default: the allocation's)


class LangScores(BaseModel):
    """One model's score on one language of a test set (as `xelm.evaluate` writes it)."""

    model_config = ConfigDict(extra="ignore")
    documents: int
    tokens: int
    bytes: int
    nll: float  # nats, summed over tokens
    routed: list[int] | None = None  # routed ensembles: documents whose top expert is e
    perplexity: float
    bits_per_byte: float
    model_tokens: int | None = None  # token positions the model(s) ran on, routing included
    window_tokens: int | None = None  # ... one model scoring the same windows
    cost: float | None = None  # their ratio: model passes per token


Scores = dict[str, LangScores]  # per language


def read_scores(path: str | Path) -> dict[str, Scores]:
    """A model's evaluation file (`eval/<model>.json`): {test set: {lang: scores}}."""
    return TypeAdapter(dict[str, Scores]).validate_json(Path(path).read_bytes())


def bits(scores: Scores) -> dict[str, float]:
    """Bits per byte by language."""
    return {lang: s.bits_per_byte for lang, s in scores.items()}


class Cost(BaseModel):
    """What a model cost to train after the seed (the seed's own: its entry)."""

    tokens: int
    seconds: float
    parallel_seconds: float | None = None  # experts: the longest one (one machine each)
    experts: int | None = None
    seed_tokens: int | None = None


class ModelResults(BaseModel):
    """One model in `results.json`: its kind, cost and scores on every test set. In the file each
    test set is a key of the model's entry, beside `kind` and `cost`."""

    kind: Kind
    cost: Cost
    allocation: str | None = None
    router: str | None = None
    rule: str | None = None  # adapted X-ELMs: how the new experts' parents were chosen
    scores: dict[str, Scores]  # by test set

    @model_validator(mode="before")
    @classmethod
    def _sets_are_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "scores" not in data:
            own = {"kind", "cost", "allocation", "router", "rule"}
            sets = {k: v for k, v in data.items() if k not in own}
            data = {**{k: v for k, v in data.items() if k in own}, "scores": sets}
        return data

    @model_serializer(mode="wrap")
    def _sets_as_keys(self, handler) -> dict[str, Any]:
        out = handler(self)
        return {**{k: v for k, v in out.items() if k != "scores"}, **out["scores"]}


class Results(Record):
    """`results.json`: every model × test set × language of a run, and training costs."""

    FILE = "results.json"
    train_langs: list[str]
    new_langs: list[str] = []  # adaptation: the languages added after training
    sets: list[str]
    plotted: list[str]  # the models the plots show (one router per allocation)
    models: dict[str, ModelResults]
    icl: dict[str, dict] = {}  # model → few-shot results (xelm.icl.harness.evaluate_icl)

    def bits(self, model: str, test_set: str, langs: list[str] | None = None) -> dict[str, float]:
        """Bits/byte by language: of `langs`, or of the training languages (the main tables'
        languages; the new languages of an adaptation are reported apart)."""
        scores = bits(self.models[model].scores[test_set])
        return {lang: scores[lang] for lang in langs or self.train_langs if lang in scores}

    def passes(self, model: str, test_set: str) -> float | None:
        """Model forward passes per token on a test set's training languages, relative to one
        model scoring the same windows (dense: 1; None: not measured, e.g. the unigram)."""
        scores = self.models[model].scores[test_set]
        rows = [scores[x] for x in self.train_langs if x in scores]
        if not rows or any(r.model_tokens is None or not r.window_tokens for r in rows):
            return None
        return sum(r.model_tokens for r in rows) / sum(r.window_tokens for r in rows)

    @property
    def main_models(self) -> list[str]:
        """The models of the main tables (not the adaptation's)."""
        return [n for n, m in self.models.items() if m.kind not in ("adapted", "lapt")]

    def dumps(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"


def mean_bits(by_lang: dict[str, float]) -> float:
    """Mean over languages of bits per byte (every language counts the same)."""
    return sum(by_lang.values()) / len(by_lang)


def score_rows(
    models: dict[str, dict[str, float]],
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
        values = {n: models[n][lang] for n in names if lang in models[n]}
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
            won = sum(models[n][x] < base[x] for x in common)
            columns[n].append("" if n == baseline else f"{won}/{len(common)}")
    return rows, columns


def markdown_table(models: dict[str, dict[str, float]], baseline: str | None = "dense") -> str:
    """`score_rows` as a Markdown table (languages as rows, models as columns)."""
    rows, columns = score_rows(models, baseline, bold=("**", "**"))
    names = list(columns)
    lines = ["| lang | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i, row in enumerate(rows):
        lines.append(f"| {row} | " + " | ".join(columns[n][i] for n in names) + " |")
    return "\n".join(lines) + "\n"
