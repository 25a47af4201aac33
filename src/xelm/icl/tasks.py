"""Few-shot multiple-choice tasks built from a corpus's held-out test pages.

The paper's tasks (XNLI, XStoryCloze, NorthEuraLex word translation) cannot be fetched here, so
xelm builds their counterparts from the LibreOffice help, which is parallel: the same page, and
the same paragraph (the HTML keeps paragraph ids), exists in every language.

- **translation**: an English paragraph or heading and four paragraphs in the target language;
  one is its translation, three are paragraphs of similar length from other pages.
- **continuation**: the opening of a page; its true next paragraph or a paragraph from another
  page of the same language (two options, like XStoryCloze).
- **topic**: which application a paragraph's page belongs to (the page path says it); the label
  words are English (`TOPICS`), the paragraph is in the target language (like SIB-200).

Only test pages are used (never a page any model trained on). They are split once more, by a
hash of the page path (the same in every language): demonstrations come from the `fewshot`
pages only, so a demonstration never shares a page with the example it precedes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import Field

from xelm.corpus import Document, unit_hash
from xelm.spec import Spec

TaskName = Literal["translation", "continuation", "topic"]
TASKS: tuple[str, ...] = ("translation", "continuation", "topic")
PARTS = ("test", "fewshot")

# the application a LibreOffice help page belongs to: the folder under `text/`
TOPICS = {
    "swriter": "Writer",
    "scalc": "Calc",
    "simpress": "Impress",
    "sdraw": "Draw",
    "sdatabase": "Base",
    "smath": "Math",
    "sbasic": "Basic",
    "schart": "Chart",
    "shared": "General",
}
# how each task joins its context and the answer (what the model reads between them)
DELIMITERS = {"translation": " ", "continuation": "\n", "topic": " "}


class IclSpec(Spec):
    """What `xelm data icl` builds."""

    tasks: list[TaskName] = Field(default_factory=lambda: list(TASKS))
    """tasks to build (translation needs a LibreOffice corpus: it reads the paragraph ids)"""
    examples: int = Field(100, ge=1)
    """at most this many test examples per task and language"""
    fewshot_examples: int = Field(32, ge=1)
    """at most this many demonstrations per task and language (the pool shots are drawn from)"""
    fewshot_fraction: float = Field(0.3, gt=0, lt=1)
    """share of the test pages that hold the demonstrations (by a hash of the page path)"""
    min_chars: int = Field(20, ge=1)
    """shortest paragraph used as a context or an option"""
    max_chars: int = Field(300, ge=1)
    """longest paragraph used as a context or an option"""
    seed: int = 0
    """sampling of examples, distractors and option order"""


@dataclass
class Example:
    """One multiple-choice question: the JSONL line a task file holds (a user's own task uses
    the same three fields)."""

    id: str
    context: str
    options: list[str]
    answer: int

    def to_dict(self) -> dict:
        return asdict(self)


def page_part(page_id: str, fewshot_fraction: float) -> str:
    """`fewshot` or `test`: a pure function of the page, the same in every language."""
    return "fewshot" if unit_hash(f"icl/{page_id}") < fewshot_fraction else "test"


def _fits(text: str, spec: IclSpec) -> bool:
    return spec.min_chars <= len(text) <= spec.max_chars


def _similar(pool: list[tuple[str, str]], length: int, exclude: str, n: int, rng) -> list[str]:
    """`n` texts of `pool` ((page, text) pairs) from pages other than `exclude`, near `length`
    in characters: a distractor must not be told apart by its length alone."""
    others = sorted(
        {text for page, text in pool if page != exclude}, key=lambda t: (abs(len(t) - length), t)
    )
    nearest = others[: max(n, 4 * n)]
    return rng.sample(nearest, n) if len(nearest) >= n else []


def _question(qid: str, context: str, answer: str, distractors: list[str], rng) -> Example:
    options = [answer, *distractors]
    rng.shuffle(options)
    return Example(qid, context, options, options.index(answer))


def _spread(items: list, limit: int, rng, key: Callable) -> list:
    """At most `limit` items, taken round-robin over `key` groups (pages) in a random order, so
    a few long pages do not supply every example."""
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    order = list(groups.values())
    rng.shuffle(order)
    for group in order:
        rng.shuffle(group)
    out = []
    while len(out) < limit and any(order):
        for group in order:
            if group and len(out) < limit:
                out.append(group.pop())
    return out


def paragraphs(doc: Document) -> list[str]:
    return [p for p in doc.text.split("\n") if p.strip()]


def continuation_examples(docs: list[Document], spec: IclSpec, limit: int, rng) -> list[Example]:
    """Opening of a page (its first paragraphs, at least `min_chars` · 4 characters) → the true
    next paragraph vs. the true next paragraph of another page, of similar length."""
    candidates = []
    for doc in docs:
        paras = paragraphs(doc)
        cut = 1  # the opening: paragraphs until it is long enough to say what the page is about
        while cut < min(3, len(paras) - 1) and len("\n".join(paras[:cut])) < 4 * spec.min_chars:
            cut += 1
        opening = "\n".join(paras[:cut])
        if cut < len(paras) and _fits(paras[cut], spec) and len(opening) <= 2 * spec.max_chars:
            candidates.append((doc.id, opening, paras[cut]))
    # distractors are answers to other questions: a model that ignores the opening (or
    # prefers boilerplate it has memorised) is at chance, not below it
    pool = [(page, true_next) for page, _, true_next in candidates]
    out = []
    for page, opening, true_next in _spread(candidates, limit, rng, key=lambda c: c[0]):
        distractors = _similar(pool, len(true_next), page, 1, rng)
        if distractors and distractors[0] != true_next:
            out.append(_question(page, opening, true_next, distractors, rng))
    return out


def topic_of(page_id: str) -> str | None:
    """The application of a help page (`text/<app>/...`), or None for another corpus's id."""
    parts = page_id.split("/")
    return TOPICS.get(parts[1]) if len(parts) > 2 and parts[0] == "text" else None


