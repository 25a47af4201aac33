"""A synthetic stress test set: the corpus's test pages, each behind a preamble that is not in
its language, the way real documents open (a header, a licence, a shell session, boilerplate in
English).

Half of the pages (by a hash of the page id, the same in every language) open with the first
paragraphs of the *English* version of another test page; the other half with a few lines of
code-like text (shell commands, configuration lines, a URL). A router that decides from a
document's first tokens sees only the preamble; every page's own text follows unchanged, so the
set measures what the preamble costs each model on the same pages as the in-domain test split.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from xelm.corpus import Corpus, Document, unit_hash

# code-like lines, filled from the words of the page's English counterpart
_CODE = [
    "$ soffice --headless --convert-to pdf {word}.odt",
    "$ sudo apt-get install libreoffice-{word}",
    "export LANG=en_US.UTF-8",
    "[{word}]",
    "enabled = true",
    "path = /usr/lib/libreoffice/program/{word}",
    "# see https://help.libreoffice.org/latest/en-US/text/{word}.html",
    "def {word}(doc):",
    "    return doc.getText().getString()",
    '<config:{word} xmlns:config="urn:oasis:names:tc:opendocument:xmlns:config:1.0"/>',
]


def _english_preamble(page: str, english: list[Document], min_chars: int) -> str:
    """The opening paragraphs of another English test page, at least `min_chars` long."""
    others = [d for d in english if d.id != page]
    other = others[int(unit_hash(f"preamble/{page}") * len(others))]
    lines, size = [], 0
    for line in other.text.split("\n"):
        lines.append(line)
        size += len(line)
        if size >= min_chars:
            break
    return "\n".join(lines)


def _code_preamble(page: str, english: list[Document], lines: int) -> str:
    rng = random.Random(f"code/{page}")
    words = [w.lower() for d in english[:50] for w in d.text.split() if w.isalpha() and len(w) > 4]
    return "\n".join(
        rng.choice(_CODE).format(word=rng.choice(words) if words else "document")
        for _ in range(lines)
    )


def stress_documents(
    corpus: Corpus, langs: list[str], min_chars: int = 200, code_lines: int = 6
) -> Iterator[Document]:
    """The test pages of `langs`, each with an English or a code-like preamble."""
    english = list(corpus.documents("test", ["en"]))
    for lang in langs:
        for doc in corpus.documents("test", [lang]):
            if unit_hash(f"kind/{doc.id}") < 0.5:
                preamble = _english_preamble(doc.id, english, min_chars)
            else:
                preamble = _code_preamble(doc.id, english, code_lines)
            yield Document(doc.id, lang, f"{preamble}\n{doc.text}")
