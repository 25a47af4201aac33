"""Per-language perplexity and bits per byte: honest accounting, any HF causal LM."""

import math

import pytest
import torch

from xelm.corpus import Corpus
from xelm.evaluate import evaluate_model, score_texts, unigram_baseline, windows
from xelm.models import build_model, save_model
from xelm.tokenizer import load_tokenizer


@pytest.mark.parametrize(("context", "stride"), [(5, 2), (8, 8), (30, 4), (4, 1), (100, 50)])
def test_sliding_windows_score_every_token_exactly_once(context, stride):
    ids = list(range(23))  # ids[0] is the document separator: context only, never scored
    scored = []
    for window, n in windows(ids, context, stride):
        assert len(window) <= context + 1
        scored += window[len(window) - n :]
    assert scored == ids[1:]


@pytest.fixture(scope="module")
def tiny_model(lm_setup, tmp_path_factory):
    tok = load_tokenizer(lm_setup / "tok")
    out = tmp_path_factory.mktemp("m") / "llama"
    return save_model(build_model("tiny", tok, max_positions=64), tok, out)


def test_bits_per_byte_is_total_nll_over_utf8_bytes(lm_setup, tiny_model):
    res = evaluate_model(tiny_model, lm_setup / "corpus", split="validation")
    corpus = Corpus(lm_setup / "corpus")
    for lang, r in res.items():
        docs = list(corpus.documents("validation", [lang]))
        assert r["documents"] == len(docs)
        assert r["bytes"] == sum(len(d.text.encode()) for d in docs)
        assert r["bits_per_byte"] == pytest.approx(r["nll"] / math.log(2) / r["bytes"], rel=1e-4)
        assert r["perplexity"] == pytest.approx(math.exp(r["nll"] / r["tokens"]), rel=1e-4)
    # an untrained model is about as good as uniform over the vocabulary, per token
    assert res["en"]["perplexity"] == pytest.approx(400, rel=0.2)


def test_batching_and_windows_do_not_change_the_count(lm_setup, tiny_model):
    from xelm.models import load_model

    model, tok = load_model(tiny_model).eval(), load_tokenizer(tiny_model)
    texts = [d.text for d in Corpus(lm_setup / "corpus").documents("validation", ["ru"])][:4]
    one = score_texts(model, tok, texts, context=63, batch_size=1)
    many = score_texts(model, tok, texts, context=63, batch_size=8)
    short = score_texts(model, tok, texts, context=16)
    assert one.nll == pytest.approx(many.nll, rel=1e-5)
    assert one.tokens == short.tokens and one.bytes == short.bytes


def test_any_hf_causal_lm_works(lm_setup, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_tokenizer(lm_setup / "tok")
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    save_model(GPT2LMHeadModel(cfg), tok, tmp_path / "gpt2")
    res = evaluate_model(tmp_path / "gpt2", lm_setup / "corpus", "test", langs=["en"])
    assert res["en"]["tokens"] > 0 and math.isfinite(res["en"]["bits_per_byte"])


def test_unigram_baseline_matches_its_definition(lm_setup):
    res = unigram_baseline(lm_setup / "tok", lm_setup / "corpus", "validation", langs=["ja"])
    assert 0 < res["ja"]["bits_per_byte"] < 8
