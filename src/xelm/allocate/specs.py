"""The allocation methods' settings (kept apart from the methods, which need scikit-learn and
lang2vec, so that reading a config or the CLI's help does not load them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from xelm.spec import Spec, no_effect, tagged_union


class TfidfSpec(Spec):
    """How documents are featurised (what the router repeats at inference)."""

    ngram_min: int = Field(1, ge=1)
    """shortest character n-gram"""
    ngram_max: int = Field(2, ge=1)
    """longest character n-gram"""
    max_features: int = Field(65536, ge=1)
    """vocabulary size (the most frequent n-grams)"""
    min_df: int = Field(2, ge=1)
    """an n-gram must occur in at least this many documents"""
    svd_dims: int = Field(100, ge=1)
    """TruncatedSVD dimensions of the embedding"""
    max_chars: int = Field(2000, ge=1)
    """featurise each document's first N characters (bounded cost, like a prefix)"""
    lowercase: bool = True
    """lowercase before counting n-grams"""


class TfidfAllocationSpec(TfidfSpec):
    """Balanced k-means over TF-IDF embeddings of documents (c-BTM)."""

    method: Literal["tfidf"] = "tfidf"
    k: int = Field(4, ge=1)
    """number of clusters (experts)"""
    vocab_docs: int = Field(5_000, ge=1)
    """documents the vocabulary, idf and SVD are fitted on"""
    kmeans_docs: int = Field(20_000, ge=1)
    """embedded training documents the centroids are fitted on"""
    max_ratio: float = Field(1.05, ge=1)
    """largest/smallest cluster (documents) allowed on the training split"""
    seed: int = 0
    """seed of the SVD and of k-means"""
    batch_size: int = no_effect(1000, ge=1)
    """documents per embedding batch"""
    workers: int = no_effect(0, ge=0)
    """embedding processes (0: one per CPU core)"""

    @property
    def name(self) -> str:
        return f"{self.method}-k{self.k}"

    @property
    def features(self) -> TfidfSpec:
        return self.part(TfidfSpec)

    def allocate(self, corpus_dir: str | Path, out: str | Path, progress: bool = True) -> dict:
        from xelm.allocate.tfidf import allocate_tfidf

        return allocate_tfidf(corpus_dir, out, self, progress)


class TypologySpec(Spec):
    """Typological clusters of languages (X-ELM): rounds of greedy pairing by URIEL distance."""

    method: Literal["typology"] = "typology"
    k: int = Field(4, ge=1)
    """number of clusters (experts)"""
    features: str = "syntax_average"
    """lang2vec feature set, or several joined by '+' (the paper: syntax_average)"""
    minimal: bool = True
    """drop dimensions that are constant or missing across these languages (the paper's)"""
    min_features: int = Field(10, ge=1)
    """known URIEL dimensions a language needs"""
    uriel_codes: dict[str, str] = {}
    """URIEL (ISO 639-3) code of a language where the default does not suit, e.g. {ar: apc}"""
    norms: Literal["own", "shared"] = "own"
    """cosine norms over each language's own known dimensions (the paper's code) or over the
    dimensions the pair shares"""
    max_size_factor: float | None = Field(None, ge=1)
    """while merging, no cluster above F × (total bytes / k) (none: no cap)"""

    @property
    def name(self) -> str:
        return f"{self.method}-k{self.k}"

    def allocate(self, corpus_dir: str | Path, out: str | Path, progress: bool = True) -> dict:
        from xelm.allocate.typology import allocate_typology

        return allocate_typology(corpus_dir, out, self, progress)


# The methods by name: each spec writes its allocation with `spec.allocate(corpus, out)`. A new
# method adds its spec here.
METHODS: dict[str, type[TfidfAllocationSpec | TypologySpec]] = {
    "typology": TypologySpec,
    "tfidf": TfidfAllocationSpec,
}

# an allocation's settings in a run config: the `method` key says which spec applies
AllocationSpec = tagged_union(*METHODS.values())
