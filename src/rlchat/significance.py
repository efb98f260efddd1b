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
``[value, 1]``; sacreBLEU its n-gram counts; distinct-n a sparse n-gram count vector), so a
resample costs one matrix product, whatever the figure. Swaps and half-samples hold every
example at most once, so figures that count distinct things (distinct-n, unique replies) are
not biased the way a bootstrap's repeated examples bias them.

The randomisation test: p = (1 + #resamples with |difference| >= |observed|) / (1 +
resamples), exact for two systems that differ only by chance. Its null is that the two
systems' outputs are exchangeable, not that their figures are equal: two bots that say
different stock lines to the same share of inputs have the same top1, yet it calls them
different more often than its level says (7.5% for top1 and 9.5% for entropy at 5%,
``benchmarks/eval_calibration.py --equal-figure``). The interval: a normal one around the
observed difference, its variance from half-samples (each group kept with probability 1/2)
along conversation and along input, summed (`half_sample_variance`); swapped corpora mix the
two systems, so their spread grows with the very difference being measured, where
half-samples keep each system whole. It answers "is the figure different?", and is
conservative: it covered a known difference 96% to 100% of the time over 11 figures.

A difference is called significant only when both reject "no difference": the reported
p-value is the larger of the two. That test is valid wherever either one is, and a `*` never
stands beside an interval that includes zero. Calibration of all three is measured in
``benchmarks/eval_calibration.py``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats

