from __future__ import annotations

import pytest

from rlchat.metrics import dull_rate
from rlchat.text import (
    DULL_REPLIES,
    canonical_reply,
    held_out_dull_replies,
    most_frequent,
    ngrams,
    stock_replies,
)


def test_ngrams_in_order_and_none_when_too_short():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []


def test_canonical_reply_ignores_case_spacing_and_trailing_punctuation():
    assert canonical_reply("  I  don't KNOW ...") == "i don't know"
    assert canonical_reply("i don't know !?") == "i don't know"


def test_most_frequent_returns_the_commonest_canonical_replies():
    texts = ["yes.", "no", "Yes!", "what?", "no .", "yes", "...", "..."]
    assert most_frequent(texts, k=2) == ["yes", "no"]
    assert most_frequent(texts) == ["yes", "no", "what"]
    assert dull_rate(["Yes?", "maybe"], most_frequent(texts, k=1)) == pytest.approx(1 / 2)


def test_held_out_dull_list_is_disjoint_from_what_the_stock_reward_prices():
    training = ["what?"] * 5 + ["i don't know."] * 4 + ["yes."] * 3 + ["ok."]
    stock = stock_replies(training, k=2)
    replies = ["What?"] * 9 + ["sure."] * 4 + ["I don't know"] * 3 + ["fine."] * 2 + ["no."]
    validation = [(reply, f"m{i}") for i, reply in enumerate(replies)]  # each in its own movie
    validation += [("Dartmouth.", "m0")] * 20  # one film's running line, however often
    held_out = held_out_dull_replies(validation, stock, k=2)
    assert held_out == {"sure", "fine"}  # said in the most movies, and priced by no reward
    assert not held_out & stock
    assert not held_out & {canonical_reply(d) for d in DULL_REPLIES}
