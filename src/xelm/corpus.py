"""The corpus layer: documents `{"id", "lang", "text"}`, read from anywhere, written one way.

On disk a corpus is a folder of per-language JSONL.zst shards plus a `manifest.json` with
per-language (and per-split) counts, its sources and their licences. Splits are not stored: a
document's split is a hash of its id, so the same page of a parallel corpus lands in the same split
in every language, and re-building the corpus never moves a document between splits.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard
from pydantic import Field, model_validator

from xelm.errors import XelmError
from xelm.langs import normalize_lang
from xelm.paths import atomic_dir, file_sha256
from xelm.spec import Spec

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
FORMAT = "xelm-corpus/1"


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    lang: str
    text: str


def unit_hash(key: str) -> float:
    """A uniform number in [0, 1) fixed by `key`: reproducible splits and samples in one pass."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class SplitFractions(Spec):
    """Shares of each language's documents held out for validation and test."""

    validation_fraction: float = Field(0.05, ge=0, le=1)
    """share of each language's documents in the validation split (by a hash of the id)"""
    test_fraction: float = Field(0.05, ge=0, le=1)
    """share of each language's documents in the test split"""

    @model_validator(mode="after")
    def _some_training_left(self) -> SplitFractions:
        if self.validation_fraction + self.test_fraction > 1:
            raise ValueError("validation_fraction + test_fraction must be at most 1")
        return self

    def of(self, doc_id: str) -> str:
        """The split of a document: a pure function of its id (language-independent)."""
        u = unit_hash(doc_id)
        if u < self.test_fraction:
            return "test"
        return "validation" if u < self.test_fraction + self.validation_fraction else "train"


def sampling_shares(sizes: dict[str, int | float], alpha: float) -> dict[str, float]:
    """Temperature-sampled language shares p_l ∝ n_l^α (α=1: proportional, α=0: uniform; an
    empty language gets none), for the tokenizer's sample and the training mix alike."""
    weights = {lang: float(n) ** alpha if n > 0 else 0.0 for lang, n in sizes.items()}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class SourceOptions(Spec):
    """How to read records that don't use xelm's field names."""

    lang: str | None = None
    """language of records that have none (sources without a language field)"""
    text_field: str = "text"
    """the records' text field"""
    lang_field: str = "lang"
    """the records' language field"""
    id_field: str = "id"
    """the records' id field (records without one get a hash of their text)"""
    hf_configs: list[str] = []
    """hub datasets: configs to read, e.g. mC4 language codes (the config names the language)"""
    hf_split: str = "train"
    """hub datasets: the split to read"""
    max_docs_per_lang: int | None = Field(None, ge=1)
    """keep at most this many documents per language (and stop streaming each hub config there)"""


