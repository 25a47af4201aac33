"""What the commands print: rich tables of corpora, tokenizers, allocations, experts, training
runs and scores, built from the stages' own records. Tables that would not fit the terminal are
split by columns (the language column repeated), so they read in 80 columns too."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from xelm.corpus import SPLITS


def _header(name: str) -> str:
    """A column header broken after each '/' (and at spaces), so long names stack instead of
    being cut."""
    return name.replace("/", "/\n").replace(" ", "\n")


def _width(cells: Sequence[str]) -> int:
    """Terminal cells a column of these (markup) strings needs, padding and rule included."""
    return max(Text.from_markup(part).cell_len for cell in cells for part in cell.split("\n")) + 3


def fit_columns(
    console: Console, title: str, first: str, rows: Sequence[str], columns: dict[str, list[str]]
) -> list[Table]:
    """Tables of `rows` × `columns` (header → cells), as many as it takes for each to fit the
    console's width: every table starts with the `first` column (the row labels)."""
    label = _width([first, *rows])
    widths = {n: _width([_header(n), *cells]) for n, cells in columns.items()}
    groups: list[list[str]] = [[]]
    for name, width in widths.items():
        used = label + sum(widths[n] for n in groups[-1]) + 1
        if groups[-1] and used + width > console.width:
            groups.append([])
        groups[-1].append(name)
    tables = []
    for i, part in enumerate(groups):
        suffix = f" ({i + 1}/{len(groups)})" if len(groups) > 1 else ""
        table = Table(title=title + suffix, min_width=min(len(title + suffix), console.width))
        table.add_column(first, no_wrap=True)
        for name in part:
            table.add_column(_header(name), justify="right", no_wrap=True)
        for r, row in enumerate(rows):
            table.add_row(row, *[columns[n][r] for n in part])
        tables.append(table)
    return tables


def corpus_table(manifest: dict, title: str) -> Table:
    table = Table(title=title)
    demo = manifest.get("demo_report", {})
    cols = ["lang", "role", "docs", "M chars", "MB", "train/val/test"]
    cols += ["pages", "transl."] if demo else []
    for col in cols:
        table.add_column(col, justify="left" if col in ("lang", "role") else "right")
    heldout = set(manifest.get("heldout_langs", []))
    for lang, c in manifest["languages"].items():
        s = c["splits"]
        row = [
            lang,
            "held-out" if lang in heldout else "train",
            f"{c['documents']:,}",
            f"{c['characters'] / 1e6:.2f}",
            f"{c['bytes'] / 1e6:.2f}",
            "/".join(str(s[k]["documents"]) for k in SPLITS),
        ]
        if demo:
            r = demo.get(lang, {})
            row += [f"{r.get('pages', 0):,}", f"{r.get('translated_share', 0):.0%}"]
        table.add_row(*row)
    return table


def fertility_table(rows, title: str) -> Table:
    """`rows`: `xelm.tokenizer.fertility` results."""
    table = Table(title=title)
    for col in ("lang", "docs", "tokens", "tokens/char", "tokens/byte", "chars/token"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for r in rows:
        table.add_row(
            r.lang,
            str(r.documents),
            f"{r.tokens:,}",
            f"{r.tokens_per_char:.3f}",
            f"{r.tokens_per_byte:.3f}",
            f"{r.characters / max(r.tokens, 1):.2f}",
        )
    return table


def allocation_tables(console: Console, record, title: str) -> list:
    """Language × cluster: training documents (`record`: an `AllocationRecord`); then a caption
    with the quality figures."""
    langs = record.settings.languages
    columns = {}
    for c in record.clusters:
        counts = [c.languages[lang].documents if lang in c.languages else 0 for lang in langs]
        cells = [f"{n:,}" if n else "·" for n in counts]
        columns[f"c{c.id}"] = [*cells, f"{c.documents:,}", f"{c.bytes / 1e6:.1f}"]
    q = record.quality
    caption = (
        f"{record.method}, k={record.k}, {q.split} split: balance (max/min) "
        f"{q.balance_documents} in documents, {q.balance_bytes} in bytes; purity "
        f"{q.purity}; NMI vs language {q.nmi}"
    )
    return [*fit_columns(console, title, "lang", [*langs, "documents", "MB"], columns), caption]


def experts_table(outcomes, title: str) -> Table:
    """One row per expert of a `train experts` run (launcher outcomes)."""
    from xelm.monitor import short_languages

    table = Table(title=title)
    cols = ("expert", "languages", "status", "share", "tokens", "steps", "s", "val loss")
    for col in cols:
        table.add_column(col, justify="left" if col in cols[:3] else "right")
    for o in outcomes:
        r = o.info
        style = {"failed": "bold red", "trained": "green", "done": "green"}.get(o.status, "dim")
        loss = r.validation_loss if r else None
        table.add_row(
            o.job.name,
            short_languages(o.job.languages),
            f"[{style}]{o.status}",
            f"{o.job.share:.1%}",
            f"{r.tokens:,}" if r else "",
            str(r.steps) if r else "",
            f"{r.seconds:.0f}" if r else "",
            f"{loss:.3f}" if loss is not None else "",
        )
    return table


def train_table(record, out: Path) -> Table:
    """A finished training run: per-language validation loss."""
    table = Table(
        title=f"{out}: {record.tokens:,} tokens in {record.seconds:.0f} s "
        f"({record.params:,} parameters, {record.precision})"
    )
    for col in ("lang", "validation loss", "≈ bits/byte"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for lang, ev in record.validation.items():
        table.add_row(lang, f"{ev['loss']:.3f}", f"{ev['bits_per_byte']:.3f}")
    return table


def score_tables(
    console: Console,
    models: dict[str, dict[str, float]],
    title: str,
    baseline: str | None = "dense",
) -> list[Table]:
    """Bits/byte per language (rows) and model (columns), a mean row and, against `baseline`,
    on how many languages each model is better; split to fit the console."""
    from xelm.results import score_rows

    rows, columns = score_rows(models, baseline)
    by_lang = fit_columns(console, title, "lang", rows, columns)
    # or models as rows: fewer tables when there are many models and few languages
    names = list(columns)
    transposed = {row: [columns[n][i] for n in names] for i, row in enumerate(rows)}
    by_model = fit_columns(console, title, "model", names, transposed)
    return by_model if len(by_model) < len(by_lang) else by_lang


class _TokensPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} tokens/s" if task.speed else "", style="progress.data")


@contextlib.contextmanager
def scoring_progress(
    label: str, console: Console | None = None
) -> Iterator[Callable[[str, int], None]]:
    """A line while a model scores (`xelm eval ppl`, `xelm run`'s evaluations): what it scores,
    tokens/s; gone when it is done. Yields the `on_batch(where, tokens)` to call."""
    import rich

    console = console or rich.get_console()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), _TokensPerSecond())
    # a live line only on a terminal (in a log file it would leave blank lines)
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task(f"scoring {label}", total=None)

        def on_batch(where: str, tokens: int) -> None:
            bar.update(task, advance=tokens, description=f"scoring {label}: {where}")

        yield on_batch
