"""The X-ELM ensemble against brute force on tiny random experts: the mixture is Σ α p, one
expert is that expert, top-1 runs one expert, the posterior is prior × likelihood, and
generate() works with per-expert caches."""

import math
import os
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from xelm.ensemble import XELMConfig, XELMForCausalLM
from xelm.ensemble.routers import PosteriorRouter, Router
from xelm.errors import XelmError

VOCAB = 50


def tiny_expert(seed: int, vocab: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def ensemble(experts, router="uniform", top_experts=None, prior=None, temperature=None):
    cfg = XELMConfig(
        experts=[f"e{i}" for i in range(len(experts))],
        router=router,
        top_experts=top_experts,
        prior=prior,
        temperature=temperature,
        vocab_size=VOCAB,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return XELMForCausalLM(cfg, experts).eval()


@pytest.fixture(scope="module")
def experts():
    return [tiny_expert(s) for s in range(3)]


def ids(batch=2, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=g)


def expert_logp(model, x):
    return model(input_ids=x).logits.log_softmax(-1)


@torch.no_grad()
def test_mixture_is_the_explicit_sum_of_weighted_probabilities(experts):
    x = ids()
    prior = [0.5, 0.3, 0.2]
    got = ensemble(experts, "prior", prior=prior)(input_ids=x).logits
    want = sum(a * expert_logp(m, x).exp() for a, m in zip(prior, experts, strict=True)).log()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got.exp().sum(-1), torch.ones(x.shape))  # a distribution


@torch.no_grad()
def test_one_expert_ensemble_is_that_expert_logits_and_generate(experts):
    x = ids(batch=1, length=5)
    one = ensemble(experts[:1])
    torch.testing.assert_close(one(input_ids=x).logits, expert_logp(experts[0], x))
    kw = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(one.generate(x, **kw), experts[0].generate(x, **kw))


@torch.no_grad()
def test_one_hot_weights_equal_the_chosen_expert_and_top1_runs_only_it(experts):
    x = ids()
    model = ensemble(experts, top_experts=1)
    weights = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]]).log()
    out = model(input_ids=x, expert_log_weights=weights).logits
    torch.testing.assert_close(out[0], expert_logp(experts[1], x[:1])[0])
    torch.testing.assert_close(out[1], expert_logp(experts[0], x[1:])[0])
    assert model.forward_calls == [1, 1, 0]  # expert 2 never ran
    model.forward_calls = [0, 0, 0]
    model(input_ids=x, expert_log_weights=torch.tensor([[0.0, -math.inf, -math.inf]] * 2))
    assert model.forward_calls == [1, 0, 0]


@torch.no_grad()
def test_posterior_is_the_normalised_product_of_prior_and_likelihood(experts):
    x = ids(batch=1, length=10)
    prior = [0.2, 0.5, 0.3]
    model = ensemble(experts, "posterior", prior=prior)
    got = model(input_ids=x).logits
    # brute force, token by token: α(t) ∝ prior · Π_{s≤t} p_e(x_s | x_<s)
    logps = torch.stack([expert_logp(m, x)[0] for m in experts])  # (experts, time, vocab)
    for t in range(x.shape[1]):
        ll = torch.tensor(
            [sum(logps[e, s - 1, x[0, s]].item() for s in range(1, t + 1)) for e in range(3)]
        )
        post = torch.tensor(prior) * ll.exp()
        post = post / post.sum()
        want = (post[:, None] * logps[:, t].exp()).sum(0).log()
        torch.testing.assert_close(got[0, t], want, atol=1e-5, rtol=1e-4)
    # the evaluator's path: the posterior after the whole sequence (what routes its rest)
    score_mask = torch.ones_like(x, dtype=torch.bool)
    score_mask[:, -1] = False  # nothing follows the last token
    _, log_alpha = model.score(x, torch.ones_like(x), score_mask, return_posterior=True)
    torch.testing.assert_close(log_alpha[0].exp(), post, atol=1e-5, rtol=1e-4)
    router = PosteriorRouter(3, prior)
    assert torch.allclose(router.posterior(torch.zeros(3)).exp(), torch.tensor(prior))


