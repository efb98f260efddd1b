from __future__ import annotations

import numpy as np
import pytest

from rlchat.metrics import (
    distinct_value,
    mean_statistics,
    mean_value,
    ngram_count_statistics,
    reply_count_statistics,
)
from rlchat.significance import (
    cluster_ids,
    compare,
    pooled_comparison,
    randomised_differences,
    swap_masks,
)


def test_cluster_ids_join_shared_keys_transitively():
    conversations = ["c1", "c1", "c2", "c3", "c4", "c4"]
    sources = ["what?", "hi.", "what?", "bye.", "no.", "hi."]
    # c1 and c2 share "what?"; c4 shares "hi." with c1; c3 stands alone.
    assert cluster_ids(conversations, sources).tolist() == [0, 0, 0, 1, 0, 0]
    assert cluster_ids(["a", "b", "a"]).tolist() == [0, 1, 0]
    with pytest.raises(ValueError):
        cluster_ids(["a"], ["x", "y"])


def test_equal_systems_differ_by_nothing():
    values = mean_statistics(np.arange(10.0))
    result = compare(values, values, np.arange(10), mean_value, resamples=200)
    assert result.diff == result.low == result.high == 0.0
    assert result.p_value == 1.0 and not result.significant()


def test_swapping_conserves_the_sum_of_both_systems():
    rng = np.random.default_rng(0)
    a, b = mean_statistics(rng.normal(size=50)), mean_statistics(rng.normal(size=50) + 1)
    clusters = np.repeat(np.arange(10), 5)
    swaps = swap_masks(10, 300, seed=1)
    observed, differences = randomised_differences(a, b, clusters, mean_value, swaps)
    assert observed == pytest.approx(1.0 + b[:, 0].mean() - 1.0 - a[:, 0].mean())
    # Swapping every cluster turns B - A into A - B: the randomisation is symmetric.
    _, both = randomised_differences(a, b, clusters, mean_value, np.ones((1, 10)))
    assert both[0] == pytest.approx(-observed)
    assert np.abs(differences).max() <= np.abs(a[:, 0] - b[:, 0]).sum() / 50 + 1e-12


def test_a_real_difference_is_significant_and_its_interval_covers_it():
    rng = np.random.default_rng(3)
    a = rng.normal(size=400)
    b = a + 0.5 + rng.normal(size=400)
    result = compare(mean_statistics(a), mean_statistics(b), np.arange(400), mean_value)
    assert result.significant()
    assert result.low < 0.5 < result.high
    assert result.low < result.diff < result.high


def _aa_rejection_rate(clustered: bool, replications: int = 150) -> float:
    """Two systems that differ only by chance, scored on pairs in groups of 8 identical
    copies (one input said 8 times gets one reply): how often is "no difference" rejected?"""
    rng = np.random.default_rng(11)
    groups, size = 40, 8
    clusters = np.repeat(np.arange(groups), size)
    per_pair = clusters if clustered else np.arange(groups * size)
    rejected = 0
    for replication in range(replications):
        a = np.repeat(rng.exponential(size=groups), size)  # heavy-ish tailed, like BLEU
        b = np.repeat(rng.exponential(size=groups), size)
        result = compare(
            mean_statistics(a),
            mean_statistics(b),
            per_pair,
            mean_value,
            resamples=199,
            seed=replication,
        )
        rejected += result.significant()
    return rejected / replications


def test_pair_level_randomisation_is_overconfident_where_the_clustered_test_is_not():
    pairs = _aa_rejection_rate(clustered=False)
    clusters = _aa_rejection_rate(clustered=True)
    assert pairs > 0.3  # copies of one input taken as independent evidence
    assert clusters <= 0.1


def test_aa_rate_of_a_count_figure_is_near_the_nominal_level():
    """Unique replies of two random bots drawing from one Zipf pool: the swap test keeps every
    reply once, so it is not biased the way a bootstrap's repeated replies bias it."""
    rng = np.random.default_rng(5)
    pool = [f"reply {k}" for k in range(300)]
    weights = 1.0 / np.arange(1, 301) ** 1.1
    weights /= weights.sum()
    rejected, replications = 0, 150
    for replication in range(replications):
        a = list(rng.choice(pool, size=120, p=weights))
        b = list(rng.choice(pool, size=120, p=weights))
        counts_a, counts_b = reply_count_statistics([a, b])
        result = compare(
            counts_a, counts_b, np.arange(120), distinct_value, resamples=199, seed=replication
        )
        rejected += result.significant()
    assert 0.0 < rejected / replications <= 0.1


def test_distinct_n_comparison_sees_a_collapsed_system():
    varied = [f"line number {k} here" for k in range(60)]
    collapsed = ["i'm not going to be a good time"] * 50 + varied[:10]
    counts_a, counts_b = ngram_count_statistics([varied, collapsed], 2)
    result = compare(counts_a, counts_b, np.arange(60), distinct_value, resamples=300)
    assert result.diff < 0 and result.significant() and result.high < 0


