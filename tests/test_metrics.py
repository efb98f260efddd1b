from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from rlchat.metrics import (
    bleu_from_statistics,
    bleu_statistics,
    corpus_bleu,
    distinct_n,
    distinct_value,
    dull_rate,
    entropy_bits,
    mean_bleu2,
    mean_length,
    ngram_count_statistics,
    perplexity,
    repetition_rate,
    reply_count_statistics,
    top1_value,
)
from rlchat.significance import figure_of

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


def test_dull_rate_matches_canonical_forms_of_the_dull_list():
    replies = ["I don't know.", "i don't know", "sure , why not ?", "You know what I mean!"]
    assert dull_rate(replies) == pytest.approx(3 / 4)
    assert dull_rate(replies, ["sure, why not"]) == 0.0  # comma inside the reply differs
    assert dull_rate(replies, ["Sure , why not"]) == pytest.approx(1 / 4)
    assert dull_rate([]) == 0.0


def test_repetition_rate_flags_repeated_bigrams_and_stutters():
    replies = ["gonna gonna gonna", "i know i know", "that is fine", "no , no", "go go"]
    assert repetition_rate(replies) == pytest.approx(3 / 5)
    assert repetition_rate([]) == 0.0


def test_perplexity_is_exp_of_the_mean_nll():
    assert perplexity(10 * math.log(5.0), 10) == pytest.approx(5.0)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


# --------------------------------------------------------------------------- reply distribution


def test_top1_unique_and_entropy_of_hand_made_replies():
    replies = ["I'm not.", "i'm not", "yes.", "no", "i'm not !"]
    (counts,) = reply_count_statistics([replies])
    assert figure_of(counts, top1_value) == pytest.approx(3 / 5)  # three forms of one reply
    assert figure_of(counts, distinct_value) == pytest.approx(3 / 5)
    expected = -(0.6 * math.log2(0.6) + 2 * 0.2 * math.log2(0.2))
    assert figure_of(counts, entropy_bits) == pytest.approx(expected)
    (four,) = reply_count_statistics([["a", "b", "c", "d"]])
    assert figure_of(four, entropy_bits) == pytest.approx(2.0)
    (same,) = reply_count_statistics([["same"] * 7])
    assert figure_of(same, entropy_bits) == 0.0 and figure_of(same, top1_value) == 1.0


# --------------------------------------------------------------------------- statistics


def test_bleu_statistics_sum_to_corpus_bleu_on_any_subset():
    references = [[r, "i have no idea"] for r in REFERENCES]
    stats = bleu_statistics(HYPOTHESES, references)
    assert stats.shape == (4, 10)
    assert bleu_from_statistics(stats.sum(0))[0] == pytest.approx(
        corpus_bleu(HYPOTHESES, references)
    )
    subset = [0, 2]
    assert bleu_from_statistics(stats[subset].sum(0))[0] == pytest.approx(
        corpus_bleu([HYPOTHESES[i] for i in subset], [references[i] for i in subset])
    )


def test_count_statistics_share_columns_and_give_the_corpus_figures():
    a = ["a b a b", "a c", "a c"]
    b = ["x y", "a b", ""]
    counts_a, counts_b = ngram_count_statistics([a, b], 2)
    assert counts_a.shape[1] == counts_b.shape[1]  # one vocabulary for both systems
    for replies, counts in ((a, counts_a), (b, counts_b)):
        total = np.asarray(counts.sum(axis=0)).reshape(1, -1)
        assert distinct_value(total)[0] == pytest.approx(distinct_n(replies, 2))
    onehot_a, onehot_b = reply_count_statistics([a, b])
    assert onehot_a.shape[1] == onehot_b.shape[1] == 5  # "a c" twice in a: five replies
    assert figure_of(onehot_a, top1_value) == pytest.approx(2 / 3)
    assert figure_of(onehot_a, distinct_value) == pytest.approx(2 / 3)


def test_count_statistics_of_replies_without_ngrams_are_empty_rows():
    counts_a, counts_b = ngram_count_statistics([["yes", "no"], ["ok"]], 2)
    assert counts_a.shape[0] == 2 and counts_b.shape[0] == 1 and counts_a.sum() == 0


def test_a_reply_with_a_word_no_training_line_holds_is_flagged():
    from rlchat.metrics import has_unknown_word
    from rlchat.text import vocabulary

    known = vocabulary(["I don't know, Ted.", "What time is it? Twenty-five past."])
    assert "don't" in known and "twenty" in known and "," not in known
    assert not has_unknown_word("i don't know.", known)
    assert not has_unknown_word("ted -- twenty five... 25!", known)  # numbers are not words
    assert has_unknown_word("i don't finisheding.", known)
    assert has_unknown_word("'nsed", known)  # a fragment glued to an apostrophe
    assert not has_unknown_word("", known)


def test_commonest_share_counts_whole_token_sequences():
    from rlchat.metrics import commonest_share

    assert commonest_share([[1, 2], [1, 2], [3], [1]]) == 0.5  # [1] is not [1, 2]
    assert commonest_share([[4]]) == 1.0
    assert commonest_share([]) == 0.0