@torch.no_grad()
def test_generate_with_caches_matches_recomputing_everything(experts):
    x = ids(batch=2, length=6)
    for router in ("uniform", "posterior"):
        model = ensemble(experts, router)
        kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
        cached = model.generate(x, **kw)
        uncached = model.generate(x, use_cache=False, **kw)
        assert torch.equal(cached, uncached), router
        # greedy = the argmax of the mixture at each step, recomputed from scratch
        seq = x
        for _ in range(6):
            nxt = model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
        assert torch.equal(cached, seq), router
    beams = ensemble(experts, "posterior").generate(
        x, num_beams=3, max_new_tokens=5, do_sample=False, pad_token_id=0
    )
    assert beams.shape == (2, 11)
    torch.manual_seed(0)
    sampled = ensemble(experts, top_experts=2, prior=[0.6, 0.3, 0.1], router="prior").generate(
        x, do_sample=True, max_new_tokens=5, pad_token_id=0
    )
    assert sampled.shape == (2, 11)


def test_bad_weights_and_experts_are_clear_errors(experts):
    with pytest.raises(XelmError, match="sum to one"):
        ensemble(experts)(input_ids=ids(), expert_log_weights=torch.zeros(2, 3))
    with pytest.raises(XelmError, match="prior"):
        Router(3, [0.5, 0.6, 0.1])
    from xelm.ensemble.modeling import check_experts

    with pytest.raises(XelmError, match="vocabulary"):
        check_experts([experts[0], tiny_expert(0, vocab=60)], ["a", "b"])


# --- ensemble folders on real (tiny) experts ------------------------------------------------


def test_ensemble_folder_loads_with_auto_classes_and_round_trips(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    from xelm.ensemble.build import build_ensemble
    from xelm.models import load_model

    root, out = trained
    experts, _ = out["typology"]
    build_ensemble(experts, tmp_path / "ens", router="posterior")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ens")
    assert isinstance(loaded, XELMForCausalLM)
    x = ids(batch=2, length=10)
    manual = ensemble([load_model(e).eval() for e in experts], "posterior")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, manual(input_ids=x).logits)
        loaded.save_pretrained(tmp_path / "saved" / "ens")
        again = XELMForCausalLM.from_pretrained(tmp_path / "saved" / "ens")
        torch.testing.assert_close(again(input_ids=x).logits, loaded(input_ids=x).logits)


def test_ensemble_folder_holds_its_experts_and_loads_nothing_from_outside(trained, tmp_path):
    import json
    import shutil

    from xelm.ensemble.build import build_ensemble
    from xelm.experts import ExpertRecord

    root, out = trained
    experts, alloc = out["typology"]
    build_ensemble(experts, tmp_path / "ens", router="prior")
    inner = tmp_path / "ens" / "experts" / experts[0].name
    # hard links: the experts' weights take no extra disk
    weights = inner / "model.safetensors"
    assert weights.stat().st_ino == (experts[0] / "model.safetensors").stat().st_ino
    # the placed expert's record still finds its seed and allocation
    record = ExpertRecord.read(inner)
    assert (inner / record.allocation).resolve() == alloc.resolve()
    assert ExpertRecord.read(experts[0]).allocation != record.allocation
    # the folder works wherever it is moved
    shutil.move(tmp_path / "ens", tmp_path / "elsewhere")
    x = ids(batch=1, length=8)
    moved = XELMForCausalLM.from_pretrained(tmp_path / "elsewhere")
    # a config naming a folder outside (here: the original expert) is refused unless trusted
    config = json.loads((tmp_path / "elsewhere" / "config.json").read_text())
    config["experts"][0] = os.path.relpath(experts[0], tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "config.json").write_text(json.dumps(config))
    with pytest.raises(XelmError, match="outside the ensemble folder.*--trust-external-experts"):
        XELMForCausalLM.from_pretrained(tmp_path / "elsewhere")
    trusted = XELMForCausalLM.from_pretrained(tmp_path / "elsewhere", trust_external_experts=True)
    with torch.no_grad():
        torch.testing.assert_close(trusted(input_ids=x).logits, moved(input_ids=x).logits)
    # so is a link inside that points outside
    config["experts"][0] = "experts/link"
    (tmp_path / "elsewhere" / "config.json").write_text(json.dumps(config))
    (tmp_path / "elsewhere" / "experts" / "link").symlink_to(experts[0].resolve())
    with pytest.raises(XelmError, match="outside the ensemble folder"):
        XELMForCausalLM.from_pretrained(tmp_path / "elsewhere")


