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


class UniformLM(torch.nn.Module):
    """Every next token equally likely: each scored token costs exactly ln V nats."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


@pytest.mark.parametrize("context", [8, 16, 63])
def test_windows_score_every_token_of_every_document_exactly_once(lm_setup, context):
    tok = load_tokenizer(lm_setup / "tok")
    texts = [d.text for d in Corpus(lm_setup / "corpus").documents("validation", ["ru"])][:4]
    score = score_texts(UniformLM(len(tok)), tok, texts, context=context, batch_size=3)
    n_tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
    assert n_tokens > 4 * context  # long documents: several windows each
    assert score.tokens == n_tokens
    assert score.nll == pytest.approx(n_tokens * math.log(len(tok)), rel=1e-6)


def test_batching_does_not_change_the_scores_and_a_window_sees_its_context(lm_setup, tiny_model):
    from xelm.models import load_model

    model, tok = load_model(tiny_model).eval(), load_tokenizer(tiny_model)
    texts = [d.text for d in Corpus(lm_setup / "corpus").documents("validation", ["ru"])][:4]
    one = score_texts(model, tok, texts, context=63, batch_size=1)
    many = score_texts(model, tok, texts, context=63, batch_size=8)
    assert one.nll == pytest.approx(many.nll, rel=1e-5)
    # by hand: the first window of the first document, each token given all tokens before it
    ids = [tok.eos_token_id, *tok(texts[0], add_special_tokens=False)["input_ids"]][:64]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    first = -logp.gather(-1, torch.tensor(ids[1:])[:, None]).sum().item()
    alone = score_texts(model, tok, [tok.decode(ids[1:])], context=63)
    assert alone.tokens == 63 and alone.nll == pytest.approx(first, rel=1e-5)


@torch.no_grad()
def test_logits_at_some_positions_are_the_full_logits_there(tiny_model):
    from xelm.models import load_model, logits_at

    model = load_model(tiny_model).eval()
    x = torch.randint(3, 100, (2, 20))
    mask = torch.ones_like(x)
    keep = torch.tensor([4, 11, 18])
    full = model(input_ids=x, attention_mask=mask).logits
    torch.testing.assert_close(logits_at(model, x, mask, keep), full[:, keep])
    # a model without HF's logits_to_keep: the full logits, sliced
    uniform = logits_at(UniformLM(7), x, mask, keep)
    assert uniform.shape == (2, 3, 7)


def test_bf16_evaluation_agrees_with_fp32_and_sums_in_fp32(lm_setup, tiny_model):
    # `precision: bf16` is autocast of the matmuls only: the log-softmax and the sums stay fp32,
    # so an untrained model's bits/byte agree to a fraction of a percent
    corpus = lm_setup / "corpus"
    fp32 = evaluate_model(tiny_model, corpus, "validation", ["en", "ru"], precision="fp32")
    bf16 = evaluate_model(tiny_model, corpus, "validation", ["en", "ru"], precision="bf16")
    for lang in ("en", "ru"):
        assert bf16[lang]["tokens"] == fp32[lang]["tokens"]
        assert bf16[lang]["bits_per_byte"] == pytest.approx(fp32[lang]["bits_per_byte"], rel=2e-3)
        assert bf16[lang]["nll"] != fp32[lang]["nll"]  # bf16 did run


def test_any_hf_causal_lm_works(lm_setup, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_tokenizer(lm_setup / "tok")
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    save_model(GPT2LMHeadModel(cfg), tok, tmp_path / "gpt2")
    res = evaluate_model(tmp_path / "gpt2", lm_setup / "corpus", "test", langs=["en"])
    assert res["en"]["tokens"] > 0 and math.isfinite(res["en"]["bits_per_byte"])


def test_unigram_baseline_matches_its_definition(lm_setup):
    """Add-one smoothed token frequencies of the training split, summed over the test tokens."""
    import collections

    tok = load_tokenizer(lm_setup / "tok")
    corpus = Corpus(lm_setup / "corpus")
    res = unigram_baseline(lm_setup / "tok", lm_setup / "corpus", "validation", langs=["ja"])
    train = [d.text for d in corpus.documents("train", ["ja"])]
    counts = collections.Counter(
        t for ids in tok(train, add_special_tokens=False)["input_ids"] for t in ids
    )
    total, vocab = sum(counts.values()), len(tok)
    texts = [d.text for d in corpus.documents("validation", ["ja"])]
    nll = -sum(
        math.log((counts[t] + 1) / (total + vocab))
        for ids in tok(texts, add_special_tokens=False)["input_ids"]
        for t in ids
    )
    nbytes = sum(len(t.encode()) for t in texts)
    assert res["ja"]["nll"] == pytest.approx(nll, rel=1e-9)
    assert res["ja"]["bits_per_byte"] == pytest.approx(nll / math.log(2) / nbytes, rel=1e-4)


def test_held_out_documents_come_tokenised_from_the_cache_like_the_texts(lm_setup):
    from xelm.evaluate import held_out_documents, tokenised

    tok = load_tokenizer(lm_setup / "tok")
    corpus = Corpus(lm_setup / "corpus")
    texts = [d.text for d in corpus.documents("validation", ["ja"])][:3]
    cached = held_out_documents(corpus, tok, "validation", "ja", max_docs=3)
    fresh = tokenised(tok, texts)
    assert [d.tolist() for d in cached.ids] == [d.tolist() for d in fresh.ids]  # separator first
    assert cached.bytes == fresh.bytes and cached.tokens == fresh.tokens
    assert cached.ids[0][0] == tok.eos_token_id
    everything = held_out_documents(corpus, tok, "validation", "ja", max_docs=None)
    assert len(everything.ids) == len(list(corpus.documents("validation", ["ja"])))


def test_an_evaluator_loads_once_and_scores_any_set_as_evaluate_model_does(lm_setup, tiny_model):
    from xelm.evaluate import Evaluator

    evaluator = Evaluator(tiny_model, device="auto")
    assert evaluator.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    corpus = lm_setup / "corpus"
    seen = []
    first = evaluator.evaluate(corpus, "validation", ["en"], max_docs=2)
    again = evaluator.evaluate(corpus, "test", ["ru"], on_batch=lambda lang, n: seen.append(n))
    assert first == evaluate_model(tiny_model, corpus, "validation", ["en"], max_docs=2)
    assert again == evaluate_model(tiny_model, corpus, "test", ["ru"])
    assert sum(seen) == again["ru"]["tokens"]  # the progress callback counts every token once


def test_a_device_that_is_not_there_is_a_clear_error(tiny_model):
    from xelm.errors import XelmError
    from xelm.models import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(XelmError, match="use auto, cpu or cuda"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(XelmError, match="no CUDA GPU here"):
            resolve_device("cuda")


def test_scoring_progress_shows_tokens_per_second_on_a_terminal_and_nothing_in_a_log():
    import io

    from rich.console import Console

    from xelm.display import scoring_progress

    for terminal in (True, False):
        out = io.StringIO()
        console = Console(file=out, force_terminal=terminal, width=80)
        with scoring_progress("seed, udhr", console) as tick:
            tick("de", 1000)
            tick("ru", 500)
            console.file.flush()
            shown = out.getvalue()
        assert ("scoring seed, udhr" in shown) == terminal
        if not terminal:
            assert out.getvalue() == ""  # a log file gets no blank lines either
