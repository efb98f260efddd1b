from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from rlchat.metrics import (
    canonical_reply,
    corpus_bleu,
    distinct_n,
    dull_rate,
    mean_bleu2,
    mean_length,
    most_frequent,
    paired_bootstrap,
    paired_bootstrap_metric,
    perplexity,
    repetition_rate,
)

HYPOTHESES = ["i am going home now", "yes", "where is the car ?", "i don't know"]
REFERENCES = [
    "i am going home",
    "yes , i will be there tonight",
    "where is my car ?",
    "i have no idea",
]

# --------------------------------------------------------------------------- overlap


def test_corpus_bleu_with_one_reference_each_is_sacrebleu():
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
    assert corpus_bleu(HYPOTHESES, [[r] for r in REFERENCES]) == pytest.approx(expected)
    assert corpus_bleu(REFERENCES, [[r] for r in REFERENCES]) == pytest.approx(100.0)


def test_corpus_bleu_pads_ragged_references_without_adding_empty_ones():
    # A second copy of one reference changes nothing; an empty padding reference would give
    # the one-word "yes" a closest reference length of 0 and lift the brevity penalty.
    single = corpus_bleu(HYPOTHESES, [[r] for r in REFERENCES])
    ragged = [[r] for r in REFERENCES]
    ragged[0].append(REFERENCES[0])
    assert corpus_bleu(HYPOTHESES, ragged) == pytest.approx(single)
    padded_with_empty = [REFERENCES, [REFERENCES[0], "", "", ""]]
    assert sacrebleu.corpus_bleu(HYPOTHESES, padded_with_empty).score != pytest.approx(single)


def test_corpus_bleu_uses_every_reference():
    one = corpus_bleu(["where is the car ?"], [["where is my car ?"]])
    two = corpus_bleu(["where is the car ?"], [["where is my car ?", "where is the car ?"]])
    assert one < two == pytest.approx(100.0)


def test_corpus_bleu_rejects_missing_references():
    with pytest.raises(ValueError, match="at least one reference"):
        corpus_bleu(["a b"], [[]])
    with pytest.raises(ValueError, match="reference lists"):
        corpus_bleu(["a b", "c"], [["a b"]])


def test_mean_bleu2_is_the_mean_of_nltk_sentence_bleu2():
    method1 = SmoothingFunction().method1
    expected = np.mean(
        [
            sentence_bleu([r.split()], h.split(), weights=(0.5, 0.5), smoothing_function=method1)
            for h, r in zip(HYPOTHESES, REFERENCES, strict=True)
        ]
    )
    assert mean_bleu2(HYPOTHESES, [[r] for r in REFERENCES]) == pytest.approx(expected, abs=1e-12)
    assert mean_bleu2([], []) == 0.0


# --------------------------------------------------------------------------- diversity


def test_distinct_n_counts_distinct_ngrams_over_all_replies():
    replies = ["a b a b", "a c"]
    assert distinct_n(replies, 1) == pytest.approx(3 / 6)
    assert distinct_n(replies, 2) == pytest.approx(3 / 4)  # ab, ba, ab, ac
    assert distinct_n(replies, 5) == 0.0
    assert distinct_n([], 1) == 0.0
    with pytest.raises(ValueError):
        distinct_n(replies, 0)


def test_mean_length_counts_words():
    assert mean_length(["a b c", "d", ""]) == pytest.approx(4 / 3)
    assert mean_length([]) == 0.0


def test_canonical_reply_ignores_case_spacing_and_trailing_punctuation():
    assert canonical_reply("  I  don't KNOW ...") == "i don't know"
    assert canonical_reply("i don't know !?") == "i don't know"


def test_dull_rate_matches_canonical_forms_of_the_dull_list():
    replies = ["I don't know.", "i don't know", "sure , why not ?", "You know what I mean!"]
    assert dull_rate(replies) == pytest.approx(3 / 4)
    assert dull_rate(replies, ["sure, why not"]) == 0.0  # comma inside the reply differs
    assert dull_rate(replies, ["Sure , why not"]) == pytest.approx(1 / 4)
    assert dull_rate([]) == 0.0


