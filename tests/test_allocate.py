"""Allocation: balanced TF-IDF clustering recovers known structure, typology pairing is exactly
the paper's greedy procedure, and both write the same allocation format."""

from __future__ import annotations

import random

import numpy as np
import pytest

from xelm.allocate import allocate
from xelm.allocate.allocation import Allocation
from xelm.allocate.balanced import BalancedKMeans, balance_prices
from xelm.allocate.tfidf import TfidfAllocationSpec, TfidfClusters, allocate_tfidf
from xelm.allocate.typology import TypologySpec, allocate_typology, greedy_pairing
from xelm.corpus import CorpusWriter, Document
from xelm.errors import XelmError

# Three "families", two languages each: a family shares most of its lexicon (drawn from one
# alphabet), each language adds words of its own. Labels are real tags; the text is artificial.
FAMILIES = {
    "latin": ("de", "nl", "abcdefghijklmnopqrstuvwxyz"),
    "cyrillic": ("ru", "uk", "абвгдежзийклмнопрстуфхцчшщыэюя"),
    "greek": ("el", "hy", "αβγδεζηθικλμνξοπρστυφχψω"),
}


def family_docs(docs_per_lang: int = 40, seed: int = 0, doc_seed: int = 1) -> list[Document]:
    """Lexicons are fixed by `seed`; `doc_seed` draws new documents from the same lexicons."""
    rng, doc_rng = random.Random(seed), random.Random(doc_seed)

    def word(alphabet):
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))

    docs = []
    for a, b, alphabet in FAMILIES.values():
        shared = [word(alphabet) for _ in range(80)]
        for lang in (a, b):
            own = [word(alphabet) for _ in range(30)]
            lexicon = shared + own  # Zipf-like: earlier words are more frequent
            weights = [1 / (r + 1) for r in range(len(lexicon))]
            for i in range(docs_per_lang):
                words = doc_rng.choices(lexicon, weights, k=80)
                docs.append(Document(f"{lang}-{doc_seed}-{i}", lang, " ".join(words)))
    return docs


@pytest.fixture
def family_corpus(tmp_path):
    with CorpusWriter(tmp_path / "families") as w:
        w.write_all(family_docs())
    return tmp_path / "families"


def family_of(lang: str) -> str:
    return next(f for f, (a, b, _) in FAMILIES.items() if lang in (a, b))


def test_tfidf_clusters_recover_the_families_and_are_balanced(family_corpus, tmp_path):
    # the families' training splits differ by a few documents (splits are drawn by id hash), so
    # a tolerance of 1.25 lets each family be one cluster; 1.0 would move a few documents
    spec = TfidfAllocationSpec(k=3, max_ratio=1.25, workers=1)
    info = allocate_tfidf(family_corpus, tmp_path / "alloc", spec, progress=False)
    assert info.quality.balance_documents <= 1.25
    majority = []
    for cluster in info.clusters:
        per_family = {}
        for lang, v in cluster.languages.items():
            per_family[family_of(lang)] = per_family.get(family_of(lang), 0) + v.documents
        top = max(per_family, key=per_family.get)
        assert per_family[top] >= 0.97 * cluster.documents, cluster.languages
        majority.append(top)
    assert sorted(majority) == sorted(FAMILIES)  # each family is one cluster

    alloc = Allocation(tmp_path / "alloc")
    table = alloc.assignments()
    assert table.num_rows == 240 and len(set(table["id"].to_pylist())) == 240
    # new documents of each language land in their family's cluster
    router = TfidfClusters.load(alloc.router_dir)
    from xelm.ensemble.build import language_to_cluster

    by_lang = language_to_cluster(alloc)  # the cluster holding most of each language
    new = family_docs(docs_per_lang=2, doc_seed=7)
    assert router.assign([d.text for d in new]).tolist() == [by_lang[d.lang] for d in new]


