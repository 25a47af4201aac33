"""Pictures of an allocation: what each cluster is made of, and the typology tree."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_cluster_sizes(record, path: Path) -> None:
    """Stacked bars: training documents per cluster, split by language (`record`: an
    `AllocationRecord`)."""
    clusters = record.clusters
    langs = record.settings.languages
    colors = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(clusters) + 1.6))
    left = [0] * len(clusters)
    for i, lang in enumerate(langs):
        widths = [c.languages[lang].documents if lang in c.languages else 0 for c in clusters]
        ax.barh(range(len(clusters)), widths, left=left, color=colors(i % 20), label=lang)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(range(len(clusters)), [f"cluster {c.id}" for c in clusters])
    ax.invert_yaxis()
    q = record.quality
    ax.set_xlabel("training documents")
    ax.set_title(
        f"{record.method} k={record.k}: balance {q.balance_documents} (docs), "
        f"{q.balance_bytes} (bytes), NMI {q.nmi}",
        fontsize=10,
    )
    ax.legend(ncol=min(8, len(langs)), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dendrogram(linkage, labels: list[str], k: int, cut: float, path: Path) -> None:
    """The greedy-pairing tree, one level per round, with the cut that gives k clusters."""
    from scipy.cluster.hierarchy import dendrogram

    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(labels) + 2), 4))
    dendrogram(linkage, labels=labels, ax=ax, color_threshold=0, above_threshold_color="0.3")
    ax.set_ylabel("round (closest pair lowest)")
    ax.set_yticks(range(0, int(max(row[2] for row in linkage)) + 2))
    ax.axhline(cut, color="tab:red", ls="--", lw=1)
    ax.text(ax.get_xlim()[1], cut, f" k={k}", color="tab:red", va="center")
    ax.set_title(
        "typological clusters: rounds of greedy pairing (URIEL cosine, single linkage)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