def test_tfidf_router_sends_each_language_to_its_cluster(trained, tmp_path, lm_setup):
    from xelm.allocate.allocation import Allocation
    from xelm.corpus import Corpus
    from xelm.ensemble.build import build_ensemble, language_to_cluster

    root, out = trained
    experts, alloc = out["tfidf"]
    build_ensemble(experts, tmp_path / "ens", router="tfidf", top_experts=1)
    model = XELMForCausalLM.from_pretrained(tmp_path / "ens")
    info = Allocation(alloc)
    home = language_to_cluster(info)
    corpus = Corpus(lm_setup / "corpus")

    def alpha(lang):
        docs = list(corpus.documents("test", [lang]))[:5]
        prefix = model.tokenizer([d.text[:200] for d in docs], return_tensors="pt", padding=True)
        return model.route(prefix.input_ids, prefix.attention_mask).exp()

    for lang in ("en", "ru"):  # each wholly in one cluster: its expert, confidently
        assert (alpha(lang)[:, home[lang]] > 0.9).all(), lang
    # balancing split the small Japanese set over both clusters: so does the router
    split = [c.languages["ja"].documents if "ja" in c.languages else 0 for c in info.clusters]
    if min(split) > 0.3 * max(split):
        assert (alpha("ja").max(-1).values < 0.9).all()
    with pytest.raises(XelmError, match="empty"):
        model.router.route([""])


def test_language_id_router_routes_known_languages_and_falls_back(trained, tmp_path):
    from xelm.ensemble.build import build_ensemble

    root, out = trained
    experts, _ = out["typology"]
    build_ensemble(experts, tmp_path / "ens", router="lid")
    model = XELMForCausalLM.from_pretrained(tmp_path / "ens")
    lid = model.router
    assert lid.identify("Съешь же ещё этих мягких французских булок, да выпей же чаю.") == "ru"
    en = lid.route(["All human beings are born free and equal in dignity and rights."])
    assert en.exp()[0, model.config.language_to_expert["en"]] == 1.0
    # Esperanto: no expert holds it, so the posterior decides
    eo = "Ĉiuj homoj estas denaske liberaj kaj egalaj laŭ digno kaj rajtoj."
    assert lid.route([eo]) is None
    x = model.tokenizer(eo, return_tensors="pt").input_ids
    posterior = XELMForCausalLM.from_pretrained(tmp_path / "ens", router="posterior")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, posterior(input_ids=x).logits)
    # many texts at once (evaluation routes every window): each as it would be on its own
    from conftest import synthetic_text

    rng = random.Random(0)
    texts = [synthetic_text(lang, rng, words) for lang in ("en", "ru", "ja") for words in (3, 40)]
    texts += [eo, "ok", "https://example.org/a?b=1", "12 345"]
    assert lid.identify_each(texts) == [lid.identify(t) for t in texts]
    each = lid.route_each(texts)
    for text, alpha in zip(texts, each, strict=True):
        alone = lid.route([text])
        assert (alpha is None) == (alone is None) and (alone is None or alpha.equal(alone[0]))
    assert each[len(texts) - 4] is None  # Esperanto