def test_router_state_save_load_embeds_identically(family_corpus, tmp_path):
    allocate_tfidf(
        family_corpus, tmp_path / "a", TfidfAllocationSpec(k=2, workers=1), progress=False
    )
    router = TfidfClusters.load(tmp_path / "a" / "router")
    router.save(tmp_path)  # save again elsewhere and reload
    again = TfidfClusters.load(tmp_path)
    texts = ["abc def ghij", "абв где", ""]
    np.testing.assert_array_equal(router.embedder.embed(texts), again.embedder.embed(texts))
    np.testing.assert_array_equal(router.squared_distances(texts), again.squared_distances(texts))


def test_corrupted_router_state_is_a_clear_error(family_corpus, tmp_path):
    allocate_tfidf(
        family_corpus, tmp_path / "a", TfidfAllocationSpec(k=2, workers=1), progress=False
    )
    (tmp_path / "a" / "router" / "tfidf.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(XelmError, match="corrupted TF-IDF router state"):
        TfidfClusters.load(tmp_path / "a" / "router")
    (tmp_path / "a" / "router" / "tfidf.json").unlink()
    with pytest.raises(XelmError, match="missing"):
        TfidfClusters.load(tmp_path / "a" / "router")


def test_balancing_holds_on_skewed_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (900, 8)), rng.normal(6, 1, (100, 8))])
    km = BalancedKMeans(4, max_ratio=1.05).fit(x)
    sizes = np.bincount(km.assign(x), minlength=4)
    assert sizes.max() / sizes.min() <= 1.05
    # exact balance when asked: every cluster at most ceil(n/k)
    cost = rng.random((1001, 3))
    _, labels = balance_prices(cost, 1.0)
    assert np.bincount(labels).max() == 334


def test_greedy_pairing_takes_the_closest_pair_first_not_the_best_matching():
    # on a line: b-c is the closest pair, so greedy pairs (b, c) then (a, d), although
    # (a, b) + (c, d) would be the cheaper matching
    x = np.array([0.0, 1.0, 1.5, 2.6])
    tree = greedy_pairing(np.abs(x[:, None] - x[None, :]))
    assert [(m["a"], m["b"], m["round"]) for m in tree.merges] == [(1, 2, 1), (0, 3, 1), (4, 5, 2)]
    assert tree.clusters(2) == [[0, 3], [1, 2]]


def test_greedy_pairing_rounds_single_linkage_odd_counts_and_any_k():
    x = np.array([0.0, 1.0, 3.0, 4.5, 10.0, 10.2])
    tree = greedy_pairing(np.abs(x[:, None] - x[None, :]))
    # round 1: (4,5) 0.2, (0,1) 1.0, (2,3) 1.5; round 2: {0,1}+{2,3} at single-linkage 2.0,
    # {4,5} is left over (odd count) and passes on; round 3: the root at 5.5
    got = [(m["members"], m["distance"], m["round"]) for m in tree.merges]
    assert got == [
        ([4, 5], 0.2, 1),
        ([0, 1], 1.0, 1),
        ([2, 3], 1.5, 1),
        ([0, 1, 2, 3], 2.0, 2),
        ([0, 1, 2, 3, 4, 5], 5.5, 3),
    ]
    assert tree.clusters(3) == [[0, 1], [2, 3], [4, 5]]
    assert tree.clusters(2) == [[0, 1, 2, 3], [4, 5]]
    # k = 4 is not 6/2^r: round 1 stops after its two closest pairs
    assert tree.clusters(4) == [[0, 1], [2], [3], [4, 5]]
    assert tree.clusters(6) == [[i] for i in range(6)] and tree.clusters(1) == [list(range(6))]


def test_greedy_pairing_size_limit_keeps_clusters_comparable():
    x = np.array([0.0, 0.1, 5.0, 5.1])
    dist, sizes = np.abs(x[:, None] - x[None, :]), [10, 10, 1, 1]
    assert greedy_pairing(dist, 2, sizes).clusters(2) == [[0, 1], [2, 3]]  # 20 vs 2
    limited = greedy_pairing(dist, 2, sizes, max_size_factor=1.5)  # no cluster above 16.5
    assert limited.clusters(2) == [[0], [1, 2, 3]]  # 10 vs 12
    assert not any(m["relaxed"] for m in limited.merges)


