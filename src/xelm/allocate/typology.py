"""Typological clustering of languages (X-ELM): URIEL vectors and rounds of greedy pairing.

Each training language is a URIEL vector (`lang2vec`, default `syntax_average`, `minimal=True`
as in the paper's code). Distances are the paper's cosine distances: the dot product over the
dimensions present in *both* vectors, each norm over all the dimensions that language has
(URIEL's `--` entries are skipped, never filled; `norms="shared"` takes both norms over the shared
dimensions instead). Clusters are built in rounds: in each
round the closest pair of clusters (single linkage: the minimum distance between their member
languages) is merged, then the closest pair among the rest, and so on until every cluster has
been paired, so 16 languages become 8, then 4, 2 and 1. The merges form the binary tree that HMR
branches along; the allocation for k is the tree cut after the first n − k merges. Rules beyond
the paper, for any n and k:

- odd count: the cluster left over in a round passes unchanged into the next round;
- k that is not n/2^r: the last round stops once k clusters remain; since merges are taken
  closest-first, the pairs merged are that round's closest ones;
- `max_size_factor` F: while more than k clusters remain, a merge is allowed only if the merged
  cluster holds at most F × (total bytes / k); if a round can make no allowed merge, it takes the
  closest pair anyway and the allocation records that the limit was relaxed.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xelm.allocate.specs import TypologySpec
from xelm.errors import XelmError
from xelm.langs import iso639_3

TYPOLOGY_JSON = "typology.json"


def _lang2vec():
    """Import lang2vec. Its wheel also installs a `lang2vec.py` *script* into bin/, which shadows
    the package whenever Python runs a program from bin/ (sys.path[0]), so that folder is
    skipped for this import."""
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if not Path(p or ".", "lang2vec.py").is_file()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lang2vec imports the deprecated pkg_resources
            import lang2vec.lang2vec as l2v
    finally:
        sys.path[:] = saved
    return l2v


# URIEL files some macrolanguages under one of their individual languages only
URIEL_INDIVIDUAL = {"ara": "arb", "swa": "swh", "fas": "pes", "msa": "zsm"}


def uriel_code(lang: str, spec: TypologySpec) -> str:
    """The URIEL (ISO 639-3) code of a BCP-47 tag: the spec's own choice, else the tag's code,
    with a macrolanguage URIEL lacks taken as its main individual language (ar → arb)."""
    if lang in spec.uriel_codes:
        return spec.uriel_codes[lang]
    code = iso639_3(lang)
    return URIEL_INDIVIDUAL.get(code, code)


def uriel_vectors(langs: list[str], spec: TypologySpec | None = None) -> np.ndarray:
    """(n_langs, dims) URIEL features with NaN where URIEL has no value."""
    spec = spec or TypologySpec()
    l2v = _lang2vec()
    codes = {lang: uriel_code(lang, spec) for lang in langs}
    unknown = [f"{lang} ({code})" for lang, code in codes.items() if code not in l2v.LANGUAGES]
    if unknown:
        raise XelmError(
            f"not in URIEL (lang2vec): {', '.join(unknown)}; drop them from the training "
            "languages, name their URIEL code in uriel_codes, or use `xelm allocate tfidf`"
        )
    sets = spec.features.split("+")
    bad = [s for s in sets if s not in l2v.available_feature_sets() or s == "learned"]
    if bad:
        usable = [s for s in l2v.available_feature_sets() if s != "learned"]
        raise XelmError(f"--features {spec.features}: unknown {bad}; use one of {usable}")

    def table(minimal: bool) -> np.ndarray:
        feats = l2v.get_features(list(codes.values()), spec.features, minimal=minimal)
        rows = [[np.nan if v == "--" else float(v) for v in feats[codes[lang]]] for lang in langs]
        return np.array(rows, dtype=np.float64).reshape(len(langs), -1)

    # how much URIEL knows about a language is judged on the full feature set: `minimal` drops
    # the dimensions these languages agree on, which says nothing about coverage
    full = table(minimal=False)
    known = (~np.isnan(full)).sum(1)
    poor = [
        f"{lang} ({int(n)}/{full.shape[1]})"
        for lang, n in zip(langs, known, strict=True)
        if n < spec.min_features
    ]
    if poor:
        raise XelmError(
            f"too few known URIEL {spec.features} features for {', '.join(poor)} "
            f"(need {spec.min_features}); use --features syntax_knn (kNN-imputed, none missing) "
            "or drop the language"
        )
    vectors = table(minimal=True) if spec.minimal else full
    return vectors


def cosine_distances(vectors: np.ndarray, langs: list[str], norms: str = "own") -> np.ndarray:
    """Pairwise cosine distance of URIEL vectors with missing values (NaN).

    The dot product always runs over the dimensions both languages know. `norms="own"` (the
    paper's code, `lang_clustering.py`): each norm runs over all the dimensions *that* language
    knows, so a pair that shares few known dimensions is far apart. `norms="shared"`: both norms
    run over the shared dimensions only (a plain cosine of the two restricted vectors), which
    ignores how much of each vector the pair has in common. A pair sharing no known dimension is
    an error (no silent NaN); a vector with no direction in common is at distance 1.
    """
    n = len(vectors)
    known = ~np.isnan(vectors)
    filled = np.nan_to_num(vectors)  # unknown dimensions add nothing to a dot product or a norm
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            m = known[i] & known[j]
            if not m.any():
                raise XelmError(
                    f"URIEL vectors of {langs[i]} and {langs[j]} share no known dimension; "
                    "use --features syntax_knn"
                )
            a, b = (filled[i, m], filled[j, m]) if norms == "shared" else (filled[i], filled[j])
            norm = np.linalg.norm(a) * np.linalg.norm(b)
            out[i, j] = out[j, i] = 1.0 - float(filled[i, m] @ filled[j, m]) / norm if norm else 1.0
    return out


@dataclass
class PairingTree:
    """The merge sequence of greedy pairing; node ids follow scipy: leaves 0..n-1, merge i → n+i."""

    n: int
    merges: list[dict] = field(default_factory=list)  # {a, b, distance, round, members, relaxed}

    def members(self, node: int) -> list[int]:
        return [node] if node < self.n else self.merges[node - self.n]["members"]

    def clusters(self, k: int) -> list[list[int]]:
        """Leaf sets after the first n − k merges, ordered by their smallest leaf."""
        roots = set(range(self.n))
        for i, m in enumerate(self.merges[: self.n - k]):
            roots -= {m["a"], m["b"]}
            roots.add(self.n + i)
        return sorted((sorted(self.members(r)) for r in roots), key=lambda c: c[0])

    def linkage(self) -> np.ndarray:
        """scipy linkage matrix; height = round − 1 + position within the round, so monotone."""
        rows, per_round = [], {}
        for m in self.merges:
            per_round[m["round"]] = per_round.get(m["round"], 0) + 1
        seen: dict[int, int] = {}
        for m in self.merges:
            r = m["round"]
            seen[r] = seen.get(r, 0) + 1
            height = r - 1 + seen[r] / (per_round[r] + 1)
            rows.append([m["a"], m["b"], height, len(m["members"])])
        return np.array(rows, dtype=np.float64).reshape(-1, 4)

    def cut_height(self, k: int) -> float:
        z = self.linkage()
        done = self.n - k
        if done <= 0:
            return float(z[0, 2]) / 2 if len(z) else 0.0
        if done >= len(z):
            return float(z[-1, 2]) + 0.5
        return float(z[done - 1, 2] + z[done, 2]) / 2


def greedy_pairing(
    dist: np.ndarray,
    k: int = 1,
    sizes: list[float] | None = None,
    max_size_factor: float | None = None,
) -> PairingTree:
    """Rounds of greedy closest-pair merging to a single root (see the module docstring)."""
    n = len(dist)
    sizes = list(sizes) if sizes is not None else [1.0] * n
    limit = None if max_size_factor is None else max_size_factor * sum(sizes) / k
    tree = PairingTree(n)
    active = list(range(n))
    size = {i: sizes[i] for i in range(n)}
    rnd = 0
    while len(active) > 1:
        rnd += 1
        pairs = sorted(
            (float(dist[np.ix_(tree.members(a), tree.members(b))].min()), a, b)
            for i, a in enumerate(active)
            for b in active[i + 1 :]
        )
        paired: set[int] = set()
        made = []
        for d, a, b in pairs:
            if a in paired or b in paired:
                continue
            capped = len(active) - len(made) > k and limit is not None
            if capped and size[a] + size[b] > limit:
                continue
            made.append((d, a, b, False))
            paired |= {a, b}
        if not made:  # only over-limit merges remain: take the closest, and say so
            d, a, b = pairs[0]
            made.append((d, a, b, True))
            paired |= {a, b}
        for d, a, b, relaxed in made:
            node = n + len(tree.merges)
            members = sorted(tree.members(a) + tree.members(b))
            tree.merges.append(
                {
                    "a": a,
                    "b": b,
                    "distance": round(d, 6),
                    "round": rnd,
                    "members": members,
                    "relaxed": relaxed,
                }
            )
            size[node] = size[a] + size[b]
        new_nodes = list(range(n + len(tree.merges) - len(made), n + len(tree.merges)))
        active = [c for c in active if c not in paired] + new_nodes
    return tree


# ---------------------------------------------------------------------------------------------
# Allocation
# ---------------------------------------------------------------------------------------------


def _check_languages(corpus, k: int) -> list[str]:
    """The corpus's training languages, if typological clustering into k groups can use them."""
    langs = corpus.train_langs
    if not langs or sum(corpus.stats(lang, "train")["documents"] for lang in langs) == 0:
        raise XelmError(f"{corpus.path}: no training documents to allocate")
    if len(langs) < 2:
        raise XelmError(
            f"{corpus.path}: typological clustering needs at least 2 training languages "
            f"(has {', '.join(langs)}); use `xelm allocate tfidf` to split one language"
        )
    if not 1 <= k <= len(langs):
        raise XelmError(f"--k {k}: must be between 1 and the {len(langs)} training languages")
    return langs


def _tree_record(tree: PairingTree, langs: list[str], k: int) -> dict:
    """The merge tree as clusters.json keeps it (HMR follows it)."""
    merges = [
        {key: v for key, v in m.items() if key != "members"}
        | {"languages": [langs[i] for i in m["members"]]}
        for m in tree.merges
    ]
    return {
        "labels": langs,
        "merges": merges,
        "cut_after_merges": len(langs) - k,
        "linkage": tree.linkage().tolist(),
    }


def allocate_typology(
    corpus_dir: str | Path, out: str | Path, spec: TypologySpec | None = None, progress: bool = True
) -> dict:
    """Group the corpus's training languages into k typological clusters; write the allocation."""
    from xelm.allocate.allocation import ROUTER_DIR, Assignments, write_allocation
    from xelm.allocate.plots import plot_cluster_sizes, plot_dendrogram
    from xelm.corpus import Corpus
    from xelm.paths import atomic_dir, relative_to

    spec = spec or TypologySpec()
    corpus = Corpus(corpus_dir)
    langs = _check_languages(corpus, spec.k)
    vectors = uriel_vectors(langs, spec)
    dist = cosine_distances(vectors, langs, spec.norms)
    sizes = [corpus.stats(lang, "train")["bytes"] for lang in langs]
    tree = greedy_pairing(dist, spec.k, sizes, spec.max_size_factor)
    lang_to_cluster = {langs[i]: c for c, group in enumerate(tree.clusters(spec.k)) for i in group}
    with atomic_dir(out) as tmp:
        a = Assignments()
        for d in corpus.documents(None, langs):
            a.add(d, corpus.splits.of(d.id))
        a.clusters = np.array([lang_to_cluster[lang] for lang in a.langs], dtype=np.int32)
        extra = {"language_to_cluster": lang_to_cluster, "tree": _tree_record(tree, langs, spec.k)}
        settings = {
            "corpus": relative_to(corpus.path, out),
            "languages": langs,
            "features": spec.features,
            "minimal": spec.minimal,
            "min_features": spec.min_features,
            "max_size_factor": spec.max_size_factor,
            "norms": spec.norms,
        }
        info = write_allocation(tmp, "typology", spec.k, a, settings, extra)
        (tmp / ROUTER_DIR).mkdir()
        state = {
            "language_to_cluster": lang_to_cluster,
            "languages": langs,
            "features": spec.features,
            "distances": np.round(dist, 6).tolist(),
            "vectors": [[None if np.isnan(v) else v for v in row] for row in vectors.tolist()],
        }
        (tmp / ROUTER_DIR / TYPOLOGY_JSON).write_text(json.dumps(state) + "\n", encoding="utf-8")
        plot_cluster_sizes(info, tmp / "clusters.png")
        height = tree.cut_height(spec.k)
        plot_dendrogram(tree.linkage(), langs, spec.k, height, tmp / "dendrogram.png")
    return info
