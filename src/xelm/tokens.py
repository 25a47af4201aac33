"""The training data path: tokenise once into a cached memmap, then draw packed blocks.

Each (corpus, tokenizer, language, split) becomes one flat token file `EOS d1 EOS d2 ...` (every
document preceded by the separator, as evaluation sees it), uint16 when the vocabulary fits,
cached under a key of the tokenizer and the corpus manifest so every run reuses it. Training
draws fixed-length blocks from those streams: no padding, documents packed back to back.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xelm.corpus import Corpus
from xelm.errors import XelmError
from xelm.paths import cache_dir

_BATCH_DOCS = 256
FORMAT = 2  # 2: document offsets in `<lang>.<split>.idx`


def tokenizer_hash(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab())
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def corpus_hash(corpus: Corpus) -> str:
    return hashlib.sha256((corpus.path / "manifest.json").read_bytes()).hexdigest()[:16]


@dataclass
class TokenStream:
    """One language's split as a flat memmap of token ids."""

    lang: str
    path: Path
    tokens: int
    documents: int
    bytes: int  # UTF-8 bytes of the documents' text
    dtype: str

    @classmethod
    def read(cls, lang: str, path: Path) -> TokenStream:
        meta = json.loads(path.with_suffix(".json").read_text())
        return cls(lang, path, meta["tokens"], meta["documents"], meta["bytes"], meta["dtype"])

    def array(self) -> np.ndarray:
        return np.memmap(self.path, dtype=self.dtype, mode="r")

    def offsets(self) -> np.ndarray:
        """Where each document starts (at its separator) in `array()`, then the end: (docs + 1,)."""
        return np.fromfile(self.path.with_suffix(".idx"), dtype=np.int64)

    def document_bytes(self) -> np.ndarray:
        """UTF-8 bytes of each document's text: (docs,)."""
        return np.fromfile(self.path.with_suffix(".nbytes"), dtype=np.int64)


def token_streams(
    corpus: Corpus, tokenizer, split: str, langs: list[str], cache: Path | None = None
) -> dict[str, TokenStream]:
    """{lang: TokenStream}, tokenising (once, then cached) what is missing."""
    key = f"{corpus_hash(corpus)}-{tokenizer_hash(tokenizer)}"
    root = (cache or cache_dir("tokens")) / key
    root.mkdir(parents=True, exist_ok=True)
    sep = tokenizer.eos_token_id
    if sep is None:
        raise XelmError("the tokenizer has no eos token to separate documents; set one")
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32
    streams = {}
    for lang in langs:
        if lang not in corpus.langs:
            raise XelmError(f"{corpus.path}: no language {lang!r} (has {', '.join(corpus.langs)})")
        path = root / f"{lang}.{split}.bin"
        meta_path = path.with_suffix(".json")
        if not meta_path.exists() or json.loads(meta_path.read_text()).get("format") != FORMAT:
            _tokenize(corpus, tokenizer, split, lang, path, dtype, sep)
        streams[lang] = TokenStream.read(lang, path)
    return streams


