"""Token streams: documents are tokenised once; an expert's cluster is a subset of them."""

import numpy as np
import pytest

from xelm.corpus import Corpus
from xelm.errors import XelmError
from xelm.tokenizer import load_tokenizer
from xelm.tokens import subset_streams, token_streams


def test_subset_streams_hold_exactly_the_kept_documents(lm_setup, tmp_path):
    corpus, tok = Corpus(lm_setup / "corpus"), load_tokenizer(lm_setup / "tok")
    streams = token_streams(corpus, tok, "train", ["en", "ja"], cache=tmp_path / "cache")
    docs = {lang: [d.text for d in corpus.documents("train", [lang])] for lang in ("en", "ja")}
    en = streams["en"]
    assert len(en.offsets()) == en.documents + 1 and en.offsets()[-1] == en.tokens
    assert en.document_bytes().sum() == en.bytes

    keep = {"en": np.arange(en.documents) % 3 == 0}  # every third English page, no Japanese
    sub = subset_streams(streams, keep, tmp_path / "cluster0")
    assert list(sub) == ["en"]  # a language with nothing kept is left out
    kept = [t for t, k in zip(docs["en"], keep["en"], strict=True) if k]
    ids = tok(kept, add_special_tokens=False)["input_ids"]
    expected = np.concatenate([[tok.eos_token_id, *x] for x in ids])
    np.testing.assert_array_equal(sub["en"].array(), expected)
    assert sub["en"].documents == len(kept)
    assert sub["en"].bytes == sum(len(t.encode("utf-8")) for t in kept)
    again = subset_streams(streams, keep, tmp_path / "cluster0")  # cached: read back, same
    assert again["en"].tokens == sub["en"].tokens

    with pytest.raises(XelmError, match="allocation does not match the corpus"):
        subset_streams(streams, {"en": np.ones(3, bool)}, tmp_path / "bad")
