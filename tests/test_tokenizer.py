import collections

import pytest
from transformers import AutoTokenizer

from xelm.corpus import Corpus, sampling_shares
from xelm.errors import XelmError
from xelm.tokenizer import (
    TokenizerSpec,
    balanced_sample,
    fertility,
    train_tokenizer,
)


def test_language_shares_interpolate_between_uniform_and_proportional():
    sizes = {"en": 900, "ja": 100}
    assert sampling_shares(sizes, 1.0) == pytest.approx({"en": 0.9, "ja": 0.1})
    assert sampling_shares(sizes, 0.0) == pytest.approx({"en": 0.5, "ja": 0.5})
    mid = sampling_shares(sizes, 0.3)
    assert 0.1 < mid["ja"] < 0.5


def test_balanced_sample_upweights_the_small_language(corpus_dir):
    corpus = Corpus(corpus_dir)
    spec = TokenizerSpec(sample_chars=200_000, alpha=0.0)
    chars = collections.Counter()
    by_text = {d.text: d.lang for d in corpus.documents("train")}
    for text in balanced_sample(corpus, spec):
        chars[by_text[text]] += len(text)
    # alpha=0: every language gets about a third of the sample, although ja has 1/4 of the pages
    for lang in corpus.langs:
        assert chars[lang] == pytest.approx(200_000 / 3, rel=0.05)


def test_trained_tokenizer_loads_with_plain_transformers(corpus_dir, tmp_path):
    out = train_tokenizer(
        corpus_dir, tmp_path / "tok", TokenizerSpec(vocab_size=600, sample_chars=100_000)
    )
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert len(tok) == 600
    doc = next(Corpus(corpus_dir).documents("train", ["ja"]))
    ids = tok(doc.text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == doc.text  # byte-level: lossless for any script
    assert len(ids) < len(doc.text.encode())  # and it did learn merges for kana
    rows = {r.lang: r for r in fertility(tok, corpus_dir, split="train")}
    assert set(rows) == {"en", "ru", "ja"}
    assert all(0 < r.tokens_per_byte < 1 for r in rows.values())


def test_vocab_too_small_is_a_user_error(corpus_dir, tmp_path):
    from xelm.spec import load_spec

    with pytest.raises(XelmError, match="vocab_size: input should be greater than or equal to 300"):
        train_tokenizer(
            corpus_dir, tmp_path / "tok", load_spec(TokenizerSpec, values={"vocab_size": 100})
        )
    assert not (tmp_path / "tok").exists()