def test_parameter_average_merge_and_bad_folders(trained, tmp_path, lm_setup):
    from safetensors.torch import load_file

    from xelm.ensemble.build import build_ensemble, merge_average

    root, out = trained
    experts, _ = out["typology"]
    merge_average(experts, tmp_path / "merged", weights=[0.25, 0.75])
    got = load_file(tmp_path / "merged" / "model.safetensors")
    a, b = (load_file(e / "model.safetensors") for e in experts)
    for k, v in got.items():
        torch.testing.assert_close(v, 0.25 * a[k] + 0.75 * b[k])
    # a missing expert folder, and an expert with another tokenizer
    import shutil

    build_ensemble(experts, tmp_path / "ens2")
    shutil.rmtree(tmp_path / "ens2" / "experts" / experts[1].name)
    with pytest.raises(XelmError, match="missing"):
        XELMForCausalLM.from_pretrained(tmp_path / "ens2")
    from xelm.tokenizer import TokenizerSpec, train_tokenizer

    other = tmp_path / "other"
    shutil.copytree(experts[1], other)
    train_tokenizer(
        lm_setup / "corpus",
        tmp_path / "tok2",
        TokenizerSpec(vocab_size=400, sample_chars=50_000, alpha=0.0),
    )
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tmp_path / "tok2" / f, other / f)
    with pytest.raises(XelmError, match="tokenizer differs"):
        build_ensemble([experts[0], other], tmp_path / "ens3")
    assert not (tmp_path / "ens3").exists()


def test_cli_builds_ensembles_and_merges_and_rejects_bad_input(trained, tmp_path):
    import subprocess
    import sys

    root, out = trained
    experts, _ = out["typology"]
    folder = experts[0].parent

    def xelm(*args):
        return subprocess.run(
            [sys.executable, "-m", "xelm", *args], capture_output=True, text=True, timeout=300
        )

    res = xelm(
        "ensemble",
        "build",
        "--experts",
        str(folder),
        "--out",
        str(tmp_path / "e"),
        "--router",
        "lid",
        "--top-k",
        "1",
    )
    assert res.returncode == 0, res.stderr
    assert XELMForCausalLM.from_pretrained(tmp_path / "e").config.experts[0].endswith("expert_00")
    res = xelm("merge", "average", "--experts", str(folder), "--out", str(tmp_path / "m"))
    assert res.returncode == 0 and (tmp_path / "m" / "model.safetensors").exists()
    for args, message in [
        (
            [
                "ensemble",
                "build",
                "--experts",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "x"),
            ],
            "no such expert folder",
        ),
        (
            [
                "ensemble",
                "build",
                "--experts",
                str(folder),
                "--out",
                str(tmp_path / "x"),
                "--top-k",
                "5",
            ],
            "--top-k 5",
        ),
        (
            [
                "merge",
                "average",
                "--experts",
                str(folder),
                "--out",
                str(tmp_path / "x"),
                "--weights",
                "0.5,0.6",
            ],
            "summing to one",
        ),
    ]:
        res = xelm(*args)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / "x").exists()


def test_windows_score_every_token_after_the_head_once():
    from xelm.evaluate import windows

    for n in (1, 5, 31, 32, 33, 100):
        for skip in (0, 8, 40):
            ids = list(range(n + 1))
            scored = [t for w, k in windows(ids, context=16, stride=8, skip=skip) for t in w[-k:]]
            assert scored == list(range(skip + 1, n + 1)), (n, skip)


