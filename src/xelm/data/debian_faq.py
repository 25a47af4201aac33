"""An out-of-domain test set: the Debian FAQ (`debian-faq`, `debian-faq-<lang>`; a verbatim-
copying licence of Software in the Public Interest).

Questions and answers about a distribution, written by other people than the demo's help pages:
package management, releases, mirrors, with commands, package names and English terms inside
the translated text. One document per chapter (about 15 per language, the same chapters in
every language), every document in the test split. It covers 9 of the demo's 16 training
languages (de en fr it ja ko nl ru zh); `FAQ_LANGS` lists every language Debian has it in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from xelm.corpus import Document
from xelm.data.debian import download_debs, iter_deb_files
from xelm.data.install_guide import page_text
from xelm.errors import XelmError

LICENSE = "verbatim copying (Software in the Public Interest)"
FAQ_LANGS = ["de", "en", "fr", "it", "ja", "ko", "nl", "pt", "ru", "zh"]
FOLDERS = {"zh": "zh-cn"}  # BCP-47 tag -> the package's language suffix
_PAGE = re.compile(r"doc/debian/FAQ/(?:[^/]+/)?([^/]+)\.([A-Za-z_-]+)\.html$")
_SKIP = {"index"}  # the table of contents


def package(lang: str) -> str:
    return "debian-faq" if lang == "en" else f"debian-faq-{FOLDERS.get(lang, lang)}"


def faq_documents(langs: list[str], min_chars: int = 200) -> Iterator[Document]:
    """The FAQ's chapters in `langs` (ids are the chapter names, shared across languages)."""
    unknown = [lang for lang in langs if lang not in FAQ_LANGS]
    if unknown:
        raise XelmError(
            f"the Debian FAQ has no {', '.join(unknown)}; it has {', '.join(FAQ_LANGS)}"
        )
    debs = download_debs([package(lang) for lang in langs])
    for lang in langs:
        suffix = FOLDERS.get(lang, lang)
        for name, content in iter_deb_files(debs[package(lang)], ".html"):
            m = _PAGE.search(name)
            if not m or m.group(2) != suffix or m.group(1) in _SKIP:
                continue
            text = page_text(content)
            if len(text) >= min_chars:
                yield Document(f"debian-faq/{m.group(1)}", lang, text)
