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

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sklearn.metrics import normalized_mutual_info_score

from xelm.corpus import Document, unit_hash
from xelm.errors import XelmError

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


def write_allocation(
    folder: Path, method: str, k: int, a: Assignments, settings: dict, extra: dict[str, Any]
) -> dict:
    """Write clusters.json and assignments.parquet into `folder` (a temp dir being built)."""
    clusters, quality = summarize(a, k)
    pq.write_table(a.table(), folder / ASSIGNMENTS, compression="zstd")
    info = {
        "format": FORMAT,
        "method": method,
        "k": k,
        "settings": settings,
        "quality": quality,
        "clusters": clusters,
        **extra,
    }
    (folder / CLUSTERS_JSON).write_text(
        json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return info


class Allocation:
    """A finished allocation folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        f = self.path / CLUSTERS_JSON
        if not f.exists():
            raise XelmError(
                f"{self.path}: not an allocation (no {CLUSTERS_JSON}); "
                "build one with `xelm allocate tfidf|typology`"
            )
        try:
            self.info: dict[str, Any] = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise XelmError(f"{f}: invalid JSON ({e.msg}, line {e.lineno})") from None
        if self.info.get("format") != FORMAT:
            raise XelmError(f"{f}: unknown format {self.info.get('format')!r} (want {FORMAT})")

    @property
    def method(self) -> str:
        return self.info["method"]

    @property
    def k(self) -> int:
        return int(self.info["k"])

    @property
    def clusters(self) -> list[dict]:
        return self.info["clusters"]

    @property
    def router_dir(self) -> Path:
        return self.path / ROUTER_DIR

    def assignments(self, split: str | None = None, cluster: int | None = None) -> pa.Table:
        """The per-document table, optionally filtered to one split and/or cluster."""
        table = pq.read_table(self.path / ASSIGNMENTS)
        if split is not None:
            table = table.filter(pc.equal(table["split"].cast(pa.string()), split))
        if cluster is not None:
            table = table.filter(pc.equal(table["cluster"], cluster))
        return table


def groups_summary(info: dict, min_share: float = 0.1) -> list[str]:
    """One line per cluster: the languages holding at least `min_share` of its documents."""
    lines = []
    for c in info["clusters"]:
        total = max(1, c["documents"])
        parts = [
            f"{lang} {v['documents'] / total:.0%}"
            for lang, v in c["languages"].items()
            if v["documents"] / total >= min_share
        ]
        rest = sum(1 for v in c["languages"].values() if v["documents"] / total < min_share)
        tail = f" (+{rest} more)" if rest else ""
        lines.append(f"cluster {c['id']}: {', '.join(parts) or '—'}{tail}")
    return lines
