"""Is system B better than system A on the same held-out pairs? Paired approximate
randomisation over clusters of dependent pairs.

Held-out pairs are not independent: consecutive pairs of a conversation share an utterance,
and a line said in several conversations ("what?" 37 times in comedy's test split) gets the
same reply from a deterministic bot and the same references, so those pairs move together.
Resampling single pairs then understates the noise. Here pairs are first grouped into
clusters (connected components of "same conversation" and "same source text"), and each
resample swaps the two systems' outputs on whole clusters at random (approximate
randomisation, Noreen 1989; Riezler & Maxwell 2005, https://aclanthology.org/W05-0908).

Every figure is a function of the column sums of per-example statistics (a mean is
``[value]``; sacreBLEU its n-gram counts; distinct-n a sparse n-gram count vector), so a
resample costs one matrix product, whatever the figure. Swapping keeps every example exactly
once, so figures that count distinct things (distinct-n, unique replies) are not biased the
way a bootstrap's repeated examples bias them.

The test: p = (1 + #resamples with |difference| >= |observed|) / (1 + resamples). Under
random swaps the differences are symmetric about 0, and the interval reported is the
observed difference +- their ``confidence`` quantile in absolute value (the spread of the
difference under the null, taken as its spread around the truth). Calibration of both is
measured in ``benchmarks/eval_calibration.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

Statistics = np.ndarray | sparse.spmatrix | sparse.sparray  # (n, k): one row per example
Value = Callable[[np.ndarray], np.ndarray]  # summed statistics (R, k) -> figure (R,)

# Dense (resamples x columns) blocks are formed this many cells at a time.
BLOCK_CELLS = 4_000_000


def cluster_ids(*keys: Sequence[Hashable]) -> np.ndarray:
    """Cluster of each example: examples sharing any key value are in one cluster -> (n,).

    ``cluster_ids(conversation_ids, source_texts)`` joins the pairs of a conversation and the
    pairs whose source is the same line, transitively (union-find). Clusters are numbered
    0.. in order of first appearance.
    """
    n = len(keys[0])
    if any(len(k) != n for k in keys):
        raise ValueError("every key needs one value per example")
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for values in keys:
        first: dict[Hashable, int] = {}
        for i, value in enumerate(values):
            j = first.setdefault(value, i)
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    numbering: dict[int, int] = {}
    return np.asarray([numbering.setdefault(root(i), len(numbering)) for i in range(n)])


@dataclass(frozen=True)
class Comparison:
    """B - A on one figure: observed difference, its interval, and the test's p-value."""

    diff: float
    low: float
    high: float
    p_value: float

    def significant(self, level: float = 0.05) -> bool:
        return self.p_value < level


def _cluster_sums(stats: Statistics, clusters: np.ndarray, count: int) -> sparse.csr_array:
    """Statistics summed within each cluster -> (C, k), sparse."""
    membership = sparse.csr_array(
        (np.ones(len(clusters)), (clusters, np.arange(len(clusters)))),
        shape=(count, len(clusters)),
    )
    return sparse.csr_array(membership @ sparse.csr_array(stats))


def _column_sums(stats: Statistics) -> np.ndarray:
    return np.asarray(stats.sum(axis=0), dtype=np.float64).ravel()


def swap_masks(clusters: int, resamples: int, seed: int) -> np.ndarray:
    """Which clusters each resample swaps -> (resamples, clusters) of 0.0/1.0."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    return np.random.default_rng(seed).integers(0, 2, size=(resamples, clusters)).astype(float)


def randomised_differences(
    stats_a: Statistics,
    stats_b: Statistics,
    clusters: np.ndarray,
    value: Value,
    swaps: np.ndarray,
) -> tuple[float, np.ndarray]:
    """The observed B - A, and B - A under each row of cluster swaps -> (float, (R,))."""
    if stats_a.shape != stats_b.shape:
        raise ValueError(f"statistics of shapes {stats_a.shape} and {stats_b.shape} differ")
    if stats_a.shape[0] != len(clusters):
        raise ValueError(f"{stats_a.shape[0]} examples but {len(clusters)} cluster ids")
    count = swaps.shape[1]
    total_a, total_b = _column_sums(stats_a), _column_sums(stats_b)
    observed = float(value(total_b[None, :])[0] - value(total_a[None, :])[0])
    # Swapping cluster c moves (B_c - A_c) from B's totals to A's.
    moved = _cluster_sums(stats_b, clusters, count) - _cluster_sums(stats_a, clusters, count)
    moved_t = sparse.csr_array(moved.T)  # (k, C)
    columns = moved.shape[1]
    block = max(1, BLOCK_CELLS // max(1, columns))
    differences = np.empty(len(swaps))
    for start in range(0, len(swaps), block):
        part = swaps[start : start + block]  # (r, C)
        shift = np.asarray(moved_t @ part.T).T  # (r, k)
        differences[start : start + len(part)] = value(total_b - shift) - value(total_a + shift)
    return observed, differences


def compare(
    stats_a: Statistics,
    stats_b: Statistics,
    clusters: np.ndarray,
    value: Value,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Paired approximate randomisation of figure `value` over `clusters` (see module doc)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    clusters = np.asarray(clusters)
    swaps = swap_masks(int(clusters.max()) + 1 if len(clusters) else 0, resamples, seed)
    observed, differences = randomised_differences(stats_a, stats_b, clusters, value, swaps)
    spread = np.abs(differences)
    # A tolerance so that float noise in an exact tie (swap = no change) counts as a tie.
    tolerance = 1e-12 * max(1.0, abs(observed))
    p_value = (1 + int((spread >= abs(observed) - tolerance).sum())) / (1 + len(differences))
    half_width = float(np.quantile(spread, confidence))
    return Comparison(observed, observed - half_width, observed + half_width, p_value)


# --------------------------------------------------------------------------- figures


def mean_value(totals: np.ndarray) -> np.ndarray:
    """Figure of statistics ``[value, 1]``: the mean value."""
    return totals[:, 0] / np.maximum(totals[:, 1], 1e-300)


def mean_statistics(values: Sequence[float]) -> np.ndarray:
    """Per-example statistics whose figure (`mean_value`) is the mean of `values` -> (n, 2)."""
    values = np.asarray(values, dtype=np.float64)
    return np.column_stack([values, np.ones_like(values)])


def distinct_value(totals: np.ndarray) -> np.ndarray:
    """Figure of count vectors: distinct items over all items (distinct-n, unique share)."""
    totals = np.asarray(totals)
    return (totals > 0.5).sum(axis=1) / np.maximum(totals.sum(axis=1), 1e-300)


def top1_value(totals: np.ndarray) -> np.ndarray:
    """Figure of reply count vectors: the commonest reply's share."""
    totals = np.asarray(totals)
    return totals.max(axis=1) / np.maximum(totals.sum(axis=1), 1e-300)