def test_typology_allocation_groups_whole_languages_and_keeps_the_tree(family_corpus, tmp_path):
    info = allocate_typology(family_corpus, tmp_path / "typ", TypologySpec(k=2))
    mapping = info.language_to_cluster
    assert sorted(mapping) == ["de", "el", "hy", "nl", "ru", "uk"]
    assert len(info.tree["merges"]) == 5 and info.tree["cut_after_merges"] == 4
    table = Allocation(tmp_path / "typ").assignments()
    assert all(
        mapping[lang] == c
        for lang, c in zip(table["lang"].to_pylist(), table["cluster"].to_pylist(), strict=True)
    )
    assert (tmp_path / "typ" / "dendrogram.png").stat().st_size > 0
    # de and nl are typologically closer to each other than to Armenian or Greek
    assert mapping["de"] == mapping["nl"]


@pytest.mark.parametrize(
    ("method", "k", "message"),
    [
        ("tfidf", 0, "k: input should be greater than or equal to 1"),
        ("tfidf", 10_000, "--k 10000: must be between 1"),
        ("typology", 7, "--k 7: must be between 1 and the 6 training languages"),
    ],
)
def test_bad_k_is_a_clear_error_and_writes_nothing(family_corpus, tmp_path, method, k, message):
    from xelm.allocate import METHODS
    from xelm.spec import load_spec

    with pytest.raises(XelmError, match=message.replace("(", r"\(")):
        allocate(family_corpus, tmp_path / "out", load_spec(METHODS[method], values={"k": k}))
    assert not (tmp_path / "out").exists()


def test_typology_needs_two_languages_known_to_uriel(tmp_path):
    with CorpusWriter(tmp_path / "one") as w:
        w.write_all([Document(str(i), "de", f"wort {i} text") for i in range(20)])
    with pytest.raises(XelmError, match="at least 2 training languages"):
        allocate_typology(tmp_path / "one", tmp_path / "out", TypologySpec(k=1))
    with CorpusWriter(tmp_path / "sk") as w:  # URIEL's syntax_average knows no Slovak feature
        w.write_all(
            [Document(f"{lang}{i}", lang, f"slovo {i}") for lang in ("sk", "cs") for i in range(20)]
        )
    with pytest.raises(XelmError, match=r"too few known URIEL syntax_average features for sk"):
        allocate_typology(tmp_path / "sk", tmp_path / "out", TypologySpec(k=2))
    allocate_typology(tmp_path / "sk", tmp_path / "out", TypologySpec(k=2, features="syntax_knn"))
    with CorpusWriter(tmp_path / "dz") as w:  # Dzongkha is not in URIEL at all
        w.write_all(
            [Document(f"{lang}{i}", lang, f"text {i}") for lang in ("dz", "en") for i in range(20)]
        )
    with pytest.raises(XelmError, match=r"not in URIEL \(lang2vec\): dz \(dzo\)"):
        allocate_typology(tmp_path / "dz", tmp_path / "out2", TypologySpec(k=2))
    with pytest.raises(XelmError, match="--features syntax_averag: unknown"):
        allocate_typology(
            tmp_path / "sk", tmp_path / "o", TypologySpec(k=2, features="syntax_averag")
        )


def test_small_vocabularies_still_fit(tmp_path):
    with CorpusWriter(tmp_path / "c") as w:
        w.write_all([Document(str(i), "en", "ab" * (i + 1)) for i in range(12)])
    spec = TfidfAllocationSpec(k=2, svd_dims=100, workers=1)
    info = allocate_tfidf(tmp_path / "c", tmp_path / "a", spec, progress=False)
    # every document is assigned, and the summary counts the corpus's training split
    from xelm.corpus import Corpus

    train = Corpus(tmp_path / "c").stats("en", "train")["documents"]
    assert Allocation(tmp_path / "a").assignments().num_rows == 12
    sizes = [c.documents for c in info.clusters]
    assert sum(sizes) == train and min(sizes) > 0