def test_compare_checks_its_inputs():
    a = mean_statistics(np.zeros(4))
    with pytest.raises(ValueError, match="shapes"):
        compare(a, mean_statistics(np.zeros(3)), np.arange(4), mean_value)
    with pytest.raises(ValueError, match="cluster ids"):
        compare(a, a, np.arange(3), mean_value)
    with pytest.raises(ValueError, match="confidence"):
        compare(a, a, np.arange(4), mean_value, confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        compare(a, a, np.arange(4), mean_value, resamples=0)


def test_compare_is_deterministic_for_a_seed():
    rng = np.random.default_rng(2)
    a, b = mean_statistics(rng.normal(size=80)), mean_statistics(rng.normal(size=80))
    clusters = np.arange(80) // 4
    first = compare(a, b, clusters, mean_value, seed=9)
    assert first == compare(a, b, clusters, mean_value, seed=9)


def test_half_sample_interval_has_the_width_of_the_standard_error():
    rng = np.random.default_rng(8)
    a = rng.normal(size=400)
    b = a + rng.normal(size=400)  # differences with standard deviation 1
    result = compare(mean_statistics(a), mean_statistics(b), np.arange(400), mean_value)
    half_width = (result.high - result.low) / 2
    assert half_width == pytest.approx(1.96 / np.sqrt(400), rel=0.25)


def test_a_difference_is_called_only_when_the_interval_also_excludes_zero():
    # Pairs that move together in ten groups (the interval's groupings) but are swapped one by
    # one: the randomisation, blind to the groups, rejects; the interval, which sees them, does
    # not, and neither does the comparison.
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 40)
    a = rng.normal(size=400)
    b = a + 0.5 + rng.normal(scale=1.0, size=10)[groups] + 0.1 * rng.normal(size=400)
    result = compare(
        mean_statistics(a), mean_statistics(b), np.arange(400), mean_value, groupings=(groups,)
    )
    assert result.randomisation_p < 0.01 and result.low < 0 < result.high
    assert result.p_value == max(result.randomisation_p, result.interval_p)
    assert not result.significant()
    # Over many draws a star never stands beside an interval that includes zero.
    for seed in range(30):
        rng = np.random.default_rng(seed)
        a = rng.normal(size=120)
        b = a + rng.normal(scale=0.3) + rng.normal(size=120)
        clusters = np.repeat(np.arange(40), 3)
        r = compare(mean_statistics(a), mean_statistics(b), clusters, mean_value, resamples=300)
        assert (r.interval_p < 0.05) == (r.low > 0 or r.high < 0)
        assert not r.significant() or r.low > 0 or r.high < 0


def test_half_sample_interval_does_not_grow_with_the_difference():
    rng = np.random.default_rng(9)
    a = rng.normal(size=300)
    noise = rng.normal(size=300)
    widths = [
        (lambda r: r.high - r.low)(
            compare(mean_statistics(a), mean_statistics(a + shift + noise), np.arange(300),
                    mean_value)
        )
        for shift in (0.0, 5.0)
    ]  # fmt: skip
    assert widths[1] == pytest.approx(widths[0], rel=0.05)


def test_one_draw_pooled_is_the_plain_comparison():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=300), rng.normal(size=300) + 0.3
    clusters = np.repeat(np.arange(100), 3)
    plain = compare(mean_statistics(a), mean_statistics(b), clusters, mean_value, resamples=300)
    for draws in (1, 3):  # identical draws have no spread between them
        pooled = pooled_comparison([a] * draws, [b] * draws, clusters, resamples=300)
        assert pooled.diff == pytest.approx(plain.diff)
        assert (pooled.low, pooled.high) == pytest.approx((plain.low, plain.high))
        assert (pooled.pairs_low, pooled.pairs_high) == pytest.approx((plain.low, plain.high))
        assert pooled.p_value == pytest.approx(plain.p_value)
        assert pooled.degrees_of_freedom == np.inf


def test_pooled_difference_is_the_mean_of_the_draws_and_their_spread_widens_it():
    rng = np.random.default_rng(6)
    n = 400
    clusters = np.arange(n)
    a = [rng.normal(size=n) for _ in range(2)]
    # Two draws of B: one far ahead of its A, one behind; each clearly so on its own pairs.
    b = [a[0] + 1.5 + 0.3 * rng.normal(size=n), a[1] - 0.5 + 0.3 * rng.normal(size=n)]
    pooled = pooled_comparison(a, b, clusters, resamples=300)
    assert pooled.per_draw == pytest.approx(
        [float((b[k] - a[k]).mean()) for k in range(2)], abs=1e-12
    )
    assert pooled.diff == pytest.approx(np.mean(pooled.per_draw))
    # With these two draws fixed, B is ahead beyond doubt; a next draw may well be behind.
    assert pooled.pairs_low > 0
    assert pooled.low < 0 < pooled.high
    assert pooled.degrees_of_freedom < 2


def test_pooled_interval_covers_the_recipes_effect_where_the_pairs_alone_do_not():
    """Draws of B whose effect varies from draw to draw around 0.2: the interval with the
    draws' spread covers 0.2 near its nominal rate; the pairs' noise alone is overconfident."""
    rng = np.random.default_rng(7)
    n, draws, replications = 200, 4, 150
    clusters = np.arange(n)
    covered = covered_by_pairs = 0
    for replication in range(replications):
        a = [rng.normal(size=n) for _ in range(draws)]
        b = [x + rng.normal(0.2, 0.3) + 0.5 * rng.normal(size=n) for x in a]
        pooled = pooled_comparison(a, b, clusters, resamples=199, seed=replication)
        covered += pooled.low < 0.2 < pooled.high
        covered_by_pairs += pooled.pairs_low < 0.2 < pooled.pairs_high
    assert covered / replications >= 0.9
    assert covered_by_pairs / replications < 0.75


def test_pooled_comparison_checks_its_draws():
    with pytest.raises(ValueError, match="as many"):
        pooled_comparison([np.zeros(3)], [np.zeros(3)] * 2, np.arange(3))
    with pytest.raises(ValueError, match="different pairs"):
        pooled_comparison([np.zeros(3)], [np.zeros(4)], np.arange(3))