def topic_examples(docs: list[Document], spec: IclSpec, limit: int, rng) -> list[Example]:
    """A paragraph of a page → the page's application, among all `TOPICS` labels."""
    labels = list(TOPICS.values())
    candidates = [
        (d.id, p, topic)
        for d in docs
        if (topic := topic_of(d.id))
        for p in paragraphs(d)
        if _fits(p, spec)
    ]
    return [
        Example(f"{page}#{i}", f"{text}\nTopic:", labels, labels.index(topic))
        for i, (page, text, topic) in enumerate(_spread(candidates, limit, rng, lambda c: c[0]))
    ]


Blocks = dict[str, list[tuple[str, str]]]  # page → [(paragraph id, text)]


def translation_examples(
    english: Blocks, target: Blocks, lang_name: str, spec: IclSpec, limit: int, rng
) -> list[Example]:
    """`English: <paragraph>\\n<Language>:` → its translation vs. three translations of other
    English paragraphs (other pages, similar length). Untranslated paragraphs are not used."""
    pairs = []
    for page, blocks in target.items():
        source = {pid: text for pid, text in english.get(page, []) if pid}
        for pid, text in blocks:
            en = source.get(pid)
            if en and en != text and _fits(en, spec) and _fits(text, spec):
                pairs.append((page, pid, en, text))
    # distractors are translations of other English paragraphs (see continuation_examples)
    pool = [(page, text) for page, _, _, text in pairs]
    out = []
    for page, pid, en, text in _spread(pairs, limit, rng, key=lambda p: p[0]):
        distractors = _similar(pool, len(text), page, 3, rng)
        if len(distractors) == 3 and text not in distractors:
            context = f"English: {en}\n{lang_name}:"
            out.append(_question(f"{page}#{pid}", context, text, distractors, rng))
    return out


def build_lang(
    lang: str,
    docs: Iterable[Document],
    spec: IclSpec,
    blocks: tuple[Blocks, Blocks] | None = None,
    lang_name: str | None = None,
) -> dict[str, dict[str, list[Example]]]:
    """{task: {part: examples}} of one language. `blocks` = (English, this language) paragraphs
    with ids, per page (translation only)."""
    by_part: dict[str, list[Document]] = {p: [] for p in PARTS}
    for doc in docs:
        by_part[page_part(doc.id, spec.fewshot_fraction)].append(doc)
    limits = {"test": spec.examples, "fewshot": spec.fewshot_examples}
    out: dict[str, dict[str, list[Example]]] = {}
    for task in spec.tasks:
        if task == "translation" and (blocks is None or lang == "en"):
            continue
        out[task] = {}
        for part in PARTS:
            # one generator per (task, language, part): adding a task changes no other file
            rng = random.Random(f"{spec.seed}/{task}/{lang}/{part}")
            pages = by_part[part]
            if task == "continuation":
                examples = continuation_examples(pages, spec, limits[part], rng)
            elif task == "topic":
                examples = topic_examples(pages, spec, limits[part], rng)
            else:
                keep = {d.id for d in pages}
                english, target = ({p: b for p, b in bl.items() if p in keep} for bl in blocks)
                examples = translation_examples(
                    english, target, lang_name or lang, spec, limits[part], rng
                )
            out[task][part] = examples
    return out