def run_xelm(*args):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "xelm", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_allocates_shows_and_rejects_bad_input_in_one_line(family_corpus, tmp_path):
    out = tmp_path / "typ"
    res = run_xelm(
        "allocate", "typology", "--corpus", str(family_corpus), "--k", "3", "--out", str(out)
    )
    assert res.returncode == 0, res.stderr
    shown = run_xelm("allocate", "show", str(out)).stdout
    for text in ("c0", "c2", "documents", "balance", "NMI", "cluster 0:"):
        assert text in shown

    res = run_xelm(
        "allocate",
        "tfidf",
        "--corpus",
        str(family_corpus),
        "--k",
        "0",
        "--out",
        str(tmp_path / "bad"),
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: options: k: input should be greater than or equal to 1"
    ]
    assert not (tmp_path / "bad").exists()
    res = run_xelm("allocate", "show", str(tmp_path))
    assert res.returncode == 2 and "not an allocation" in res.stderr


def test_a_corpus_without_training_documents_is_a_clear_error(tmp_path):
    from xelm.corpus import SplitFractions

    with CorpusWriter(
        tmp_path / "c", splits=SplitFractions(validation_fraction=0.0, test_fraction=1.0)
    ) as w:
        w.write_all(
            [Document(f"{lang}{i}", lang, f"text {i}") for lang in ("de", "fr") for i in range(5)]
        )
    for spec in (TfidfAllocationSpec(k=2), TypologySpec(k=2)):
        with pytest.raises(XelmError, match="no training documents"):
            allocate(tmp_path / "c", tmp_path / "out", spec)


def test_cosine_distance_is_the_papers_own_norms_by_default():
    """Dot product over the shared dimensions, each norm over that language's own dimensions."""
    from xelm.allocate.typology import cosine_distances

    nan = float("nan")
    v = np.array([[1.0, 0.0, nan, 1.0], [1.0, 1.0, 1.0, nan]])
    # shared dims 0 and 1: dot 1; |a| over its dims 0, 1, 3 = √2, |b| over 0, 1, 2 = √3
    assert cosine_distances(v, ["a", "b"])[0, 1] == pytest.approx(1 - 1 / np.sqrt(6))
    # both norms over the shared dims only: |a| = 1, |b| = √2
    assert cosine_distances(v, ["a", "b"], "shared")[0, 1] == pytest.approx(1 - 1 / np.sqrt(2))


PAPER_LANGS = [
    "ar",
    "bg",
    "de",
    "el",
    "en",
    "es",
    "fr",
    "hi",
    "ja",
    "ko",
    "ru",
    "sw",
    "tr",
    "ur",
    "vi",
    "zh",
]


@pytest.mark.parametrize(
    ("k", "groups"),
    [
        (4, ["en es bg ru", "ar fr de el", "ja ko tr zh", "hi ur sw vi"]),
        (8, ["en es", "de el", "ja ko", "hi ur", "bg ru", "ar fr", "tr zh", "sw vi"]),
    ],
)
def test_greedy_pairing_finds_the_papers_groups_on_its_languages(k, groups):
    """The X-ELM paper's 16 mC4 languages and its typological groups at k=4 and k=8. With
    Levantine Arabic's URIEL vector for `ar` (URIEL has no `ara`), the paper's distance and
    rounds of greedy pairing give exactly its groups; with norms over the shared dimensions
    they do not."""
    from xelm.allocate.typology import cosine_distances, uriel_vectors

    spec = TypologySpec(uriel_codes={"ar": "apc"})
    vectors = uriel_vectors(PAPER_LANGS, spec)

    def clusters(norms: str) -> list[list[str]]:
        tree = greedy_pairing(cosine_distances(vectors, PAPER_LANGS, norms), 1)
        return sorted(sorted(PAPER_LANGS[i] for i in g) for g in tree.clusters(k))

    assert clusters("own") == sorted(sorted(g.split()) for g in groups)
    assert clusters("shared") != sorted(sorted(g.split()) for g in groups)


def test_macrolanguages_use_the_individual_language_uriel_knows():
    from xelm.allocate.typology import uriel_code

    assert uriel_code("ar", TypologySpec()) == "arb" and uriel_code("sw", TypologySpec()) == "swh"
    assert uriel_code("ar", TypologySpec(uriel_codes={"ar": "apc"})) == "apc"
    assert uriel_code("de", TypologySpec()) == "deu"