def _tokenize(corpus, tokenizer, split, lang, path: Path, dtype, sep: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    offsets, doc_bytes = [0], []  # offsets[-1] is the running token count
    with tmp.open("wb") as f:
        batch: list[str] = []

        def flush() -> None:
            if not batch:
                return
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                arr = np.asarray([sep, *ids], dtype=dtype)
                f.write(arr.tobytes())
                offsets.append(offsets[-1] + len(arr))
            batch.clear()

        for doc in corpus.documents(split, [lang]):
            batch.append(doc.text)
            doc_bytes.append(len(doc.text.encode("utf-8")))
            if len(batch) >= _BATCH_DOCS:
                flush()
        flush()
    if not doc_bytes:
        tmp.unlink()
        raise XelmError(
            f"{corpus.path}: language {lang!r} has no documents in the {split!r} split; "
            "drop it from the languages or rebuild the corpus with a larger split"
        )
    _finish(tmp, path, np.asarray(offsets), np.asarray(doc_bytes), np.dtype(dtype).name)


def _finish(tmp: Path, path: Path, offsets: np.ndarray, doc_bytes: np.ndarray, dtype: str) -> None:
    """Move a written token file into place with its document index; the meta file last, as
    the marker that the stream is complete."""
    offsets.astype(np.int64).tofile(path.with_suffix(".idx"))
    doc_bytes.astype(np.int64).tofile(path.with_suffix(".nbytes"))
    os.replace(tmp, path)
    meta = {
        "tokens": int(offsets[-1]),
        "documents": len(doc_bytes),
        "bytes": int(doc_bytes.sum()),
        "dtype": dtype,
        "format": FORMAT,
    }
    path.with_suffix(".json").write_text(json.dumps(meta) + "\n")


def subset_streams(
    streams: dict[str, TokenStream], keep: dict[str, np.ndarray], out: Path
) -> dict[str, TokenStream]:
    """The same streams restricted to some documents: `keep[lang]` is a boolean mask over that
    stream's documents, in corpus order (how an expert sees only its cluster of an allocation).

    Written once under `out` (the caller keys it by allocation and cluster); languages with no
    kept document are left out.
    """
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for lang, stream in streams.items():
        mask = np.asarray(keep.get(lang, np.zeros(stream.documents, bool)), dtype=bool)
        if len(mask) != stream.documents:
            raise XelmError(
                f"allocation does not match the corpus: {lang} has {stream.documents} documents "
                f"in this split, the allocation {len(mask)}; re-run `xelm allocate`"
            )
        if not mask.any():
            continue
        path = out / stream.path.name
        if not path.with_suffix(".json").exists():
            offsets, data = stream.offsets(), stream.array()
            starts, ends = offsets[:-1][mask], offsets[1:][mask]
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            with tmp.open("wb") as f:
                for a, b in zip(starts, ends, strict=True):
                    f.write(np.asarray(data[a:b]).tobytes())
            new_offsets = np.concatenate([[0], np.cumsum(ends - starts)])
            _finish(tmp, path, new_offsets, stream.document_bytes()[mask], stream.dtype)
        result[lang] = TokenStream.read(lang, path)
    return result


def cluster_streams(
    corpus: Corpus,
    tokenizer,
    split: str,
    langs: list[str],
    allocation,
    cluster: int,
    cache: Path | None = None,
) -> dict[str, TokenStream]:
    """The split's streams restricted to one cluster of an `Allocation` (languages it holds)."""
    streams = token_streams(corpus, tokenizer, split, langs, cache)
    table = allocation.assignments(split)
    langs_col = np.asarray(table["lang"].to_pylist(), dtype=object)
    in_cluster = np.asarray(table["cluster"].to_numpy()) == cluster
    keep = {lang: in_cluster[langs_col == lang] for lang in streams}
    digest = hashlib.sha256((allocation.path / "assignments.parquet").read_bytes()).hexdigest()
    root = next(iter(streams.values())).path.parent
    return subset_streams(streams, keep, root / f"alloc-{digest[:16]}" / f"c{cluster}")


class BlockSampler:
    """Draws blocks of `seq_len + 1` tokens: a language by weight, then that language's next
    block in a per-epoch random order (without replacement within an epoch).

    Its whole position is `state_dict()` (JSON-serialisable), so a resumed run draws exactly the
    blocks an uninterrupted run would have drawn.
    """

    def __init__(
        self,
        streams: dict[str, np.ndarray],
        seq_len: int,
        weights: dict[str, float],
        seed: int = 0,
    ):
        self.langs = sorted(streams)
        self.streams = streams
        self.seq_len = seq_len
        self.seed = seed
        self.p = np.array([weights[lang] for lang in self.langs], dtype=np.float64)
        self.p /= self.p.sum()
        self.n_blocks = {}
        for lang in self.langs:
            n = (len(streams[lang]) - 1) // seq_len
            if n < 1:
                raise XelmError(
                    f"language {lang!r} has only {len(streams[lang])} tokens, fewer than one "
                    f"block of {seq_len + 1}; lower seq_len or drop the language"
                )
            self.n_blocks[lang] = n
        self.rng = np.random.default_rng(seed)
        self.epoch = dict.fromkeys(self.langs, 0)
        self.index = dict.fromkeys(self.langs, 0)
        self._orders: dict[tuple[str, int], np.ndarray] = {}

    def _order(self, lang: str, epoch: int) -> np.ndarray:
        key = (lang, epoch)
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != lang}
            rng = np.random.default_rng([self.seed, self.langs.index(lang), epoch])
            self._orders[key] = rng.permutation(self.n_blocks[lang])
        return self._orders[key]

    def _next_block(self, lang: str) -> np.ndarray:
        if self.index[lang] >= self.n_blocks[lang]:
            self.epoch[lang] += 1
            self.index[lang] = 0
        start = int(self._order(lang, self.epoch[lang])[self.index[lang]]) * self.seq_len
        self.index[lang] += 1
        return self.streams[lang][start : start + self.seq_len + 1]

    def next_batch(self, batch_size: int) -> torch.Tensor:
        choices = self.rng.choice(len(self.langs), size=batch_size, p=self.p)
        blocks = [self._next_block(self.langs[c]) for c in choices]
        return torch.from_numpy(np.stack(blocks).astype(np.int64))

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "epoch": dict(self.epoch),
            "index": dict(self.index),
            "langs": self.langs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["langs"] != self.langs:
            raise XelmError(
                f"checkpoint was trained on languages {state['langs']}, not {self.langs}"
            )
        self.rng.bit_generator.state = state["rng"]
        self.epoch = dict(state["epoch"])
        self.index = dict(state["index"])
