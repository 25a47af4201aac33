"""The allocation folder: one format for every clustering method.

allocation/
  clusters.json        method, k, settings, per-cluster languages/documents/bytes, quality,
                       and the method's extras (the typology tree, the language → cluster map)
  assignments.parquet  one row per document of the training languages: id, lang, split,
                       cluster, bytes (what expert training reads)
  router/              the state a router needs at inference (TF-IDF: vocabulary, idf, SVD
                       components, centroids; typology: the language → cluster map)
  clusters.png         cluster sizes by language (and dendrogram.png for typology)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import normalized_mutual_info_score

from xelm.corpus import Document, unit_hash
from xelm.errors import XelmError
from xelm.spec import Record

FORMAT = "xelm-allocation/1"
CLUSTERS_JSON = "clusters.json"
ASSIGNMENTS = "assignments.parquet"
ROUTER_DIR = "router"


def sample_fraction_hash(doc_id: str, salt: str = "sample") -> float:
    """A uniform number in [0, 1) fixed by the document id, independent of its split."""
    return unit_hash(f"{salt}:{doc_id}")


@dataclass
class Assignments:
    """Per-document columns, accumulated while streaming the corpus."""

    ids: list[str] = field(default_factory=list)
    langs: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    clusters: np.ndarray | None = None

    def add(self, doc: Document, split: str) -> None:
        self.ids.append(doc.id)
        self.langs.append(doc.lang)
        self.splits.append(split)
        self.nbytes.append(len(doc.text.encode("utf-8")))

    def table(self) -> pa.Table:
        assert self.clusters is not None and len(self.clusters) == len(self.ids)
        return pa.table(
            {
                "id": pa.array(self.ids, pa.string()),
                "lang": pa.array(self.langs, pa.string()).dictionary_encode(),
                "split": pa.array(self.splits, pa.string()).dictionary_encode(),
                "cluster": pa.array(np.asarray(self.clusters, dtype=np.int32)),
                "bytes": pa.array(np.asarray(self.nbytes, dtype=np.int64)),
            }
        )


def summarize(a: Assignments, k: int, split: str = "train") -> tuple[list[dict], dict]:
    """Per-cluster language counts and quality figures (balance, purity, NMI) on one split."""
    assert a.clusters is not None
    mask = np.array([s == split for s in a.splits])
    langs = np.array(a.langs, dtype=object)[mask]
    clusters = np.asarray(a.clusters)[mask]
    nbytes = np.asarray(a.nbytes, dtype=np.int64)[mask]
    table: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for lang, c, b in zip(langs, clusters, nbytes, strict=True):
        cell = table[int(c)][lang]
        cell[0] += 1
        cell[1] += int(b)
    out = []
    for c in range(k):
        cell = table.get(c, {})
        by_lang = {
            lang: {"documents": d, "bytes": b}
            for lang, (d, b) in sorted(cell.items(), key=lambda kv: -kv[1][0])
        }
        out.append(
            {
                "id": c,
                "languages": by_lang,
                "documents": sum(v["documents"] for v in by_lang.values()),
                "bytes": sum(v["bytes"] for v in by_lang.values()),
            }
        )
    docs = np.array([c["documents"] for c in out])
    byts = np.array([c["bytes"] for c in out])
    majority = sum(max((v["documents"] for v in c["languages"].values()), default=0) for c in out)
    quality = {
        "split": split,
        "documents": int(docs.sum()),
        "balance_documents": _ratio(docs),
        "balance_bytes": _ratio(byts),
        "purity": round(float(majority / max(1, docs.sum())), 4),
        "nmi": round(float(normalized_mutual_info_score(langs, clusters)), 4) if len(langs) else 0,
    }
    return out, quality


def _ratio(sizes: np.ndarray) -> float | None:
    """max/min cluster size; None when a cluster is empty (an unbounded imbalance)."""
    return None if sizes.min() == 0 else round(float(sizes.max() / sizes.min()), 4)


class LanguageCount(BaseModel):
    documents: int
    bytes: int


class Cluster(BaseModel):
    id: int
    languages: dict[str, LanguageCount]  # by documents, most first
    documents: int
    bytes: int


class Quality(BaseModel):
    split: str
    documents: int
    balance_documents: float | None  # largest/smallest cluster; None: a cluster is empty
    balance_bytes: float | None
    purity: float
    nmi: float  # normalised mutual information with the language labels


class AllocationSettings(BaseModel):
    """What the allocation was made from (and the method's own settings, kept as they are)."""

    model_config = ConfigDict(extra="allow")
    corpus: str
    languages: list[str]


class AllocationRecord(Record):
    """`clusters.json`: an allocation's clusters, quality and settings (every method)."""

    FILE = CLUSTERS_JSON
    format: Literal["xelm-allocation/1"]
    method: str
    k: int
    settings: AllocationSettings
    quality: Quality
    clusters: list[Cluster]
    language_to_cluster: dict[str, int] | None = None  # typology: each language's cluster
    tree: dict[str, Any] | None = None  # typology: the merge tree HMR follows

    def dumps(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True) + "\n"


def write_allocation(
    folder: Path, method: str, k: int, a: Assignments, settings: dict, extra: dict[str, Any]
) -> AllocationRecord:
    """Write clusters.json and assignments.parquet into `folder` (a temp dir being built)."""
    clusters, quality = summarize(a, k)
    pq.write_table(a.table(), folder / ASSIGNMENTS, compression="zstd")
    record = AllocationRecord(
        format=FORMAT,
        method=method,
        k=k,
        settings=settings,
        quality=quality,
        clusters=clusters,
        **extra,
    )
    record.write(folder)
    return record


class Allocation:
    """A finished allocation folder: its record and its per-document assignments."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / CLUSTERS_JSON).exists():
            raise XelmError(
                f"{self.path}: not an allocation (no {CLUSTERS_JSON}); "
                "build one with `xelm allocate tfidf|typology`"
            )
        self.record = AllocationRecord.read(self.path)

    @property
    def method(self) -> str:
        return self.record.method

    @property
    def k(self) -> int:
        return self.record.k

    @property
    def clusters(self) -> list[Cluster]:
        return self.record.clusters

    @property
    def corpus(self) -> Path:
        """The corpus it was made from (stored relative to this folder)."""
        from xelm.paths import resolve_from

        return resolve_from(self.record.settings.corpus, self.path)

    @property
    def languages(self) -> list[str]:
        return self.record.settings.languages

    @property
    def router_dir(self) -> Path:
        return self.path / ROUTER_DIR

    def assignments(self, split: str | None = None, cluster: int | None = None) -> pa.Table:
        """The per-document table, optionally filtered to one split and/or cluster."""
        try:
            table = pq.read_table(self.path / ASSIGNMENTS)
        except (OSError, pa.ArrowException) as e:
            raise XelmError(
                f"{self.path / ASSIGNMENTS}: unreadable ({e}); re-run the allocation"
            ) from None
        if split is not None:
            table = table.filter(pc.equal(table["split"].cast(pa.string()), split))
        if cluster is not None:
            table = table.filter(pc.equal(table["cluster"], cluster))
        return table


def groups_summary(record: AllocationRecord, min_share: float = 0.1) -> list[str]:
    """One line per cluster: the languages holding at least `min_share` of its documents."""
    lines = []
    for c in record.clusters:
        total = max(1, c.documents)
        shares = {lang: v.documents / total for lang, v in c.languages.items()}
        parts = [f"{lang} {share:.0%}" for lang, share in shares.items() if share >= min_share]
        rest = sum(1 for share in shares.values() if share < min_share)
        tail = f" (+{rest} more)" if rest else ""
        lines.append(f"cluster {c.id}: {', '.join(parts) or '—'}{tail}")
    return lines
