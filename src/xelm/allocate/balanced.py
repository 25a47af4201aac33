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
    eps: tuple[float, ...] = (1e-2, 1e-3, 1e-4),
    max_rounds: int = 100_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Prices λ (k,) and labels with max/min cluster size ≤ `max_ratio`, labels ≈ argmin cost + λ.

    If `argmin_c cost + λ` (λ = `prices`, default 0) already satisfies the ratio, nothing moves.
    Otherwise this is the forward auction for a transportation problem (Bertsekas): every
    cluster has `capacity(n, k, max_ratio)` slots; each unassigned point bids for its best
    cluster, offering to raise its price by how much it prefers it to its second best plus
    eps × the cost scale; a full cluster keeps its highest bids and its price becomes the lowest
    bid it holds; outbid points bid again. Prices only rise and each bid raises one by at least
    the eps step, so it terminates, with every point within one step of its cheapest cluster.
    eps-scaling: a coarse step finds prices fast (a small one alone lets near-tied clusters
    bid each other up in tiny steps: seconds per call, measured), then finer steps re-run the
    auction from those prices, so that `argmin cost + λ` — the rule that assigns new documents
    — agrees with the returned labels up to ties within 1e-4 × the cost scale.
    """
    n, k = cost.shape
    prices = np.zeros(k, dtype=np.float64) if prices is None else prices.astype(np.float64)
    labels = (cost + prices[None, :]).argmin(1)
    sizes = np.bincount(labels, minlength=k)
    if sizes.min() > 0 and sizes.max() <= max_ratio * sizes.min():
        return prices, labels
    cap = capacity(n, k, max_ratio)
    scale = max(float(np.abs(cost).max()) if cost.size else 1.0, 1e-12)
    for e in eps:
        labels = _auction(cost, cap, prices, e * scale, max_rounds)
    return prices, labels


def _auction(cost: np.ndarray, cap: int, prices: np.ndarray, step: float, max_rounds: int):
    """One forward auction from `prices` (updated in place); returns the labels."""
    n, k = cost.shape
    labels = np.full(n, -1)
    held = np.zeros(n)  # the price each assigned point bid
    unassigned = np.arange(n)
    for _ in range(max_rounds):
        if len(unassigned) == 0:
            return labels
        a = cost[unassigned] + prices[None, :]
        rows = np.arange(len(unassigned))
        first = a.argmin(1)
        best = a[rows, first]
        a[rows, first] = np.inf
        second = a.min(1) if k > 1 else best
        bids = prices[first] + (second - best) + step
        for c in np.unique(first):
            new = unassigned[first == c]
            holders = np.flatnonzero(labels == c)
            points = np.concatenate([holders, new])
            offers = np.concatenate([held[holders], bids[first == c]])
            if len(points) > cap:
                order = np.argsort(-offers, kind="stable")
                labels[points[order[cap:]]] = -1
                points, offers = points[order[:cap]], offers[order[:cap]]
                prices[c] = offers.min()
            labels[points] = c
            held[points] = offers
        unassigned = np.flatnonzero(labels < 0)
    raise RuntimeError(f"balancing did not converge in {max_rounds} rounds")


@dataclass
class BalancedKMeans:
    """k-means with clusters of (nearly) equal size; fit on a sample, then `assign` any batch."""

    k: int
    max_ratio: float = 1.05  # largest/smallest cluster on the fitted sample
    max_iter: int = 5  # balanced Lloyd steps after k-means++: 3 give nearly all the gain (measured)
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
            if changed <= max(1, n // 200):
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