def _text_id(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def _record_to_doc(rec: Any, opts: SourceOptions, where: str, default_lang: str | None) -> Document:
    if not isinstance(rec, dict):
        raise XelmError(f"{where}: expected a JSON object with 'lang' and 'text', got {rec!r:.60}")
    text = rec.get(opts.text_field)
    if not isinstance(text, str):
        raise XelmError(f"{where}: record has no string field {opts.text_field!r}")
    lang = rec.get(opts.lang_field, default_lang) or default_lang
    if not isinstance(lang, str):
        raise XelmError(f"{where}: record has no field {opts.lang_field!r}; add it or pass --lang")
    doc_id = rec.get(opts.id_field)
    doc_id = _text_id(text) if doc_id is None else str(doc_id)
    return Document(doc_id, normalize_lang(lang, where=f"{where}: field {opts.lang_field!r}"), text)


def _zstd_chunks(raw, path: Path) -> Iterator[bytes]:
    """Decompressed bytes of a .zst file, frame after frame; a truncated last frame is an
    error (zstandard's stream reader would end it silently)."""
    d = zstandard.ZstdDecompressor().decompressobj()
    while chunk := raw.read(1 << 20):
        out = d.decompress(chunk)
        while d.eof and d.unused_data:  # several frames back to back
            rest = d.unused_data
            d = zstandard.ZstdDecompressor().decompressobj()
            out += d.decompress(rest)
        yield out
    if not d.eof:
        raise EOFError("the last zstd frame ends early")


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as raw:
        if path.suffix == ".zst":
            yield from _zstd_chunks(raw, path)
            return
        f = raw
        if path.suffix == ".gz":
            import gzip

            f = gzip.GzipFile(fileobj=raw, mode="rb")
        while chunk := f.read(1 << 20):
            yield chunk


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines of a plain, .gz or .zst file; a corrupt or truncated one is an error naming it."""
    import gzip

    buffer = b""
    try:
        for chunk in _chunks(path):
            *lines, buffer = (buffer + chunk).split(b"\n")
            yield from lines
    except (zstandard.ZstdError, gzip.BadGzipFile, EOFError, OSError) as e:
        raise XelmError(
            f"{path}: corrupt or truncated {path.suffix.lstrip('.') or 'text'} file "
            f"({e}); download or compress it again"
        ) from None
    if buffer:
        yield buffer


def read_jsonl(path: Path, opts: SourceOptions) -> Iterator[Document]:
    """JSONL (plain, .gz or .zst), one document per line; errors name file and line."""
    n = 0
    for lineno, raw in enumerate(read_lines(path), 1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise XelmError(f"{where}: invalid UTF-8 ({e.reason}); re-encode the file") from None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise XelmError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        n += 1
        yield _record_to_doc(rec, opts, where, opts.lang)
    if n == 0:
        raise XelmError(f"{path}: empty file (no JSON records)")


def read_parquet(path: Path, opts: SourceOptions) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a non-parquet file
        raise XelmError(f"{path}: not a readable Parquet file ({e})") from None
    names = set(pf.schema_arrow.names)
    if opts.text_field not in names:
        raise XelmError(f"{path}: no column {opts.text_field!r} (columns: {sorted(names)})")
    if opts.lang_field not in names and opts.lang is None:
        raise XelmError(f"{path}: no column {opts.lang_field!r}; add it or pass --lang")
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            row += 1
            yield _record_to_doc(rec, opts, f"{path}: row {row}", opts.lang)
    if row == 0:
        raise XelmError(f"{path}: empty file (no rows)")


def read_text_dir(path: Path, opts: SourceOptions) -> Iterator[Document]:
    """`<lang>/*.txt` (any depth below the language folder): one document per file.

    The id is the path below the language folder, so `en/a.txt` and `fr/a.txt` are one parallel
    page and land in the same split.
    """
    lang_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    n = 0
    for lang_dir in lang_dirs:
        lang = normalize_lang(lang_dir.name, where=f"{lang_dir}: folder name")
        for f in sorted(lang_dir.rglob("*.txt")):
            try:
                text = f.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                raise XelmError(
                    f"{f}: invalid UTF-8 at byte {e.start}; re-encode the file"
                ) from None
            n += 1
            yield Document(f.relative_to(lang_dir).with_suffix("").as_posix(), lang, text)
    if n == 0:
        raise XelmError(f"{path}: no <lang>/*.txt files found")


def read_hf(name: str, opts: SourceOptions) -> Iterator[Document]:
    """A Hugging Face `datasets` dataset: a hub name (streamed) or a local folder.

    With `hf_configs` (e.g. mC4's per-language configs `en`, `fr`, ...) each config is read in
    turn and, when records carry no language field, the config name is the language.
    """
    import datasets

    local = Path(name)
    if (local / "dataset_info.json").exists() or (local / "state.json").exists():
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if opts.hf_split not in loaded:
                raise XelmError(f"{name}: no split {opts.hf_split!r} (has {list(loaded)})")
            loaded = loaded[opts.hf_split]
        parts: Iterable[tuple[str | None, Iterable[dict]]] = [(opts.lang, loaded)]
    else:
        configs = opts.hf_configs or [None]

        def stream(cfg: str | None) -> Iterable[dict]:
            try:
                return datasets.load_dataset(name, cfg, split=opts.hf_split, streaming=True)
            except Exception as e:  # hub/network/config errors come in many types
                raise XelmError(f"dataset {name!r} (config {cfg!r}): cannot load ({e})") from None

        parts = ((cfg or opts.lang, stream(cfg)) for cfg in configs)
    for default_lang, rows in parts:
        for i, rec in enumerate(itertools.islice(rows, opts.max_docs_per_lang)):
            yield _record_to_doc(rec, opts, f"{name}: row {i}", default_lang)


def read_corpus_dir(path: Path) -> Iterator[Document]:
    yield from Corpus(path).documents()


def read_source(source: str | Path, opts: SourceOptions | None = None) -> Iterator[Document]:
    """Read documents from any supported source, chosen by its form:

    `*.jsonl[.gz|.zst]` / `*.json`, `*.parquet`, an xelm corpus folder (has `manifest.json`),
    a saved HF dataset folder, a folder of `<lang>/*.txt`, or `hf:NAME` for a hub dataset.
    """
    opts = opts or SourceOptions()
    s = str(source)
    if s.startswith("hf:"):
        return read_hf(s[3:], opts)
    path = Path(s)
    if not path.exists():
        raise XelmError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / MANIFEST).exists():
            return read_corpus_dir(path)
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return read_hf(s, opts)
        return read_text_dir(path, opts)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst")):
        return read_jsonl(path, opts)
    if name.endswith(".parquet"):
        return read_parquet(path, opts)
    raise XelmError(f"{path}: unknown corpus format; use .jsonl[.gz|.zst], .parquet or a folder")


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _zero_counts() -> dict[str, int]:
    return {"documents": 0, "characters": 0, "bytes": 0}


class CorpusWriter:
    """Writes documents as per-language JSONL.zst shards and a manifest, atomically.

    Use as a context manager; the folder appears only when the block finishes without error.
    Exact duplicate texts within a language are dropped; two different texts with the same id in
    one language are an error (ids must be unique per language).
    """

    def __init__(
        self,
        out: str | Path,
        *,
        splits: SplitFractions | None = None,
        shard_bytes: int = 64 << 20,
        sources: list[dict[str, Any]] | None = None,
    ):
        self.out = Path(out)
        self.splits = splits or SplitFractions()
        self.shard_bytes = shard_bytes
        self.sources = list(sources or [])
        self.extra: dict[str, Any] = {}
        self._ctx = None
        self._tmp: Path | None = None
        self._files: dict[str, tuple[Any, Any]] = {}
        self._shard_index: dict[str, int] = defaultdict(int)
        self._shard_size: dict[str, int] = defaultdict(int)
        self._ids: dict[str, dict[str, bytes]] = defaultdict(dict)
        self._hashes: dict[str, set[bytes]] = defaultdict(set)
        self.counts: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self._shards: dict[str, dict[str, Any]] = {}  # what each shard is: checked on reading

    def __enter__(self) -> CorpusWriter:
        self._ctx = atomic_dir(self.out)
        self._tmp = self._ctx.__enter__()
        return self

    def _stream(self, lang: str):
        if lang not in self._files or self._shard_size[lang] >= self.shard_bytes:
            if lang in self._files:
                self._close_lang(lang)
                self._shard_index[lang] += 1
            assert self._tmp is not None
            path = self._tmp / lang / f"{self._shard_index[lang]:05d}.jsonl.zst"
            path.parent.mkdir(parents=True, exist_ok=True)
            raw = path.open("wb")
            self._files[lang] = (raw, zstandard.ZstdCompressor(level=6).stream_writer(raw))
            self._shard_size[lang] = 0
        return self._files[lang][1]

    def _close_lang(self, lang: str) -> None:
        raw, zw = self._files.pop(lang)
        zw.close()
        raw.close()
        path = Path(raw.name)
        name = f"{lang}/{path.name}"
        self._shards[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}

    def write(self, doc: Document) -> bool:
        """Write one document (text in Unicode NFC); returns False for an exact duplicate.

        NFC because sources differ: the UDHR's Vietnamese is decomposed (NFD), the LibreOffice
        help's is composed, and the same text must give the same tokens whatever its source.
        """
        doc = Document(doc.id, doc.lang, unicodedata.normalize("NFC", doc.text))
        text_hash = hashlib.blake2b(doc.text.encode("utf-8"), digest_size=12).digest()
        ids, hashes = self._ids[doc.lang], self._hashes[doc.lang]
        if doc.id in ids and ids[doc.id] != text_hash:
            raise XelmError(f"duplicate document id {doc.id!r} in language {doc.lang!r}")
        if text_hash in hashes:
            self.duplicates += 1
            return False
        ids[doc.id] = text_hash
        hashes.add(text_hash)
        line = json.dumps({"id": doc.id, "lang": doc.lang, "text": doc.text}, ensure_ascii=False)
        data = (line + "\n").encode("utf-8")
        self._stream(doc.lang).write(data)
        self._shard_size[doc.lang] += len(data)
        c = self.counts.setdefault(
            doc.lang, {**_zero_counts(), "splits": {s: _zero_counts() for s in SPLITS}}
        )
        n_bytes = len(doc.text.encode("utf-8"))
        for bucket in (c, c["splits"][self.splits.of(doc.id)]):
            bucket["documents"] += 1
            bucket["characters"] += len(doc.text)
            bucket["bytes"] += n_bytes
        return True

    def write_all(self, docs: Iterable[Document]) -> int:
        return sum(self.write(d) for d in docs)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._ctx is not None and self._tmp is not None
        try:
            for lang in list(self._files):
                self._close_lang(lang)
            if exc_type is None:
                if not self.counts:
                    raise XelmError(f"{self.out}: no documents to write (the input is empty)")
                text = json.dumps(self._manifest(), indent=2, ensure_ascii=False) + "\n"
                (self._tmp / MANIFEST).write_text(text, encoding="utf-8")
        except BaseException as e:  # e.g. the disk filled up while closing a shard
            self._ctx.__exit__(type(e), e, e.__traceback__)  # discards the temporary folder
            raise
        self._ctx.__exit__(exc_type, exc, tb)

    def _manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "split_fractions": {
                "validation": self.splits.validation_fraction,
                "test": self.splits.test_fraction,
            },
            "unicode_normalization": "NFC",
            "languages": dict(sorted(self.counts.items())),
            "duplicates_dropped": self.duplicates,
            "shards": dict(sorted(self._shards.items())),
            "sources": self.sources,
            **self.extra,
        }


# ---------------------------------------------------------------------------------------------
# A corpus on disk
# ---------------------------------------------------------------------------------------------


class Corpus:
    """A corpus folder written by `CorpusWriter`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.exists():
            raise XelmError(
                f"{self.path}: not an xelm corpus (no {MANIFEST}); build one with `xelm data ...`"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise XelmError(f"{manifest}: invalid JSON ({e.msg}, line {e.lineno})") from None
        self._check_shards()
        fr = self.manifest.get("split_fractions", {})
        self.splits = SplitFractions(
            validation_fraction=fr.get("validation", 0.05), test_fraction=fr.get("test", 0.05)
        )

    def _check_shards(self) -> None:
        """Each language folder and shard is there, whole: its size as written (a cheap check
        at every open; the token cache is keyed on the manifest, which holds each shard's hash)."""
        shards = self.manifest.get("shards", {})
        for lang in self.manifest.get("languages", {}) if shards else []:
            if not (self.path / lang).is_dir():
                raise XelmError(f"{self.path / lang}: language folder missing; rebuild the corpus")
        for name, meta in shards.items():
            path = self.path / name
            size = path.stat().st_size if path.exists() else None
            if size != meta["bytes"]:
                found = "it is missing" if size is None else f"it has {size:,} bytes"
                raise XelmError(
                    f"{path}: corpus shard changed since it was written ("
                    f"{meta['bytes']:,} bytes then, {found} now); rebuild the corpus"
                )

    @property
    def langs(self) -> list[str]:
        return list(self.manifest["languages"])

    @property
    def train_langs(self) -> list[str]:
        """Languages to train on (all but the held-out ones, unless the manifest says)."""
        return [lang for lang in self.manifest.get("train_langs", self.langs) if lang in self.langs]

    @property
    def heldout_langs(self) -> list[str]:
        """Languages kept out of training, for new-language experiments."""
        return [lang for lang in self.manifest.get("heldout_langs", []) if lang in self.langs]

    def stats(self, lang: str, split: str | None = None) -> dict[str, int]:
        c = self.manifest["languages"][lang]
        return c["splits"][split] if split else c

    def documents(
        self, split: str | None = None, langs: Iterable[str] | None = None
    ) -> Iterator[Document]:
        """Documents of the given split (None: all), language by language, in file order."""
        if split is not None and split not in SPLITS:
            raise XelmError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        wanted = self.langs if langs is None else list(langs)
        for lang in wanted:
            if lang not in self.manifest["languages"]:
                raise XelmError(f"{self.path}: no language {lang!r} (has {', '.join(self.langs)})")
            for shard in sorted((self.path / lang).glob("*.jsonl.zst")):
                for doc in read_jsonl(shard, SourceOptions()):
                    if split is None or self.splits.of(doc.id) == split:
                        yield doc
