"""The demo corpus: the LibreOffice help (Debian `libreoffice-help-<lang>`, MPL-2.0).

The same ~2,600 help pages exist in ~30 languages, which makes per-language comparisons fair
(parallel text, same domain). But many pages are not translated: they repeat the English page
verbatim, paragraph by paragraph. A page labelled `ja` that is English would poison every
per-language figure, so each language's page is compared with the en-US page of the same path:
paragraphs identical to English are dropped, and the page is kept only if most of its text
(`min_translated_share`) is really translated and it is written in the language's script.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import langcodes
import lxml.html
from pydantic import Field

from xelm.corpus import Document
from xelm.data.debian import deb_version, download_debs, iter_deb_files
from xelm.errors import XelmError
from xelm.spec import Spec

LICENSE = "MPL-2.0"
REFERENCE = "en"

# BCP-47 tag -> suffix of the Debian package `libreoffice-help-<suffix>` (Debian 12).
PACKAGES: dict[str, str] = {
    "en": "en-us",
    "en-GB": "en-gb",
    "ca": "ca",
    "cs": "cs",
    "da": "da",
    "de": "de",
    "dz": "dz",
    "el": "el",
    "es": "es",
    "et": "et",
    "eu": "eu",
    "fi": "fi",
    "fr": "fr",
    "gl": "gl",
    "hi": "hi",
    "hu": "hu",
    "id": "id",
    "it": "it",
    "ja": "ja",
    "km": "km",
    "ko": "ko",
    "nl": "nl",
    "om": "om",
    "pl": "pl",
    "pt": "pt",
    "pt-BR": "pt-br",
    "ru": "ru",
    "sk": "sk",
    "sl": "sl",
    "sv": "sv",
    "tr": "tr",
    "vi": "vi",
    "zh": "zh-cn",
    "zh-Hant": "zh-tw",
}

# 16 training languages across families and scripts: the paper's languages that have a real
# translation here (en fr es de el ru tr vi zh ja ko) plus five more.
DEFAULT_TRAIN_LANGS = [
    "en",
    "de",
    "nl",
    "fr",
    "es",
    "it",
    "ru",
    "el",
    "fi",
    "tr",
    "eu",
    "id",
    "vi",
    "zh",
    "ja",
    "ko",
]
# Held out for new-language experiments (HMR vs LAPT): sv<-en and pl<-ru mirror the paper's pairs.
DEFAULT_HELDOUT_LANGS = ["pl", "sv", "et", "km", "sl"]

_HTML = re.compile(r"usr/share/libreoffice/help/([^/]+)/(text/.+)\.html$")
_BLOCKS = ("p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "pre", "td", "th", "dt", "dd")
_DROP_XPATH = (
    "//script | //style | //code | //img"
    " | //*[contains(concat(' ', @class, ' '), ' bascode ')]"
    " | //*[contains(concat(' ', @class, ' '), ' code ')]"
    # switchinline: the variant without a class is the default one a reader sees; the others
    # (MAC, WRITER, CALC, ...) are hidden alternatives and would repeat the sentence.
    " | //*[@hidden and @class]"
)
_SPACE = re.compile(r"\s+")
_UTF8 = lxml.html.HTMLParser(encoding="utf-8")  # the files declare no charset, or may not

# Unicode-name prefixes of the letters each script uses (for the script check).
_SCRIPT_LETTERS = {
    "Latn": ("LATIN",),
    "Cyrl": ("CYRILLIC",),
    "Grek": ("GREEK",),
    "Hans": ("CJK",),
    "Hant": ("CJK",),
    "Jpan": ("CJK", "HIRAGANA", "KATAKANA"),
    "Kore": ("HANGUL", "CJK"),
    "Khmr": ("KHMER",),
    "Tibt": ("TIBETAN",),
    "Ethi": ("ETHIOPIC",),
    "Deva": ("DEVANAGARI",),
}


def page_blocks(html: bytes) -> list[tuple[str, str]]:
    """(element id, text) of the visible paragraphs of a help page: the `DisplayArea` only (no
    header, index, search, footer), without code listings and hidden platform variants,
    whitespace normalised. The ids (`par_id…`, `hd_id…`; "" where none) are the same in every
    language's copy of a page, which is what aligns translations."""
    root = lxml.html.fromstring(html, parser=_UTF8)
    areas = root.xpath("//*[@id='DisplayArea']")
    if not areas:
        return []
    area = areas[0]
    for el in area.xpath("." + _DROP_XPATH.replace(" | //", " | .//")):
        el.drop_tree()
    blocks = []
    for el in area.iter(*_BLOCKS):
        if any(True for _ in el.iterdescendants(*_BLOCKS)):
            continue  # a container (a table cell holding paragraphs): its children are emitted
        text = _SPACE.sub(" ", el.text_content()).strip()
        if text:
            blocks.append((el.get("id") or "", text))
    return blocks


def page_paragraphs(html: bytes) -> list[str]:
    """The visible paragraphs of a help page (see `page_blocks`)."""
    return [text for _, text in page_blocks(html)]


