import gzip
import json

import pytest
import zstandard
from conftest import synthetic_docs

from xelm.corpus import (
    Corpus,
    CorpusWriter,
    Document,
    SourceOptions,
    SplitFractions,
    read_source,
)
from xelm.data.build import import_corpus
from xelm.errors import XelmError


def test_split_is_a_function_of_the_id_only():
    fr = SplitFractions(validation_fraction=0.1, test_fraction=0.1)
    ids = [f"page-{i}" for i in range(20_000)]
    splits = [fr.of(i) for i in ids]
    assert [fr.of(i) for i in ids] == splits  # deterministic
    share = {s: splits.count(s) / len(ids) for s in ("train", "validation", "test")}
    assert share["test"] == pytest.approx(0.1, abs=0.01)
    assert share["validation"] == pytest.approx(0.1, abs=0.01)


def test_parallel_pages_share_their_split(corpus_dir):
    corpus = Corpus(corpus_dir)
    test_ids = {lang: {d.id for d in corpus.documents("test", [lang])} for lang in corpus.langs}
    # ja has the first quarter of the pages; each of its test pages is a test page elsewhere
    assert test_ids["ja"] <= test_ids["en"]
    assert test_ids["en"] == test_ids["ru"]


def test_roundtrip_and_manifest_counts(tmp_path):
    docs = synthetic_docs()
    with CorpusWriter(tmp_path / "c") as w:
        w.write_all(docs)
    corpus = Corpus(tmp_path / "c")
    assert sorted(corpus.documents(), key=lambda d: (d.lang, d.id)) == sorted(
        docs, key=lambda d: (d.lang, d.id)
    )
    en = [d for d in docs if d.lang == "en"]
    stats = corpus.stats("en")
    assert stats["documents"] == len(en)
    assert stats["characters"] == sum(len(d.text) for d in en)
    assert stats["bytes"] == sum(len(d.text.encode()) for d in en)
    assert sum(corpus.stats("en", s)["documents"] for s in ("train", "validation", "test")) == len(
        en
    )
    assert corpus.train_langs == ["en", "ja", "ru"]


def test_duplicates_are_dropped_and_conflicting_ids_rejected(tmp_path):
    with CorpusWriter(tmp_path / "c") as w:
        assert w.write(Document("a", "en", "same text"))
        assert not w.write(Document("b", "en", "same text"))  # exact duplicate text
        assert w.write(Document("a", "fr", "same text"))  # other language: kept
    assert Corpus(tmp_path / "c").stats("en")["documents"] == 1
    with (
        pytest.raises(XelmError, match="duplicate document id 'a'"),
        CorpusWriter(tmp_path / "d") as w,
    ):
        w.write(Document("a", "en", "one"))
        w.write(Document("a", "en", "two"))
    assert not (tmp_path / "d").exists()  # nothing half-written
    assert not list(tmp_path.glob(".d.tmp-*"))


def _records():
    return [
        {"id": f"d{i}", "lang": lang, "text": f"text {i} in {lang}"}
        for i in range(5)
        for lang in ("en", "de")
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_reads_jsonl_plain_gz_zst(tmp_path, suffix):
    data = "".join(json.dumps(r) + "\n" for r in _records()).encode()
    path = tmp_path / f"docs{suffix}"
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
    elif suffix.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    docs = list(read_source(path))
    assert [(d.id, d.lang, d.text) for d in docs] == [
        (r["id"], r["lang"], r["text"]) for r in _records()
    ]


def test_reads_parquet_text_dirs_and_hf_datasets(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(_records()), tmp_path / "docs.parquet")
    assert len(list(read_source(tmp_path / "docs.parquet"))) == 10

    for lang in ("en_US", "fr"):  # folder names are normalised: en_US -> en-US
        (tmp_path / "txt" / lang / "sub").mkdir(parents=True)
        (tmp_path / "txt" / lang / "sub" / "page1.txt").write_text(f"hello from {lang}")
    docs = list(read_source(tmp_path / "txt"))
    assert {(d.id, d.lang) for d in docs} == {("sub/page1", "en-US"), ("sub/page1", "fr")}

    # a saved HF dataset whose records carry no language field: the language is given
    ds = datasets.Dataset.from_dict({"content": ["un texte", "deux textes"]})
    ds.save_to_disk(tmp_path / "hf")
    docs = list(read_source(tmp_path / "hf", SourceOptions(lang="fr", text_field="content")))
    assert [d.lang for d in docs] == ["fr", "fr"] and docs[0].text == "un texte"

    # `hf:PATH` goes through datasets.load_dataset (streaming), as a hub name would
    (tmp_path / "hub").mkdir()
    pq.write_table(pa.Table.from_pylist(_records()), tmp_path / "hub" / "train.parquet")
    docs = list(read_source(f"hf:{tmp_path / 'hub'}", SourceOptions(max_docs_per_lang=3)))
    assert len(docs) == 3 and docs[0].lang == "en"


def test_import_corpus_normalises_and_caps(tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    n = import_corpus([str(src)], tmp_path / "c", SourceOptions(max_docs_per_lang=3), license="CC0")
    corpus = Corpus(tmp_path / "c")
    assert n == 6 and corpus.langs == ["de", "en"]
    assert corpus.manifest["sources"] == [{"name": str(src), "license": "CC0"}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b'{"lang": "en", "text": "ok"}\n\xff\xfe broken\n', r"docs.jsonl:2: invalid UTF-8"),
        (b'{"lang": "en"}\n', r"docs.jsonl:1: record has no string field 'text'"),
        (b'{"text": "no language"}\n', r"docs.jsonl:1: record has no field 'lang'"),
        (
            b'{"lang": "xx", "text": "t"}\n',
            r"docs.jsonl:1: field 'lang': unknown language code 'xx'",
        ),
        (b'{"lang": "en", "text": "t"\n', r"docs.jsonl:1: invalid JSON"),
    ],
)
def test_bad_jsonl_gives_a_clear_error_and_no_output(tmp_path, content, message):
    src = tmp_path / "docs.jsonl"
    src.write_bytes(content)
    with pytest.raises(XelmError, match=message):
        import_corpus([str(src)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_path_and_not_a_corpus(tmp_path):
    with pytest.raises(XelmError, match="no such file"):
        list(read_source(tmp_path / "nope.jsonl"))
    with pytest.raises(XelmError, match="not an xelm corpus"):
        Corpus(tmp_path)


def test_text_is_normalised_to_nfc(tmp_path):
    decomposed = "Vie\u0302\u0323t"  # "Việt" as base letters + combining marks (NFD)
    with CorpusWriter(tmp_path / "c") as w:
        w.write(Document("a", "vi", decomposed))
    (doc,) = Corpus(tmp_path / "c").documents()
    assert doc.text == "Vi\u1ec7t" and len(doc.text) == 4