def test_most_frequent_returns_the_commonest_canonical_replies():
    texts = ["yes.", "no", "Yes!", "what?", "no .", "yes", "...", "..."]
    assert most_frequent(texts, k=2) == ["yes", "no"]
    assert most_frequent(texts) == ["yes", "no", "what"]
    assert dull_rate(["Yes?", "maybe"], most_frequent(texts, k=1)) == pytest.approx(1 / 2)


def test_repetition_rate_flags_repeated_bigrams_and_stutters():
    replies = ["gonna gonna gonna", "i know i know", "that is fine", "no , no", "go go"]
    assert repetition_rate(replies) == pytest.approx(3 / 5)
    assert repetition_rate([]) == 0.0


def test_perplexity_is_exp_of_the_mean_nll():
    assert perplexity(10 * math.log(5.0), 10) == pytest.approx(5.0)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


# --------------------------------------------------------------------------- bootstrap


def test_paired_bootstrap_of_a_constant_shift_has_zero_width():
    a = np.arange(50, dtype=float)
    diff, low, high = paired_bootstrap(a, a + 1)
    assert diff == low == high == 1.0


def test_paired_bootstrap_of_equal_systems_contains_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=300)
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    diff, low, high = paired_bootstrap(a, rng.normal(size=300))
    assert low < 0.0 < high
    assert low <= diff <= high


def test_paired_bootstrap_excludes_zero_for_a_real_difference():
    rng = np.random.default_rng(2)
    a = rng.normal(size=400)
    diff, low, high = paired_bootstrap(a, a + 0.3 + rng.normal(size=400))
    assert 0.0 < low < diff < high


def test_paired_bootstrap_is_deterministic_and_narrows_with_confidence():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=100), rng.normal(size=100)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    _, low_95, high_95 = paired_bootstrap(a, b, confidence=0.95)
    _, low_50, high_50 = paired_bootstrap(a, b, confidence=0.5)
    assert low_95 < low_50 < high_50 < high_95
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:-1])
    with pytest.raises(ValueError):
        paired_bootstrap(a, b, confidence=1.0)


def test_paired_bootstrap_metric_of_means_equals_paired_bootstrap():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=60), rng.normal(size=60)
    by_values = paired_bootstrap(a, b, resamples=200, seed=5)
    by_metric = paired_bootstrap_metric(
        lambda i: a[i].mean(), lambda i: b[i].mean(), n=60, resamples=200, seed=5
    )
    assert by_metric == pytest.approx(by_values, abs=1e-12)


def test_paired_bootstrap_metric_compares_corpus_bleu():
    references = [[r] for r in REFERENCES]

    def bleu_of(hypotheses):
        return lambda indices: corpus_bleu(
            [hypotheses[i] for i in indices], [references[i] for i in indices]
        )

    diff, low, high = paired_bootstrap_metric(
        bleu_of(HYPOTHESES), bleu_of(REFERENCES), n=len(HYPOTHESES), resamples=50
    )
    assert diff == pytest.approx(100.0 - corpus_bleu(HYPOTHESES, references))
    assert 0.0 < low <= high <= 100.0 + 1e-9


def test_recentred_bootstrap_keeps_distinct_n_intervals_around_the_observed_difference():
    # Every reply of b is different, a says one thing: resamples repeat b's replies and cut
    # its distinct-2, so the plain interval falls below the observed difference.
    a = ["i do not know ."] * 40
    b = [f"reply number {i} here ." for i in range(40)]

    def distinct_of(replies):
        return lambda indices: distinct_n([replies[i] for i in indices], 2)

    plain = paired_bootstrap_metric(distinct_of(a), distinct_of(b), n=40, resamples=300)
    centred = paired_bootstrap_metric(
        distinct_of(a), distinct_of(b), n=40, resamples=300, recentre=True
    )
    observed = distinct_n(b, 2) - distinct_n(a, 2)
    assert plain[0] == centred[0] == pytest.approx(observed)
    assert plain[2] < observed  # the bias the recentring removes
    assert centred[1] <= observed <= centred[2]
    assert centred[2] - centred[1] == pytest.approx(plain[2] - plain[1])
