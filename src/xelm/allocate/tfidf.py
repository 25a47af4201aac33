"""TF-IDF document embeddings for clustering and routing: char n-grams → TruncatedSVD → L2 norm.

Character n-grams (scikit-learn's `char_wb` analyzer) work for every script, including those
written without spaces (zh, ja, km), and need no tokenizer, so an allocation does not depend on
the LM's vocabulary. The fitted state (vocabulary, idf, SVD components) is saved as JSON +
safetensors and rebuilt into an identical vectorizer, so the router embeds a prefix at inference
exactly as the allocator embedded documents.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from xelm.allocate.allocation import ROUTER_DIR, Assignments, sample_fraction_hash, write_allocation
from xelm.allocate.balanced import BalancedKMeans, balance_prices, squared_distances
from xelm.allocate.plots import plot_cluster_sizes
from xelm.allocate.specs import TfidfAllocationSpec, TfidfSpec
from xelm.corpus import Corpus
from xelm.errors import XelmError
from xelm.paths import atomic_dir, die_with_parent, relative_to

STATE_JSON = "tfidf.json"
STATE_TENSORS = "tfidf.safetensors"


class TfidfEmbedder:
    """Fitted TF-IDF + SVD state; `embed(texts)` → unit vectors of `spec.svd_dims` floats."""

    def __init__(self, spec: TfidfSpec, vocabulary: list[str], idf: np.ndarray, components):
        self.spec = spec
        self.vocabulary = vocabulary
        # C order: safetensors.numpy writes a Fortran-ordered array's buffer as if it were C
        # order (silently transposed data; seen with 0.8.0), and TruncatedSVD returns F order
        self.idf = np.ascontiguousarray(idf, dtype=np.float32)
        self.components = np.ascontiguousarray(components, dtype=np.float32)  # (dims, features)
        self.vectorizer = _vectorizer(spec, vocabulary)
        self.vectorizer.idf_ = self.idf

    @property
    def dims(self) -> int:
        return self.components.shape[0]

    @classmethod
    def fit(cls, texts: list[str], spec: TfidfSpec | None = None, seed: int = 0) -> TfidfEmbedder:
        spec = spec or TfidfSpec()
        texts = [t[: spec.max_chars] for t in texts]
        min_df = spec.min_df if len(texts) >= 10 * spec.min_df else 1
        vec = _vectorizer(spec, None, max_features=spec.max_features, min_df=min_df)
        x = vec.fit_transform(texts)
        # components fitted on few documents describe those documents, not the languages, and
        # new text projects onto noise: keep at least 20 fitted documents per dimension
        dims = min(spec.svd_dims, x.shape[1] - 1, max(2, len(texts) // 20))
        if dims < 1:
            raise XelmError("too few documents or distinct characters to fit TF-IDF features")
        svd = TruncatedSVD(dims, algorithm="randomized", random_state=seed).fit(x)
        vocab = vec.get_feature_names_out().tolist()
        return cls(spec, vocab, vec.idf_, svd.components_)

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        x = self.vectorizer.transform([t[: self.spec.max_chars] for t in texts])
        return normalize(np.asarray(x @ self.components.T, dtype=np.float32))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        meta = {"spec": self.spec.to_dict(), "vocabulary": self.vocabulary}
        (folder / STATE_JSON).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        save_file({"idf": self.idf, "components": self.components}, str(folder / STATE_TENSORS))

    @classmethod
    def load(cls, folder: str | Path) -> TfidfEmbedder:
        folder = Path(folder)
        try:
            meta = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
            tensors = load_file(str(folder / STATE_TENSORS))
            spec = TfidfSpec.model_validate(meta["spec"])
            emb = cls(spec, meta["vocabulary"], tensors["idf"], tensors["components"])
        except FileNotFoundError as e:
            missing = Path(e.filename).name
            raise XelmError(f"{folder}: TF-IDF router state missing ({missing})") from None
        except (ValueError, KeyError, TypeError, OSError, SafetensorError, ValidationError) as e:
            raise XelmError(
                f"{folder}: corrupted TF-IDF router state ({type(e).__name__}: {e}); "
                "re-run `xelm allocate tfidf`"
            ) from None
        v, f = len(emb.vocabulary), emb.components.shape[1]
        if emb.idf.shape != (v,) or f != v:
            raise XelmError(
                f"{folder}: corrupted TF-IDF router state (vocabulary {v}, idf {emb.idf.shape}, "
                f"components {emb.components.shape}); re-run `xelm allocate tfidf`"
            )
        return emb


def _vectorizer(spec: TfidfSpec, vocabulary: list[str] | None, **kw) -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(spec.ngram_min, spec.ngram_max),
        lowercase=spec.lowercase,
        sublinear_tf=True,
        dtype=np.float32,
        vocabulary=vocabulary,
        **kw,
    )


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# Allocation: embed the corpus in a streaming pass, balanced k-means, write the allocation
# ---------------------------------------------------------------------------------------------


def allocate_tfidf(
    corpus_dir: str | Path,
    out: str | Path,
    spec: TfidfAllocationSpec | None = None,
    progress: bool = True,
) -> dict:
    """Cluster the training languages' documents into k balanced TF-IDF clusters.

    1. vocabulary, idf and SVD are fitted on a hash-chosen sample of training documents;
    2. every document of the training languages (all splits) is embedded in one streaming pass,
       batches spread over worker processes, vectors written to a memmap on disk;
    3. balanced k-means fits centroids on a sample of the training embeddings, then prices are
       set on the whole training split so that it is balanced exactly; validation and test
       documents follow the same pointwise rule.
    Memory holds an (N, k) cost matrix and the per-document ids, never the texts.
    """
    spec = spec or TfidfAllocationSpec()
    corpus = Corpus(corpus_dir)
    langs = corpus.train_langs
    n_train = sum(corpus.stats(lang, "train")["documents"] for lang in langs)
    n_all = sum(corpus.stats(lang)["documents"] for lang in langs)
    if n_train == 0:
        raise XelmError(f"{corpus.path}: no training documents to cluster")
    if not 1 <= spec.k <= n_train:
        raise XelmError(f"--k {spec.k}: must be between 1 and the {n_train} training documents")
    share = spec.vocab_docs / n_train
    docs = corpus.documents("train", langs)
    sample = [d.text for d in docs if sample_fraction_hash(d.id, "vocab") < share]
    embedder = TfidfEmbedder.fit(sample, spec.features, spec.seed)
    del sample
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(dir=tmp) as scratch:
        emb = np.lib.format.open_memmap(
            Path(scratch) / "emb.npy", mode="w+", dtype=np.float32, shape=(n_all, embedder.dims)
        )
        router = tmp / ROUTER_DIR
        router.mkdir()
        embedder.save(router)  # the workers load it from here, once each
        a = _embed_corpus(corpus, langs, router, emb, spec, progress)
        km = _cluster(emb, a, spec)
        del emb
        TfidfClusters(embedder, km.centroids, km.prices).save(router)
        settings = {
            "corpus": relative_to(corpus.path, out),
            "languages": langs,
            "features": spec.features.to_dict(),
            "vocab_docs": spec.vocab_docs,
            "kmeans_docs": spec.kmeans_docs,
            "max_ratio": spec.max_ratio,
            "seed": spec.seed,
            "kmeans_iterations": km.iterations,
        }
        info = write_allocation(tmp, "tfidf", spec.k, a, settings, {})
        plot_cluster_sizes(info, tmp / "clusters.png")
    return info


def _cluster(emb: np.ndarray, a: Assignments, spec: TfidfAllocationSpec) -> BalancedKMeans:
    """Fit balanced k-means on a sample of the training embeddings, price the whole training
    split to balance, and label every document (`a.clusters`)."""
    splits = np.array(a.splits)
    train_rows = np.flatnonzero(splits == "train")
    rng = np.random.default_rng(spec.seed)
    fit_rows = np.sort(rng.permutation(train_rows)[: spec.kmeans_docs])
    km = BalancedKMeans(spec.k, max_ratio=spec.max_ratio, seed=spec.seed).fit(emb[fit_rows])
    cost = np.concatenate([squared_distances(emb[r], km.centroids) for r in _chunks(train_rows)])
    prices, train_labels = balance_prices(cost, spec.max_ratio, km.prices)
    km.prices = prices.astype(np.float32)
    a.clusters = np.empty(len(emb), dtype=np.int32)
    a.clusters[train_rows] = train_labels
    for rows in _chunks(np.flatnonzero(splits != "train")):
        a.clusters[rows] = km.assign(emb[rows])
    return km


def _embed_corpus(corpus, langs, state_dir, emb, spec, progress) -> Assignments:
    """Embed every document into `emb` (row order = corpus order); returns their ids and labels.

    Worker processes receive only the batch texts and the state folder's path: each loads the
    embedder once (pickling a 65k-entry vocabulary with every batch would cost more than the
    embedding).
    """
    a = Assignments()

    def texts():
        for d in corpus.documents(None, langs):
            a.add(d, corpus.splits.of(d.id))
            yield d.text

    workers = spec.workers or os.cpu_count() or 1
    jobs = Parallel(n_jobs=workers, return_as="generator", pre_dispatch="2*n_jobs")
    batches = batched(texts(), spec.batch_size)
    row = 0
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, transient=True, disable=not progress) as bar:
            task = bar.add_task("embedding documents", total=len(emb))
            for vectors in jobs(delayed(_embed_batch)(str(state_dir), b) for b in batches):
                emb[row : row + len(vectors)] = vectors
                row += len(vectors)
                bar.advance(task, len(vectors))
    finally:  # no idle workers left behind, whatever happened
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    if row != len(emb):
        raise XelmError(f"{corpus.path}: manifest counts {len(emb)} documents, found {row}")
    return a


@functools.lru_cache(maxsize=2)
def _cached_embedder(state_dir: str) -> TfidfEmbedder:
    die_with_parent()  # runs once in each worker process
    return TfidfEmbedder.load(state_dir)


def _embed_batch(state_dir: str, texts: list[str]) -> np.ndarray:
    return _cached_embedder(state_dir).embed(texts)


def _chunks(rows: np.ndarray, size: int = 50_000) -> list[np.ndarray]:
    return np.array_split(rows, max(1, -(-len(rows) // size)))


class TfidfClusters:
    """The TF-IDF router state: embedder + centroids (+ the balancing prices)."""

    def __init__(self, embedder: TfidfEmbedder, centroids: np.ndarray, prices: np.ndarray):
        self.embedder = embedder
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.prices = np.ascontiguousarray(prices, dtype=np.float32)

    @property
    def k(self) -> int:
        return len(self.centroids)

    def squared_distances(self, texts: list[str]) -> np.ndarray:
        """(len(texts), k) squared distances of each text's embedding to the centroids."""
        return squared_distances(self.embedder.embed(texts), self.centroids)

    def assign(self, texts: list[str]) -> np.ndarray:
        """Balanced cluster of each text (what the allocation would give a new document)."""
        return (self.squared_distances(texts) + self.prices[None, :]).argmin(1)

    def save(self, folder: Path) -> None:
        self.embedder.save(folder)
        tensors = {"centroids": self.centroids, "prices": self.prices}
        save_file(tensors, str(Path(folder) / CENTROIDS_TENSORS))

    @classmethod
    def load(cls, folder: str | Path) -> TfidfClusters:
        embedder = TfidfEmbedder.load(folder)
        path = Path(folder) / CENTROIDS_TENSORS
        try:
            t = load_file(str(path))
            out = cls(embedder, t["centroids"], t["prices"])
        except FileNotFoundError:
            raise XelmError(f"{folder}: TF-IDF router state missing ({path.name})") from None
        except (ValueError, KeyError, OSError, SafetensorError) as e:
            raise XelmError(
                f"{path}: corrupted router state ({e}); re-run `xelm allocate tfidf`"
            ) from None
        if out.centroids.ndim != 2 or out.centroids.shape[1] != embedder.dims:
            raise XelmError(
                f"{path}: centroids {out.centroids.shape} do not match {embedder.dims} SVD dims; "
                "re-run `xelm allocate tfidf`"
            )
        return out


CENTROIDS_TENSORS = "centroids.safetensors"
