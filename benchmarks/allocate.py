"""TF-IDF allocation: xelm's balanced pipeline vs plain scikit-learn, and scaling to 1M documents.

Part 1, the demo corpus (training split of the training languages), for each k: the plain
scikit-learn pipeline (TfidfVectorizer → TruncatedSVD → L2 normalise → KMeans, one process, the
same char n-gram features) against `xelm.allocate.tfidf.allocate_tfidf` (the same features,
fitted on a sample, embedded by worker processes, balanced k-means, writing the whole allocation
folder). Both start from the corpus folder. Reports time, documents/s, balance (max/min cluster
size in documents) and NMI against the language labels, and the time ratio ours/scikit-learn.

Part 2, scaling: corpora of 10k, 100k and 1M documents (400-character windows of the demo
corpus's documents, rotated by a shifting offset so that they are distinct) are allocated in a
fresh subprocess each; reports time, documents/s and the peak RSS of the whole process tree (the
allocator and its embedding workers, sampled from /proc every 0.2 s).

    .venv/bin/python benchmarks/allocate.py [--k 4,8] [--sizes 10000,100000,1000000]

Needs the demo corpus (`xelm run configs/demo.yaml` or `xelm data demo`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def sklearn_baseline(corpus_dir: Path, k: int, spec) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.preprocessing import normalize

    from xelm.corpus import Corpus

    t = time.perf_counter()
    corpus = Corpus(corpus_dir)
    docs = list(corpus.documents("train", corpus.train_langs))
    f = spec.features
    vec = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(f.ngram_min, f.ngram_max),
        sublinear_tf=True,
        min_df=f.min_df,
        max_features=f.max_features,
        dtype=np.float32,
    )
    x = vec.fit_transform([d.text[: f.max_chars] for d in docs])
    emb = normalize(TruncatedSVD(f.svd_dims, random_state=0).fit_transform(x))
    labels = KMeans(k, n_init=3, random_state=0).fit_predict(emb)
    seconds = time.perf_counter() - t
    sizes = np.bincount(labels, minlength=k)
    nmi = normalized_mutual_info_score([d.lang for d in docs], labels)
    balance = sizes.max() / max(1, sizes.min())
    return {"seconds": seconds, "documents": len(docs), "balance": balance, "nmi": nmi}


def ours(corpus_dir: Path, k: int, spec) -> dict:
    from xelm.allocate.tfidf import allocate_tfidf

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        info = allocate_tfidf(corpus_dir, Path(tmp) / "alloc", spec.replace(k=k), progress=False)
        seconds = time.perf_counter() - t
    q = info["quality"]
    return {
        "seconds": seconds,
        "documents": q["documents"],
        "balance": q["balance_documents"],
        "nmi": q["nmi"],
    }


def build_scaled_corpus(demo: Path, out: Path, n: int, chars: int = 400) -> int:
    from xelm.corpus import Corpus, CorpusWriter, Document

    corpus = Corpus(demo)
    source = [(d.lang, d.text) for d in corpus.documents("train", corpus.train_langs)]
    written = 0
    with CorpusWriter(out) as w:
        for i in range(n):
            lang, text = source[i % len(source)]
            start = (i // len(source)) * 53 % len(text)  # a rotation: distinct for short texts
            window = (text[start:] + "\n" + text[:start])[:chars]
            written += w.write(Document(f"d{i}", lang, window))
    return written


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def scaled_run(corpus_dir: Path, k: int) -> dict:
    code = (
        "import sys, time, json; from pathlib import Path; "
        "from xelm.allocate.tfidf import TfidfAllocationSpec, allocate_tfidf; "
        "t = time.perf_counter(); "
        f"info = allocate_tfidf({str(corpus_dir)!r}, Path(sys.argv[1]), "
        f"TfidfAllocationSpec(k={k}), progress=False); "
        "print(json.dumps({'seconds': time.perf_counter() - t, 'quality': info['quality']}))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(Path(tmp) / "alloc")],
            stdout=subprocess.PIPE,
            text=True,
        )
        peak = 0
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss_bytes(proc.pid))
                time.sleep(0.2)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        out, _ = proc.communicate()
        done.set()
        thread.join()
        if proc.returncode:
            raise SystemExit(f"allocation of {corpus_dir} failed ({proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_gib"] = peak / 2**30
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=Path("runs/demo/corpus"))
    ap.add_argument("--k", default="4,8")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--scale-k", type=int, default=8)
    args = ap.parse_args()

    from xelm.allocate.tfidf import TfidfAllocationSpec

    spec = TfidfAllocationSpec()
    print(f"machine: {os.cpu_count()} cores; features {spec.features}")
    print(f"\n## demo corpus ({args.corpus}), training split")
    print(f"{'k':>3} {'pipeline':<28} {'seconds':>8} {'docs/s':>8} {'balance':>8} {'NMI':>6}")
    for k in map(int, args.k.split(",")):
        rows = {
            "scikit-learn (KMeans)": sklearn_baseline(args.corpus, k, spec),
            "xelm balanced, 1 worker": ours(args.corpus, k, TfidfAllocationSpec(workers=1)),
            "xelm balanced, all cores": ours(args.corpus, k, spec),
        }
        for name, r in rows.items():
            print(
                f"{k:>3} {name:<28} {r['seconds']:>8.1f} {r['documents'] / r['seconds']:>8.0f} "
                f"{r['balance']:>8.3f} {r['nmi']:>6.3f}"
            )
        base = rows["scikit-learn (KMeans)"]["seconds"]
        one = rows["xelm balanced, 1 worker"]["seconds"] / base
        every = rows["xelm balanced, all cores"]["seconds"] / base
        print(
            f"    time ratio ours/scikit-learn: 1 worker {one:.2f}×, all cores {every:.2f}× "
            "(target ≤ 1.5×)"
        )

    print(f"\n## scaling (k={args.scale_k}, 400-character documents)")
    print(f"{'documents':>10} {'seconds':>8} {'docs/s':>8} {'balance':>8} {'peak RSS GiB':>13}")
    with tempfile.TemporaryDirectory(dir=args.corpus.parent) as tmp:
        for n in [int(s) for s in args.sizes.split(",") if s]:
            corpus_dir = Path(tmp) / f"c{n}"
            written = build_scaled_corpus(args.corpus, corpus_dir, n)
            r = scaled_run(corpus_dir, args.scale_k)
            docs = r["quality"]["documents"]
            print(
                f"{written:>10,} {r['seconds']:>8.1f} {written / r['seconds']:>8.0f} "
                f"{r['quality']['balance_documents']:>8.3f} {r['peak_rss_gib']:>13.2f}"
                f"   ({docs:,} in the training split)",
                flush=True,
            )


if __name__ == "__main__":
    main()
