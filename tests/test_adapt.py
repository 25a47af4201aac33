"""Teaching an X-ELM a new language (HMR) against continuing the dense model on it (LAPT), on a
synthetic corpus whose held-out languages (uk, de) the seed never saw."""

from __future__ import annotations

import hashlib
import random

import pytest
import torch

from xelm.adapt import AdaptSpec, adapt_ensemble, lapt
from xelm.config import TrainConfig
from xelm.errors import XelmError

NEW_ALPHABETS = {
    "uk": "аеґєіїклмнорт",  # Cyrillic, with its own letters and letter frequencies
    "de": "aeeeinnrrsstdhulgmoäöüß",  # Latin, with its own letter frequencies
}
TRAIN = TrainConfig(seq_len=32, micro_batch_size=4, threads=1, lr=3e-3)


def digest(folder) -> dict[str, str]:
    """SHA-256 of every file in a folder tree (bit-identity of models and configs)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def xelm_run(tmp_path_factory):
    """Seed, a typology k=2 X-ELM and the dense run on en/ru/ja; uk and de held out."""
    from conftest import synthetic_docs

    from xelm.allocate.tfidf import TfidfAllocationSpec, allocate_tfidf
    from xelm.allocate.typology import TypologySpec, allocate_typology
    from xelm.corpus import CorpusWriter, Document
    from xelm.ensemble.build import build_ensemble
    from xelm.experts import BranchSpec, train_dense, train_experts
    from xelm.tokenizer import TokenizerSpec, train_tokenizer
    from xelm.train.loop import train

    root = tmp_path_factory.mktemp("adapt")
    rng = random.Random(1)
    new = [
        Document(
            f"page-{i:04d}",
            lang,
            " ".join(
                "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 7))) for _ in range(80)
            ),
        )
        for lang, alphabet in NEW_ALPHABETS.items()
        for i in range(80)
    ]
    with CorpusWriter(root / "corpus") as writer:
        writer.write_all(synthetic_docs(pages=120) + new)
        writer.extra = {"train_langs": ["en", "ru", "ja"], "heldout_langs": ["uk", "de"]}
    corpus = root / "corpus"
    train_tokenizer(corpus, root / "tok", TokenizerSpec(vocab_size=400, sample_chars=100_000))
    seed = train(
        TRAIN.replace(
            corpus=str(corpus),
            tokenizer=str(root / "tok"),
            out=str(root / "seed"),
            preset="tiny",
            max_tokens=16 * 4 * 32,
        ),
        progress=False,
    )
    allocate_typology(corpus, root / "alloc", TypologySpec(k=2), progress=False)
    branch = BranchSpec(tokens=8 * 4 * 32, train=TRAIN)
    train_experts(seed, root / "alloc", root / "experts", branch, progress=False)
    train_dense(seed, corpus, root / "dense", branch, progress=False)
    experts = sorted((root / "experts").glob("expert_??"))
    build_ensemble(experts, root / "ens", router="posterior", prior_from=corpus)
    allocate_tfidf(corpus, root / "alloc-tfidf", TfidfAllocationSpec(k=2), progress=False)
    train_experts(seed, root / "alloc-tfidf", root / "experts-tfidf", branch, progress=False)
    experts = sorted((root / "experts-tfidf").glob("expert_??"))
    build_ensemble(experts, root / "ens-tfidf", router="tfidf")
    return root


def adapt(ensemble, corpus, out, spec):
    return adapt_ensemble(ensemble, corpus, out, spec, progress=False)


def spec(**kw) -> AdaptSpec:
    return AdaptSpec(**{"langs": ["uk"], "tokens": 12 * 4 * 32, "train": TRAIN} | kw)


def test_adapting_adds_an_expert_and_leaves_the_old_ones_bit_identical(xelm_run, tmp_path):
    from xelm.adapt import Ensemble
    from xelm.experts import ExpertRecord

    root = xelm_run
    before = digest(root / "ens")
    records = adapt(root / "ens", root / "corpus", tmp_path / "ens+uk", spec())
    assert digest(root / "ens") == before  # the old ensemble folder is untouched
    grown = Ensemble.read(tmp_path / "ens+uk")
    old = Ensemble.read(root / "ens")
    assert len(grown.experts) == len(old.experts) + 1
    for a, b in zip(old.experts, grown.experts, strict=False):
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    # typology: Ukrainian branches from the expert that holds Russian, and says so
    (record,) = records
    parent = record.adapted.parent
    assert "ru" in old.languages[parent]
    assert record.adapted.distance is not None and record.adapted.budget == 12 * 4 * 32
    placed = ExpertRecord.read(grown.experts[-1])
    assert placed.adapted == record.adapted
    assert grown.config.language_to_expert["uk"] == len(old.experts)
    assert len(grown.config.prior) == len(grown.experts)
    assert abs(sum(grown.config.prior) - 1) < 1e-4


def test_a_new_expert_starts_as_an_exact_copy_of_its_parent(xelm_run, tmp_path):
    """With a learning rate of 0 training changes nothing: what comes out is where it began."""
    from safetensors.torch import load_file

    from xelm.adapt import Ensemble

    root = xelm_run
    still = TRAIN.replace(lr=0.0, weight_decay=0.0)
    for rule in ("typology", "seed", "1"):
        out = tmp_path / f"ens-{rule}"
        (record,) = adapt(
            root / "ens", root / "corpus", out, spec(parent=rule, train=still, tokens=4 * 32)
        )
        old = Ensemble.read(root / "ens")
        start = old.seed() if rule == "seed" else old.experts[record.adapted.parent]
        got = load_file(Ensemble.read(out).experts[-1] / "model.safetensors")
        want = load_file(start / "model.safetensors")
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
    assert record.adapted.parent == 1 and record.adapted.rule == "1"


def test_every_router_sends_the_new_language_to_the_new_expert(xelm_run, tmp_path):
    from xelm.corpus import Corpus
    from xelm.ensemble import XELMForCausalLM

    root = xelm_run
    adapt(root / "ens", root / "corpus", tmp_path / "ens", spec(tokens=40 * 4 * 32))
    texts = [d.text for d in Corpus(root / "corpus").documents("test", ["uk"])][:4]
    new = 2
    lid = XELMForCausalLM.from_pretrained(tmp_path / "ens", router="lid")
    lid.router.identify = lambda text: "uk"  # langid.py's answer for real Ukrainian text
    assert lid.router.route(texts).argmax(-1).tolist() == [new] * len(texts)
    posterior = XELMForCausalLM.from_pretrained(tmp_path / "ens", router="posterior")
    ids = posterior.tokenizer(
        texts, return_tensors="pt", padding=True, truncation=True, max_length=48
    )
    with torch.no_grad():
        out = posterior(**ids, use_cache=True)
    assert out.cache.loglik.argmax(-1).tolist() == [new] * len(texts)


def test_the_tfidf_router_gets_a_centroid_for_the_new_language(xelm_run, tmp_path):
    from xelm.corpus import Corpus
    from xelm.ensemble import XELMForCausalLM

    root = xelm_run
    adapt(root / "ens-tfidf", root / "corpus", tmp_path / "ens", spec(langs=["uk", "de"]))
    corpus = Corpus(root / "corpus")
    tfidf = XELMForCausalLM.from_pretrained(tmp_path / "ens", router="tfidf")
    for lang, expert in (("uk", 2), ("de", 3), ("ru", None)):
        texts = [d.text for d in corpus.documents("test", [lang])][:5]
        routed = tfidf.router.route(texts).argmax(-1).tolist()
        if expert is None:  # an old language still goes to an old expert
            assert max(routed) < 2
        else:
            assert routed == [expert] * len(texts)


def test_lapt_and_hmr_consume_the_same_tokens(xelm_run, tmp_path):
    from xelm.train import TrainRecord

    root = xelm_run
    s = spec(langs=["de"])
    (record,) = adapt(root / "ens", root / "corpus", tmp_path / "ens", s)
    run = lapt(root / "dense", root / "corpus", "de", tmp_path / "lapt-de", s, progress=False)
    expert = TrainRecord.read(tmp_path / "ens.experts" / "expert_de")
    assert run.tokens == record.tokens == expert.tokens == 12 * 4 * 32
    assert run.steps == expert.steps
    assert run.config.replace(init="", out="") == expert.config.replace(init="", out="")
    assert run.languages == expert.languages == ["de"]


def test_bad_adaptations_are_clear_errors_and_write_nothing(xelm_run, tmp_path):
    import shutil

    root = xelm_run
    out = tmp_path / "out"
    cases = [
        (spec(langs=["fr"]), root / "ens", "no training pages in 'fr'"),
        (spec(langs=["ru"]), root / "ens", "already has ru"),
        (spec(parent="7"), root / "ens", "--parent 7: the ensemble has experts 0..1"),
    ]
    broken = tmp_path / "broken"
    shutil.copytree(root / "ens", broken, copy_function=shutil.copy2)
    shutil.rmtree(broken / "experts" / "expert_01")
    cases.append((spec(), broken, "expert folder experts/expert_01 is missing"))
    for s, ens, message in cases:
        with pytest.raises(XelmError, match=message):
            adapt(ens, root / "corpus", out, s)
        assert not out.exists()
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        spec(tokens=0)
