from __future__ import annotations

import pytest

from rlchat.baselines import RandomReplyBot, RetrievalBot, make_baseline, parse_baselines
from rlchat.corpus import Pair


def pair(source: str, reply: str, conversation: str = "c1") -> Pair:
    return Pair(source, reply, movie_id="m1", conversation_id=conversation, genres=("comedy",))


TRAIN = [
    pair("How old are you?", "Thirty-five."),
    pair("What time is it?", "3:30 I guess."),
    pair("Do you want to get some dinner tonight?", "I'd love to."),
    pair("Where is my car?", "In the garage."),
]


def test_retrieval_returns_the_reply_of_an_identical_training_input():
    bot = RetrievalBot(TRAIN)
    assert bot.reply_batch(["how old are you?", "What time is it?"]) == [
        "thirty-five.",
        "3:30 i guess.",
    ]


def test_retrieval_answers_the_most_similar_training_input():
    bot = RetrievalBot(TRAIN)
    assert bot.reply_batch(["so where did you park the car?"]) == ["in the garage."]
    assert bot.reply_batch(["dinner tonight, maybe?"]) == ["i'd love to."]
    assert bot.reply_batch([]) == []


def test_random_bot_is_a_seeded_function_of_its_input():
    bot = RandomReplyBot(TRAIN * 50, seed=3)
    replies = bot.reply_batch(["hi", "Hi", "who are you?"] * 2)
    assert replies[:3] == replies[3:]  # the same input always gets the same reply
    assert replies[0] == replies[1]  # compared in normal form
    assert set(replies) <= {bot.replies[i] for i in range(len(bot.replies))}
    many = [f"line {k}" for k in range(200)]
    assert RandomReplyBot(TRAIN, seed=3).reply_batch(many) == bot.reply_batch(many)
    assert RandomReplyBot(TRAIN, seed=4).reply_batch(many) != bot.reply_batch(many)
    assert len(set(bot.reply_batch(many))) == 4  # every training reply gets drawn


def test_baseline_names_are_checked():
    assert parse_baselines("random, retrieval,random") == ["random", "retrieval"]
    assert parse_baselines("none") == parse_baselines("") == []
    with pytest.raises(ValueError, match="unknown baseline 'oracle'"):
        parse_baselines("random,oracle")
    with pytest.raises(ValueError, match="needs training pairs"):
        make_baseline("retrieval", [])
    assert make_baseline("random", TRAIN, seed=1).name == "random"
