"""Routing that follows the document: a windowed posterior, the fallback model mixed in token by
token, re-routing before every window, the cost in model passes, and experts trained with
replay. Each against its definition, on tiny random models or the synthetic corpus."""

import math

import pytest
import torch
from test_ensemble import VOCAB, ensemble, ids, tiny_expert

from xelm.ensemble.modeling import windowed_posterior
from xelm.errors import XelmError


def test_windowed_posterior_reads_only_the_last_tokens_before_each_position():
    torch.manual_seed(0)
    lp = torch.randn(2, 10, 3) - 3  # log p of the next token, per member
    mask = torch.ones(2, 10)
    prior = torch.tensor([0.5, 0.3, 0.2]).log()
    for window in (None, 1, 3, 20):
        got = windowed_posterior(lp, mask, prior, 2.0, window)
        for t in range(10):  # α(t) weighs the prediction of x_{t+1}: tokens x_1..x_t are seen
            first = 1 if window is None else max(1, t - window + 1)
            seen = sum((lp[:, s - 1] for s in range(first, t + 1)), torch.zeros(2, 3))
            want = (prior + seen / 2.0).log_softmax(-1)
            torch.testing.assert_close(got[:, t], want, atol=1e-5, rtol=1e-5)


def with_fallback(experts, fallback, window=None, weight=0.5, **kw):
    model = ensemble(experts, **kw)
    model.fallback = fallback
    model.config.use_fallback, model.config.window = True, window
    model.config.fallback_weight = weight
    return model


