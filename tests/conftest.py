"""Shared fixtures: tests run offline, on small synthetic corpora built in tmp_path."""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Artificial "languages": each draws words from its own alphabet (Latin, Cyrillic, kana), so
# tokenizers and clustering have real structure to find. The labels are real BCP-47 tags.
ALPHABETS = {
    "en": "abcdefghijklmnopqrstuvwxyz",
    "ru": "абвгдежзийклмнопрстуфхцчшщыэюя",
    "ja": "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよ",
}


def synthetic_text(lang: str, rng: random.Random, words: int = 80) -> str:
    alphabet = ALPHABETS[lang]
    sep = "" if lang == "ja" else " "
    return sep.join(
        "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 7))) for _ in range(words)
    )


def synthetic_docs(langs=("en", "ru", "ja"), pages: int = 60, seed: int = 0):
    """Parallel synthetic documents: page ids are shared across languages, like the demo."""
    from xelm.corpus import Document

    rng = random.Random(seed)
    # a small language (ja) gets fewer pages, so balancing has something to do
    return [
        Document(f"page-{i:04d}", lang, synthetic_text(lang, rng))
        for lang in langs
        for i in range(pages if lang != "ja" else pages // 4)
    ]


@pytest.fixture
def corpus_dir(tmp_path):
    from xelm.corpus import CorpusWriter

    out = tmp_path / "corpus"
    with CorpusWriter(out) as writer:
        writer.write_all(synthetic_docs())
    return out


@pytest.fixture(scope="session")
def lm_setup(tmp_path_factory):
    """A synthetic corpus with a tokenizer: enough for tiny models to train on."""
    from xelm.corpus import CorpusWriter
    from xelm.tokenizer import TokenizerSpec, train_tokenizer

    root = tmp_path_factory.mktemp("lm")
    with CorpusWriter(root / "corpus") as writer:
        writer.write_all(synthetic_docs(pages=200))
    train_tokenizer(
        root / "corpus", root / "tok", TokenizerSpec(vocab_size=400, sample_chars=200_000)
    )
    return root


@pytest.fixture(scope="session")
def branch_setup(lm_setup, tmp_path_factory):
    """A tiny seed trained on the synthetic corpus and a typology allocation with k=2."""
    from xelm.allocate.typology import TypologySpec, allocate_typology
    from xelm.config import TrainConfig
    from xelm.train.loop import train

    root = tmp_path_factory.mktemp("branch")
    cfg = TrainConfig(
        corpus=str(lm_setup / "corpus"),
        tokenizer=str(lm_setup / "tok"),
        out=str(root / "seed"),
        preset="tiny",
        max_tokens=8 * 4 * 32,
        seq_len=32,
        micro_batch_size=4,
        threads=1,
    )
    seed = train(cfg, progress=False)
    allocate_typology(lm_setup / "corpus", root / "alloc", TypologySpec(k=2))
    return root, seed, root / "alloc"


@pytest.fixture(scope="session")
def trained(branch_setup, lm_setup):
    """k=2 experts for a typology and a TF-IDF allocation of the synthetic corpus."""
    from xelm.allocate.tfidf import TfidfAllocationSpec, allocate_tfidf
    from xelm.config import TrainConfig
    from xelm.experts import BranchSpec, train_experts

    root, seed, typology = branch_setup
    tfidf = root / "alloc-tfidf"
    if not tfidf.exists():
        allocate_tfidf(lm_setup / "corpus", tfidf, TfidfAllocationSpec(k=2), progress=False)
    base = TrainConfig(seq_len=32, micro_batch_size=4, threads=1, lr=1e-3)
    out = {}
    for name, alloc in (("typology", typology), ("tfidf", tfidf)):
        spec = BranchSpec(tokens=8 * 4 * 32, train=base)
        train_experts(seed, alloc, root / f"ens-{name}", spec, progress=False)
        out[name] = (sorted((root / f"ens-{name}").glob("expert_??")), alloc)
    return root, out
