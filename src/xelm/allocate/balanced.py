"""Balanced k-means: k-means whose clusters all hold (nearly) the same number of points.

Plain k-means on multilingual documents collapses onto the big languages, so c-BTM balances the
clusters. We balance with per-cluster *prices*: a point goes to `argmin_c ‖x − μ_c‖² + λ_c`, and
the prices λ are raised, auction-style, on every over-full cluster until no cluster holds more
than its capacity. Because the rule is pointwise, the same centroids and prices assign documents
one batch at a time, in any order, and a cluster's price is also a readable number: how far a
document must be from other centroids before it is pushed into this one.

scikit-learn's `KMeans` (k-means++, several restarts) gives the starting centroids; only the
balancing is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans


def squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """‖x_i − μ_c‖² for every point and centroid, as (n, k) float32."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    d = (x * x).sum(1, keepdims=True) - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def capacity(n: int, k: int, max_ratio: float) -> int:
    """Largest cluster size that still guarantees max/min ≤ `max_ratio` for n points in k clusters.

    If every cluster holds at most `cap` points, the smallest holds at least n − (k−1)·cap, so
    cap / (n − (k−1)·cap) ≤ r  ⇔  cap ≤ r·n / (1 + r·(k−1)). Never below ⌈n/k⌉ (always feasible).
    """
    exact = -(-n // k)
    return max(exact, int(np.floor(max_ratio * n / (1.0 + max_ratio * (k - 1)))))


def balance_prices(
    cost: np.ndarray,
    max_ratio: float,
    prices: np.ndarray | None = None,
    max_rounds: int = 100_000,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """Prices λ (k,) such that `argmin_c cost + λ` gives clusters with max/min ≤ `max_ratio`.

    Each round raises the price of every cluster above the current cap just enough to push out
    its excess; the members that lose least by moving to their next-best cluster leave first.
    The cap is max(`capacity(n, k, max_ratio)`, ⌊max_ratio × smallest cluster⌋): a cluster only
    shrinks when its own price rises, so the smallest cluster never shrinks, the cap never falls,
    and prices only rise: this is an auction, and it terminates. Points move only when they
    must; with max_ratio = 1 (no slack) it converges in many small steps. Returns
    (prices, labels).
    """
    n, k = cost.shape
    floor_cap = capacity(n, k, max_ratio)
    prices = np.zeros(k, dtype=np.float64) if prices is None else prices.astype(np.float64)
    scale = float(np.abs(cost).max()) if cost.size else 1.0
    eps = eps * max(scale, 1e-12)
    for _ in range(max_rounds):
        adjusted = cost + prices[None, :]
        labels = adjusted.argmin(1)
        sizes = np.bincount(labels, minlength=k)
        over = sizes - max(floor_cap, int(np.floor(max_ratio * sizes.min())))
        if (over <= 0).all():
            return prices, labels
        for c in np.flatnonzero(over > 0):
            members = adjusted[labels == c]
            here = members[:, c].copy()
            members[:, c] = np.inf
            margin = members.min(1) - here  # how much λ_c must rise before each member leaves
            excess = int(over[c])
            prices[c] += np.partition(margin, excess - 1)[excess - 1] + eps
    raise RuntimeError(f"balancing did not converge in {max_rounds} rounds")


@dataclass
class BalancedKMeans:
    """k-means with clusters of (nearly) equal size; fit on a sample, then `assign` any batch."""

    k: int
    max_ratio: float = 1.05  # largest/smallest cluster on the fitted sample
    max_iter: int = 30
    n_init: int = 3
    seed: int = 0
    centroids: np.ndarray | None = None
    prices: np.ndarray | None = None
    iterations: int = 0

    def fit(self, x: np.ndarray) -> BalancedKMeans:
        x = np.asarray(x, dtype=np.float32)
        n = len(x)
        if not 1 <= self.k <= n:
            raise ValueError(f"k={self.k} needs 1 ≤ k ≤ {n} points")
        start = KMeans(self.k, n_init=self.n_init, random_state=self.seed).fit(x)
        centroids = start.cluster_centers_.astype(np.float32)
        labels = None
        for it in range(1, self.max_iter + 1):
            # cold start: prices left by the previous centroids can be far too high for the new
            # ones, and since an auction only raises prices that costs long cascades (measured)
            _, new = balance_prices(squared_distances(x, centroids), self.max_ratio)
            changed = n if labels is None else int((new != labels).sum())
            labels = new
            for c in range(self.k):
                members = x[labels == c]
                if len(members):
                    centroids[c] = members.mean(0)
            self.iterations = it
            if changed <= max(1, n // 1000):
                break
        # prices for the final centroids (the loop's last update moved them)
        prices, _ = balance_prices(squared_distances(x, centroids), self.max_ratio)
        self.centroids, self.prices = centroids, prices.astype(np.float32)
        return self

    def assign(self, x: np.ndarray) -> np.ndarray:
        """Cluster of each point under the fitted centroids and prices (pointwise, any batch)."""
        if self.centroids is None or self.prices is None:
            raise ValueError("BalancedKMeans.assign before fit")
        return (squared_distances(x, self.centroids) + self.prices[None, :]).argmin(1)