@torch.no_grad()
def test_fallback_is_weighed_against_the_routed_experts_by_their_recent_likelihood():
    experts, seed = [tiny_expert(1), tiny_expert(2)], tiny_expert(3)
    x = ids(batch=2, length=12)
    mask, scored = torch.ones_like(x), torch.zeros_like(x, dtype=torch.bool)
    scored[:, :-1] = True
    alpha = torch.tensor([[0.7, 0.3], [0.0, 1.0]]).log()
    model = with_fallback(experts, seed, window=4, weight=0.3, router="prior", prior=[0.5, 0.5])
    got = model.score(x, mask, scored, expert_log_weights=alpha).view(2, -1)

    def next_logp(m):  # (batch, time-1): log p of x_{t+1} at t
        return m(input_ids=x).logits[:, :-1].log_softmax(-1).gather(-1, x[:, 1:, None])[..., 0]

    routed = torch.logsumexp(
        torch.stack([next_logp(e) for e in experts], -1) + alpha[:, None, :], -1
    )
    fb = next_logp(seed)
    for t in range(11):
        first = max(1, t - 3)  # the last 4 tokens x_first..x_t
        s_routed = sum((routed[:, s - 1] for s in range(first, t + 1)), torch.zeros(2))
        s_fb = sum((fb[:, s - 1] for s in range(first, t + 1)), torch.zeros(2))
        beta = torch.stack([math.log(0.7) + s_routed, math.log(0.3) + s_fb], -1).log_softmax(-1)
        want = torch.logsumexp(beta + torch.stack([routed[:, t], fb[:, t]], -1), -1)
        torch.testing.assert_close(got[:, t], want, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_no_score_depends_on_the_tokens_it_predicts_or_later_ones():
    experts, seed = [tiny_expert(1), tiny_expert(2), tiny_expert(4)], tiny_expert(3)
    x = ids(batch=1, length=16)
    y = x.clone()
    y[0, 9:] = (y[0, 9:] + 7) % (VOCAB - 3) + 3  # another future from token 9 on
    mask, scored = torch.ones_like(x), torch.ones_like(x, dtype=torch.bool)
    models = {
        "posterior, window 5": ensemble(experts, "posterior"),
        "posterior + fallback": with_fallback(experts, seed, 5, router="posterior"),
        "top-1 + fallback": with_fallback(experts, seed, 5, router="prior", top_experts=1),
    }
    models["posterior, window 5"].config.window = 5
    for name, model in models.items():
        a, b = model.score(x, mask, scored), model.score(y, mask, scored)
        # position t scores x_{t+1}: positions 0..7 predict tokens before 9
        torch.testing.assert_close(a[:8], b[:8], msg=name)
        assert not torch.allclose(a[8:], b[8:]), name


@torch.no_grad()
def test_forward_gives_the_distribution_whose_next_tokens_score_returns():
    """lm-eval reads options from forward's logits: they must be score()'s mixture."""
    experts, seed = [tiny_expert(1), tiny_expert(2)], tiny_expert(3)
    x = ids(batch=2, length=14)
    mask, scored = torch.ones_like(x), torch.zeros_like(x, dtype=torch.bool)
    scored[:, :-1] = True
    alpha = torch.tensor([[0.9, 0.1], [0.2, 0.8]]).log()
    cases = {
        "fixed + fallback": (with_fallback(experts, seed, 4, router="prior"), alpha),
        "posterior + fallback": (with_fallback(experts, seed, 4, router="posterior"), None),
        "posterior, window 3": (ensemble(experts, "posterior"), None),
    }
    cases["posterior, window 3"][0].config.window = 3
    for name, (model, a) in cases.items():
        logits = model(input_ids=x, expert_log_weights=a).logits
        assert torch.allclose(logits.exp().sum(-1), torch.ones(x.shape), atol=1e-5), name
        picked = logits[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1).flatten()
        want = model.score(x, mask, scored, expert_log_weights=a)
        torch.testing.assert_close(picked, want, atol=1e-5, rtol=1e-5, msg=name)


@torch.no_grad()
def test_scoring_the_tail_of_a_window_gives_the_numbers_of_scoring_it_all():
    """score() runs the output layer only where a weight or a score reads it: the last tokens
    of a window (its context unscored, as the evaluator's sliding windows) score as they do
    when every position is scored."""
    experts, seed = [tiny_expert(1), tiny_expert(2)], tiny_expert(3)
    x = ids(batch=2, length=16)
    mask = torch.ones_like(x)
    mask[1, 13:] = 0  # a shorter, right-padded row
    every = mask.bool().clone()
    every[:, -1] = False
    every[1, 12] = False
    tail = every.clone()
    tail[:, :9] = False
    alpha = torch.tensor([[0.9, 0.1], [0.2, 0.8]]).log()
    cases = {
        "fixed + fallback, window 4": (with_fallback(experts, seed, 4, router="prior"), alpha),
        "posterior + fallback": (with_fallback(experts, seed, None, router="posterior"), None),
        "posterior, window 3": (ensemble(experts, "posterior"), None),
    }
    cases["posterior, window 3"][0].config.window = 3
    for name, (model, a) in cases.items():
        full = torch.zeros(x.shape)
        full[every] = model.score(x, mask, every, expert_log_weights=a)
        got = model.score(x, mask, tail, expert_log_weights=a)
        torch.testing.assert_close(got, full[tail], atol=1e-5, rtol=1e-5, msg=name)


def test_fallback_needs_a_fallback_model_and_whole_sequences():
    experts = [tiny_expert(1), tiny_expert(2)]
    x = ids(batch=1)
    model = ensemble(experts)
    model.config.use_fallback = True
    with pytest.raises(XelmError, match="no fallback model"):
        model.score(x, torch.ones_like(x), torch.ones_like(x, dtype=torch.bool))
    with pytest.raises(XelmError, match="score whole sequences"):
        with_fallback(experts, tiny_expert(3)).generate(x, max_new_tokens=2, pad_token_id=0)


def _ensemble_with_fallback(trained, branch_setup, tmp_path):
    from xelm.ensemble.build import build_ensemble

    root, out = trained
    experts, _ = out["typology"]
    _, seed, _ = branch_setup
    build_ensemble(experts, tmp_path / "ens", fallback=seed)  # the posterior over all
    return tmp_path / "ens", seed


def test_ensemble_folder_carries_its_fallback(trained, branch_setup, tmp_path):
    from xelm.ensemble import XELMForCausalLM

    folder, seed = _ensemble_with_fallback(trained, branch_setup, tmp_path)
    assert (folder / "fallback" / "config.json").exists()
    model = XELMForCausalLM.from_pretrained(folder, use_fallback=True, window=8)
    assert model.fallback is not None and model.mixes_fallback and model.config.window == 8
    model.save_pretrained(tmp_path / "copy")
    assert XELMForCausalLM.from_pretrained(tmp_path / "copy").mixes_fallback  # as loaded
    assert not XELMForCausalLM.from_pretrained(folder).mixes_fallback  # off unless asked for


@torch.no_grad()
@pytest.mark.parametrize("route_on", ["recent", "prefix"])
def test_rerouting_reads_only_the_text_before_each_window(
    trained, branch_setup, lm_setup, tmp_path, route_on
):
    from xelm.corpus import Corpus
    from xelm.ensemble import XELMForCausalLM
    from xelm.evaluate import score_texts_routed, windows

    folder, _ = _ensemble_with_fallback(trained, branch_setup, tmp_path)
    model = XELMForCausalLM.from_pretrained(
        folder, router="lid", top_experts=1, use_fallback=True, window=8
    )
    tok = model.tokenizer
    corpus = Corpus(lm_setup / "corpus")
    en, ru = (next(iter(corpus.documents("test", [x]))).text for x in ("en", "ru"))
    text = en[:150] + " " + ru[:400]  # a document that changes language
    read = []
    route_each = model.router.route_each  # evaluation routes many texts in one call
    model.router.route_each = lambda texts: read.extend(texts) or route_each(texts)
    P, context, stride = 8, 40, 20
    scored = score_texts_routed(
        model, tok, [text], context, route_tokens=P, stride=stride, route_on=route_on
    )
    doc = [tok.eos_token_id, *tok(text, add_special_tokens=False).input_ids]
    # the fallback scores the head alone, inside the first window: no window skips it
    want, first, pieces = [tok.decode(doc[1 : P + 1], skip_special_tokens=True)], 1, 0
    for w, n in windows(doc, context, stride):
        before = w[1 : len(w) - n] if route_on == "recent" else doc[1:first]
        if before:  # the first window has nothing before its targets: the head's α
            want.append(tok.decode(before, skip_special_tokens=True))
        first, pieces = first + n, pieces + 1
    assert read == want  # the head, then before every window only what precedes its targets
    assert pieces > 3 and sum(scored.routed) == 1  # routed: where the document's head went
    # each window runs its routed expert and the fallback, nothing else
    assert scored.cost == 2.0


@torch.no_grad()
def test_head_tokens_is_how_much_of_a_document_is_read_before_it_is_routed(
    trained, branch_setup, lm_setup, tmp_path, monkeypatch
):
    from xelm.corpus import Corpus
    from xelm.ensemble.routers import LanguageRouter, RouterChoice
    from xelm.evaluate import evaluate_model
    from xelm.tokenizer import load_tokenizer

    folder, _ = _ensemble_with_fallback(trained, branch_setup, tmp_path)
    choice = RouterChoice(
        router="lid", top_k=1, route_on="recent", window=8, head_tokens=5, fallback=True
    )
    assert choice.name == "lid-top1-recent-w8-h5+seed"
    read = []
    each = LanguageRouter.route_each
    monkeypatch.setattr(LanguageRouter, "route_each", lambda r, t: read.extend(t) or each(r, t))
    corpus = lm_setup / "corpus"
    evaluate_model(folder, corpus, langs=["en"], max_docs=1, **choice.settings())
    tok = load_tokenizer(folder)
    text = next(iter(Corpus(corpus).documents("test", ["en"]))).text
    head = tok(text, add_special_tokens=False).input_ids[:5]
    assert read[0] == tok.decode(head, skip_special_tokens=True)


@torch.no_grad()
def test_cost_counts_every_model_pass(trained, branch_setup, lm_setup, tmp_path):
    from xelm.evaluate import evaluate_model

    folder, seed = _ensemble_with_fallback(trained, branch_setup, tmp_path)
    corpus = lm_setup / "corpus"
    dense = evaluate_model(seed, corpus, langs=["en"], max_docs=3)["en"]
    assert dense["cost"] == 1.0 and dense["model_tokens"] == dense["window_tokens"]
    full = evaluate_model(folder, corpus, langs=["en"], max_docs=3)["en"]
    assert full["cost"] == pytest.approx(2.0)  # both experts on every token
    routed = evaluate_model(
        folder, corpus, langs=["en"], max_docs=3, router="lid", top_experts=1, fallback=True
    )["en"]
    # the routed expert and the fallback on every window, and the posterior over both experts
    # on the heads whose language langid.py gives to no expert (random synthetic words)
    assert 2.0 <= routed["cost"] < 2.5
    top1 = evaluate_model(
        folder, corpus, langs=["en"], max_docs=3, router="posterior", top_experts=1
    )["en"]
    assert top1["window_tokens"] == dense["window_tokens"] and 1.0 < top1["cost"] < 2.0


@torch.no_grad()
def test_progress_counts_every_scored_token_once(trained, branch_setup, lm_setup, tmp_path):
    from xelm.evaluate import evaluate_model

    folder, seed = _ensemble_with_fallback(trained, branch_setup, tmp_path)
    how = {
        "seed": (seed, {}),
        "posterior top-1 (head by the posterior)": (
            folder,
            {"router": "posterior", "top_experts": 1},
        ),
        "LID + seed, recent": (
            folder,
            {"router": "lid", "top_experts": 1, "route_on": "recent", "fallback": True},
        ),
    }
    for name, (model, kw) in how.items():
        ticks: list[tuple[str, int]] = []
        scores = evaluate_model(
            model,
            lm_setup / "corpus",
            langs=["en", "ru"],
            max_docs=2,
            on_batch=lambda lang, n, ticks=ticks: ticks.append((lang, n)),
            **kw,
        )
        for lang in ("en", "ru"):
            assert sum(n for x, n in ticks if x == lang) == scores[lang]["tokens"], name


def test_replay_draws_its_share_of_blocks_from_the_whole_mix(lm_setup, tmp_path):
    from xelm.allocate.typology import TypologySpec, allocate_typology
    from xelm.tokenizer import load_tokenizer
    from xelm.train import TrainConfig
    from xelm.train.data import REPLAY_PREFIX, training_data

    info = allocate_typology(lm_setup / "corpus", tmp_path / "alloc", TypologySpec(k=2))
    cluster = info.clusters[0]
    cfg = TrainConfig(
        corpus=str(lm_setup / "corpus"),
        allocation=str(tmp_path / "alloc"),
        cluster=cluster.id,
        seq_len=32,
        replay=0.25,
    )
    data = training_data(cfg, load_tokenizer(lm_setup / "tok"))
    replayed = {k: w for k, w in data.weights.items() if k.startswith(REPLAY_PREFIX)}
    assert sorted(k.removeprefix(REPLAY_PREFIX) for k in replayed) == ["en", "ja", "ru"]
    assert sum(replayed.values()) == pytest.approx(0.25)
    assert sorted(data.langs) == sorted(cluster.languages)  # validated on its own data
    sampler = data.sampler  # the probability of drawing a block from each stream
    share = sum(p for x, p in zip(sampler.langs, sampler.p, strict=True) if x in replayed)
    assert share == pytest.approx(0.25)