def script_share(text: str, script: str) -> float:
    """Share of the letters of `text` that belong to `script` (1.0 if the script is unknown)."""
    prefixes = _SCRIPT_LETTERS.get(script)
    if prefixes is None:
        return 1.0
    letters = in_script = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            in_script += unicodedata.name(ch, "").startswith(prefixes)
    return in_script / letters if letters else 0.0


@dataclass
class LanguageReport:
    """What happened to one language's pages (printed as the demo table, kept in the manifest)."""

    lang: str
    package: str
    version: str
    pages: int = 0  # help pages in the package
    translated: int = 0  # pages whose text is mostly not a copy of English
    kept: int = 0  # documents written (translated, non-empty, right script)
    characters: int = 0
    page_characters: int = 0  # characters of all pages, translated or not
    translated_characters: int = 0

    @property
    def translated_share(self) -> float:
        return self.translated_characters / self.page_characters if self.page_characters else 0.0


class DemoFilter(Spec):
    """Thresholds of the demo corpus's translation filter."""

    min_translated_share: float = Field(0.3, ge=0, le=1)
    """share of a page's characters that must differ from English (untranslated paragraphs are
    dropped anyway; this drops pages of which only a heading or two was translated)"""
    min_bytes: int = Field(200, ge=0)
    """drop near-empty pages (bytes, so CJK pages are not penalised)"""
    min_script_share: float = Field(0.3, ge=0, le=1)
    """share of letters in the language's own script (non-Latin scripts)"""
    min_documents: int = Field(300, ge=1)
    """a language with fewer translated pages is not really translated (Hindi: ~6 % of its text)"""


def translated_text(
    paragraphs: list[str],
    english: set[str],
    script: str,
    filt: DemoFilter,
    is_reference: bool = False,
) -> tuple[str | None, int, int]:
    """The page's own text (paragraphs not copied from the English page), or None if the page
    is not really translated, near-empty or not in the language's script.

    Returns (text or None, characters of the page, characters translated).
    """
    own = paragraphs if is_reference else [p for p in paragraphs if p not in english]
    total, translated = sum(map(len, paragraphs)), sum(map(len, own))
    text = "\n".join(own)
    if (
        not total
        or translated / total < filt.min_translated_share
        or len(text.encode("utf-8")) < filt.min_bytes
        or (script != "Latn" and script_share(text, script) < filt.min_script_share)
    ):
        return None, total, translated
    return text, total, translated


def read_pages(
    deb: Path, folder: str, pages: set[str] | None = None
) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(page path below the language folder, its `page_blocks`) for every help page of a
    package, or only for `pages`.

    Only the package's own language `folder` is read: `libreoffice-help-ca` also ships
    `ca-valencia`, a second copy of every page.
    """
    for name, content in iter_deb_files(deb, ".html"):
        m = _HTML.search(name)
        if m and m.group(1).lower() == folder and (pages is None or m.group(2) in pages):
            yield m.group(2), page_blocks(content)


def package_folder(lang: str) -> str:
    """The help folder (and Debian package suffix) of a language."""
    if lang not in PACKAGES:
        raise XelmError(
            f"no LibreOffice help package for {lang}; available: {', '.join(sorted(PACKAGES))}"
        )
    return PACKAGES[lang]


def libreoffice_documents(
    langs: list[str],
    filt: DemoFilter | None = None,
) -> Iterator[Document | LanguageReport]:
    """Yield the documents of each language, then its `LanguageReport`."""
    filt = filt or DemoFilter()
    unknown = [lang for lang in langs if lang not in PACKAGES]
    if unknown:
        raise XelmError(
            f"no LibreOffice help package for {', '.join(unknown)}; "
            f"available: {', '.join(sorted(PACKAGES))}"
        )
    needed = [REFERENCE, *[lang for lang in langs if lang != REFERENCE]]
    debs = download_debs([f"libreoffice-help-{PACKAGES[lang]}" for lang in needed])
    reference: dict[str, set[str]] = {}
    for lang in needed:
        package = f"libreoffice-help-{PACKAGES[lang]}"
        deb = debs[package]
        report = LanguageReport(lang, package, deb_version(deb))
        script = langcodes.Language.get(lang).maximize().script or "Latn"
        is_reference = lang == REFERENCE
        docs = []
        for page, blocks in read_pages(deb, PACKAGES[lang]):
            paragraphs = [text for _, text in blocks]
            if is_reference:
                reference[page] = set(paragraphs)
            text, total, translated = translated_text(
                paragraphs, reference.get(page, set()), script, filt, is_reference
            )
            report.pages += 1
            report.page_characters += total
            report.translated_characters += translated
            report.translated += total > 0 and translated / total >= filt.min_translated_share
            if text is not None:
                docs.append(Document(page, lang, text))
        if lang in langs:
            for doc in docs:
                report.kept += 1
                report.characters += len(doc.text)
                yield doc
            yield report