from rlchat.metrics import mean_statistics, mean_value

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
    """B - A on one figure: observed difference, its interval, and the p-values."""

    diff: float
    low: float
    high: float
    variance: float  # of the difference, the interval's
    randomisation_p: float

    @property
    def interval_p(self) -> float:
        return normal_p_value(self.diff, self.variance)

    @property
    def p_value(self) -> float:
        """The larger of the two: a difference is called only when both tests reject."""
        return max(self.randomisation_p, self.interval_p)

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
    """Which clusters each resample takes (swaps, or keeps in a half-sample): (R, C) of 0/1.

    The same (clusters, resamples, seed) give the same masks, shared read-only between the
    figures and systems of one evaluation. They are laid out cluster-major, so the matrix
    products of `_masked_sums` read them without a copy.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    return _cluster_major_masks(clusters, resamples, seed).T


@functools.lru_cache(maxsize=16)
def _cluster_major_masks(clusters: int, resamples: int, seed: int) -> np.ndarray:
    masks = np.random.default_rng(seed).integers(0, 2, size=(resamples, clusters), dtype=np.int8)
    columns = np.ascontiguousarray(masks.T, dtype=np.float64)  # (C, R)
    columns.flags.writeable = False
    return columns


def _check(stats_a: Statistics, stats_b: Statistics, clusters: np.ndarray) -> None:
    if stats_a.shape != stats_b.shape:
        raise ValueError(f"statistics of shapes {stats_a.shape} and {stats_b.shape} differ")
    if stats_a.shape[0] != len(clusters):
        raise ValueError(f"{stats_a.shape[0]} examples but {len(clusters)} cluster ids")


def _masked_sums(
    stats_a: Statistics, stats_b: Statistics, clusters: np.ndarray, masks: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, A's and B's statistics summed over each mask's clusters (r, k)), by blocks."""
    count = masks.shape[1]
    a_t = sparse.csr_array(_cluster_sums(stats_a, clusters, count).T)  # (k, C)
    b_t = sparse.csr_array(_cluster_sums(stats_b, clusters, count).T)
    block = max(1, BLOCK_CELLS // max(1, a_t.shape[0]))
    for start in range(0, len(masks), block):
        part = masks[start : start + block].T  # (C, r)
        yield start, np.asarray(a_t @ part).T, np.asarray(b_t @ part).T


def figure_of(stats: Statistics, value: Value) -> float:
    """The figure of all examples: `value` of the column sums of their statistics."""
    return float(value(_column_sums(stats)[None, :])[0])


def observed_difference(stats_a: Statistics, stats_b: Statistics, value: Value) -> float:
    return figure_of(stats_b, value) - figure_of(stats_a, value)


def randomised_differences(
    stats_a: Statistics,
    stats_b: Statistics,
    clusters: np.ndarray,
    value: Value,
    swaps: np.ndarray,
) -> tuple[float, np.ndarray]:
    """The observed B - A, and B - A under each row of cluster swaps -> (float, (R,))."""
    _check(stats_a, stats_b, clusters)
    total_a, total_b = _column_sums(stats_a), _column_sums(stats_b)
    differences = np.empty(len(swaps))
    for start, a, b in _masked_sums(stats_a, stats_b, clusters, swaps):
        # Swapping the masked clusters moves their B rows to A's totals and A's to B's.
        swapped_a, swapped_b = total_a - a + b, total_b - b + a
        differences[start : start + len(a)] = value(swapped_b) - value(swapped_a)
    return observed_difference(stats_a, stats_b, value), differences


def half_sample_differences(
    stats_a: Statistics,
    stats_b: Statistics,
    clusters: np.ndarray,
    value: Value,
    masks: np.ndarray,
) -> np.ndarray:
    """B - A on each half-sample of clusters (each cluster kept with probability 1/2) -> (R,).

    Half-samples drawn without replacement spread as much as the full-sample difference
    does (a mean over a Bernoulli(1/2) half of n has variance sigma^2 / n; Shao & Wu 1989's
    delete-d jackknife with d = n/2), and hold every kept example once.
    """
    _check(stats_a, stats_b, clusters)
    differences = np.empty(len(masks))
    for start, a, b in _masked_sums(stats_a, stats_b, clusters, masks):
        differences[start : start + len(a)] = value(b) - value(a)
    return differences


def half_sample_variance(
    stats_a: Statistics,
    stats_b: Statistics,
    groupings: Sequence[np.ndarray],
    value: Value,
    *,
    resamples: int,
    seed: int,
) -> float:
    """Variance of B - A under dependence along each grouping (e.g. conversation, input).

    One grouping: the variance of the difference over half-samples of its groups. Two
    (crossed, not nested): V = V_1 + V_2, the sum of the one-way variances. Cameron, Gelbach
    & Miller's two-way variance subtracts the intersection's, V_1 + V_2 - V_(1 and 2)
    (https://doi.org/10.1198/jbes.2010.07136); here, where a (conversation, input) cell is
    nearly always one pair, that subtraction left the figures that are far from linear in
    sparse counts (corpus BLEU-4, the entropy of mostly unique replies) too narrow: they
    covered a known difference 88% and 89% of the time, against 96% and 98% for the sum, on
    the same 400 draws (`benchmarks/eval_calibration.py --variants`). The sum counts the
    intersection twice: conservative. Joining both groupings transitively into one instead
    makes one cluster of a fifth of comedy's test pairs (short lines like "what?" link
    conversations), whose variance half-samples cannot estimate (coverage down to 84%).
    """

    def one_way(groups: np.ndarray, offset: int) -> float:
        groups = np.asarray(groups)
        masks = swap_masks(int(groups.max()) + 1 if len(groups) else 0, resamples, seed + offset)
        halves = half_sample_differences(stats_a, stats_b, groups, value, masks)
        halves = halves[np.isfinite(halves)]  # an empty half has no figure
        return float(halves.var()) if len(halves) > 1 else 0.0

    if len(groupings) == 1:
        return one_way(groupings[0], 0)
    if len(groupings) != 2:
        raise ValueError("half_sample_variance takes one or two groupings")
    first, second = (np.asarray(g) for g in groupings)
    return one_way(first, 1) + one_way(second, 2)


def compare(
    stats_a: Statistics,
    stats_b: Statistics,
    clusters: np.ndarray,
    value: Value,
    *,
    groupings: Sequence[np.ndarray] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Paired approximate randomisation of figure `value` over `clusters`, and a normal
    interval whose variance comes from half-samples along `groupings` (default: the clusters
    themselves; see `half_sample_variance`); the p-value is the larger of the two tests'."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    clusters = np.asarray(clusters)
    masks = swap_masks(int(clusters.max()) + 1 if len(clusters) else 0, resamples, seed)
    observed, differences = randomised_differences(stats_a, stats_b, clusters, value, masks)
    spread = np.abs(differences)
    # A tolerance so that float noise in an exact tie (swap = no change) counts as a tie.
    tolerance = 1e-12 * max(1.0, abs(observed))
    p_value = (1 + int((spread >= abs(observed) - tolerance).sum())) / (1 + len(differences))
    variance = half_sample_variance(
        stats_a, stats_b, groupings or (clusters,), value, resamples=resamples, seed=seed
    )
    half_width = float(stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(variance))
    return Comparison(
        observed, observed - half_width, observed + half_width, variance, randomisation_p=p_value
    )


def normal_p_value(difference: float, variance: float, dof: float = math.inf) -> float:
    """Two-sided p of "no difference" from the interval's own distribution: normal, or
    Student's t with `dof` degrees of freedom. It is below 1 - confidence exactly when the
    interval excludes zero."""
    if variance <= 0.0:
        return 1.0 if difference == 0.0 else 0.0
    z = abs(difference) / math.sqrt(variance)
    tail = stats.norm.sf(z) if math.isinf(dof) else stats.t.sf(z, dof)
    return float(min(1.0, 2.0 * tail))


def interval_variance(diff: float, high: float, confidence: float = 0.95) -> float:
    """The variance behind a stored normal interval [., high] around `diff`."""
    return ((high - diff) / stats.norm.ppf(0.5 + confidence / 2)) ** 2


@dataclass(frozen=True)
class PooledComparison:
    """B - A on a mean figure over several draws of two recipes' training (runs that differ
    in their seed), all answering the same pairs."""

    diff: float  # the mean over draws of B - A
    low: float  # the interval with both noises: which pairs were held out, which draws ran
    high: float
    pairs_low: float  # the interval of the held-out pairs' noise alone (these draws, fixed)
    pairs_high: float
    p_value: float  # the larger of the randomisation's over the draw-averaged values and the
    # interval's own (with both noises)
    per_draw: tuple[float, ...]  # B - A in each draw
    degrees_of_freedom: float  # of the t quantile (Welch-Satterthwaite); inf without spread


def pooled_comparison(
    values_a: Sequence[np.ndarray],
    values_b: Sequence[np.ndarray],
    clusters: np.ndarray,
    *,
    groupings: Sequence[np.ndarray] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PooledComparison:
    """Does recipe B beat recipe A, over draws? ``values_a[k]`` and ``values_b[k]`` are the
    per-pair values (n,) of draw k of each (B's draw k trained from A's, as RL from its CE).

    One draw's interval only covers the held-out pairs' noise, and a figure met in 2 of 5
    draws says little either way. Here the per-pair values are averaged over the draws and
    compared as one system (`compare`: the pairs' noise with those draws fixed); the draws'
    own spread, the variance of the per-draw differences over their number, is added to
    that variance, since the next draw is none of these. With few draws that spread is
    itself uncertain: the quantile is Student's t with Welch-Satterthwaite's degrees of
    freedom, the pairs' part counted as known.
    """
    if len(values_a) != len(values_b) or not values_a:
        raise ValueError(f"{len(values_a)} draws of A but {len(values_b)} of B; need as many")
    draws_a, draws_b = np.vstack(values_a), np.vstack(values_b)  # (K, n)
    if draws_a.shape != draws_b.shape:
        raise ValueError(f"draws answer different pairs: {draws_a.shape} and {draws_b.shape}")
    pooled = compare(
        mean_statistics(draws_a.mean(axis=0)),
        mean_statistics(draws_b.mean(axis=0)),
        clusters,
        mean_value,
        groupings=groupings,
        resamples=resamples,
        seed=seed,
        confidence=confidence,
    )
    per_draw = (draws_b - draws_a).mean(axis=1)
    pairs_variance = pooled.variance
    draws_variance = float(per_draw.var(ddof=1)) / len(per_draw) if len(per_draw) > 1 else 0.0
    total = pairs_variance + draws_variance
    dof = total**2 * (len(per_draw) - 1) / draws_variance**2 if draws_variance > 0 else math.inf
    half_width = float(stats.t.ppf(0.5 + confidence / 2, dof) * math.sqrt(total))
    return PooledComparison(
        diff=pooled.diff,
        low=pooled.diff - half_width,
        high=pooled.diff + half_width,
        pairs_low=pooled.low,
        pairs_high=pooled.high,
        p_value=max(pooled.randomisation_p, normal_p_value(pooled.diff, total, dof)),
        per_draw=tuple(float(d) for d in per_draw),
        degrees_of_freedom=dof,
    )