@torch.no_grad()
def test_routed_evaluation_scores_the_head_by_posterior_and_the_rest_by_the_routed_expert(
    trained, tmp_path, lm_setup
):
    import torch.nn.functional as F

    from xelm.corpus import Corpus
    from xelm.ensemble.build import build_ensemble
    from xelm.evaluate import evaluate_model, score_texts_routed

    root, out = trained
    experts, _ = out["tfidf"]
    build_ensemble(experts, tmp_path / "ens", router="tfidf", top_experts=1)
    model = XELMForCausalLM.from_pretrained(tmp_path / "ens")
    tok = model.tokenizer
    text = next(iter(Corpus(lm_setup / "corpus").documents("test", ["ru"]))).text[:300]
    P = 8
    scored = score_texts_routed(model, tok, [text], context=400, route_tokens=P)
    got = scored.nll
    ids = torch.tensor([[tok.eos_token_id, *tok(text, add_special_tokens=False).input_ids]])
    with model.routing(model.posterior_router(), None):
        head = model(input_ids=ids[:, : P + 1]).logits[0, :-1]
    want = F.cross_entropy(head, ids[0, 1 : P + 1], reduction="sum").item()
    alpha = model.route(ids[:, 1 : P + 1])  # the router reads the head's text
    expert = model.experts[int(alpha.argmax())]
    assert scored.routed == [int(e == alpha.argmax()) for e in range(len(model.experts))]
    logp = expert(input_ids=ids).logits[0, :-1].log_softmax(-1)
    want += F.cross_entropy(logp[P:], ids[0, P + 1 :], reduction="sum").item()
    assert got == pytest.approx(want, rel=1e-5)
    scores = evaluate_model(
        tmp_path / "ens", lm_setup / "corpus", "test", max_docs=3, router="posterior"
    )
    assert set(scores) == {"en", "ru", "ja"}
    assert all(s["bits_per_byte"] > 0 for s in scores.values())


@torch.no_grad()
def test_mixture_with_top2_mixes_rows_that_share_some_experts(experts):
    x = ids(batch=3)
    weights = torch.tensor([[0.5, 0.4, 0.1], [0.5, 0.1, 0.4], [0.6, 0.3, 0.1]])
    got = ensemble(experts, top_experts=2)(input_ids=x, expert_log_weights=weights.log()).logits
    kept = torch.tensor([[0.5, 0.4, 0.0], [0.5, 0.0, 0.4], [0.6, 0.3, 0.0]])
    kept = kept / kept.sum(-1, keepdim=True)
    probs = torch.stack([expert_logp(m, x).exp() for m in experts], dim=-1)  # (b, t, v, e)
    want = (probs * kept[:, None, None, :]).sum(-1).log()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_score_equals_the_mixture_log_probability_of_each_next_token(experts):
    x = ids(batch=3, length=9)
    mask = torch.ones_like(x)
    score_mask = torch.zeros_like(x, dtype=torch.bool)
    score_mask[:, :-1] = True
    score_mask[1, :4] = False  # score only some positions of a row
    for router, top in (("posterior", None), ("posterior", 2), ("prior", 2), ("uniform", None)):
        model = ensemble(experts, router, top_experts=top, prior=[0.5, 0.3, 0.2])
        logp = model(input_ids=x).logits[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1)
        want = torch.nn.functional.pad(logp, (0, 1))[score_mask]
        torch.testing.assert_close(model.score(x, mask, score_mask), want, atol=1e-5, rtol=1e-5)


def test_cached_prior_is_estimated_from_held_out_documents(trained, tmp_path, lm_setup):
    from xelm.ensemble.build import PriorSpec, build_ensemble

    root, out = trained
    experts, _ = out["typology"]
    build_ensemble(
        experts,
        tmp_path / "ens",
        router="prior",
        prior_from=lm_setup / "corpus",
        prior_spec=PriorSpec(documents=5),
    )
    model = XELMForCausalLM.from_pretrained(tmp_path / "ens")
    prior = model.config.prior
    assert len(prior) == 2 and abs(sum(prior) - 1) < 1e-4
    # 5 documents of each of 3 languages: the expert holding two languages is asked for more
    home = model.config.language_to_expert
    bigger = 0 if list(home.values()).count(0) == 2 else 1
    assert prior[bigger] > prior[1 - bigger]
    x = ids(batch=1, length=6)
    with torch.no_grad():  # the prior router mixes with exactly that prior
        want = sum(
            a * expert_logp(m, x).exp() for a, m in zip(prior, model.experts, strict=True)
        ).log()
        torch.testing.assert_close(model(input_ids=x).logits, want, atol=1e-5, rtol=1e-5)
