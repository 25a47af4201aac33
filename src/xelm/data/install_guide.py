"""An out-of-domain test set: the Debian installation guide (`installation-guide-amd64`, GPL-2).

Technical prose of another project, written by other people: hardware requirements, boot
parameters, partitioning, with shell commands, file names and English terms inside the
translated text, the way real documents mix them. One document per HTML page (about 85 per
language, the same pages in every language), every document in the test split.

It covers 13 of the demo's 16 training languages (not fi, tr, eu) and sv among the held-out
ones; `INSTALL_GUIDE_LANGS` lists every language the package has.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import lxml.html

from xelm.corpus import Document
from xelm.data.debian import download_debs, iter_deb_files
from xelm.errors import XelmError

PACKAGE = "installation-guide-amd64"
LICENSE = "GPL-2.0"
# BCP-47 tag -> the package's language folder
FOLDERS = {"zh": "zh_CN", "pt": "pt"}
INSTALL_GUIDE_LANGS = [
    "ca", "cs", "da", "de", "el", "en", "es", "fr", "id", "it", "ja", "ko", "nl", "pt", "ro",
    "ru", "sv", "vi", "zh",
]  # fmt: skip
_PAGE = re.compile(r"doc/installation-guide-amd64/([^/]+)/([^/]+)\.html$")
_BLOCKS = ("p", "h1", "h2", "h3", "h4", "li", "pre", "td", "th", "dt", "dd")
_SPACE = re.compile(r"[ \t\r\f\v]+")
_UTF8 = lxml.html.HTMLParser(encoding="utf-8")


def page_text(html: bytes) -> str:
    """The page's own content (no navigation header or footer), one block per line; command
    listings (`pre`) keep their line breaks, since they are part of the document."""
    root = lxml.html.fromstring(html, parser=_UTF8)
    for nav in root.xpath("//div[@class='navheader' or @class='navfooter']"):
        nav.drop_tree()
    lines = []
    for el in root.iter(*_BLOCKS):
        if any(True for _ in el.iterdescendants(*_BLOCKS)):
            continue  # a container: its blocks are emitted
        raw = el.text_content()
        if el.tag == "pre":
            block = [_SPACE.sub(" ", line).rstrip() for line in raw.strip("\n").splitlines()]
            lines += [line for line in block if line.strip()]
        elif text := " ".join(raw.split()):
            lines.append(text)
    return "\n".join(lines)


def install_guide_documents(langs: list[str], min_chars: int = 200) -> Iterator[Document]:
    """The guide's pages in `langs` (ids are the page names, shared across languages); pages
    shorter than `min_chars` (title and index pages) are left out."""
    unknown = [lang for lang in langs if lang not in INSTALL_GUIDE_LANGS]
    if unknown:
        raise XelmError(
            f"the installation guide has no {', '.join(unknown)}; "
            f"it has {', '.join(INSTALL_GUIDE_LANGS)}"
        )
    folders = {FOLDERS.get(lang, lang): lang for lang in langs}
    deb = download_debs([PACKAGE])[PACKAGE]
    for name, content in iter_deb_files(deb, ".html"):
        m = _PAGE.search(name)
        if m and m.group(1) in folders:
            text = page_text(content)
            if len(text) >= min_chars:
                yield Document(f"install-guide/{m.group(2)}", folders[m.group(1)], text)
