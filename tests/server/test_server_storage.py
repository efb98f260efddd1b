"""Conversations (memory LRU or SQLite) and feedback storage."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlchat.server.storage import FeedbackStore, MemoryConversations, SQLiteConversations


def append(store, conversation_id: str, message: str):  # noqa: ANN001, ANN201
    return store.append(
        conversation_id, message=message, reply=f"re: {message}", model="m", decoding={"k": 1}
    )


@pytest.fixture(params=["memory", "sqlite"])
def conversations(request, tmp_path):  # noqa: ANN001, ANN201
    if request.param == "memory":
        store = MemoryConversations(max_conversations=100, turns_kept=3)
    else:
        store = SQLiteConversations(tmp_path / "history.sqlite3", turns_kept=3)
    yield store
    store.close()


def test_turns_are_numbered_and_the_last_ones_kept(conversations):
    for i in range(5):
        assert append(conversations, "c", f"m{i}").turn == i + 1
    recent = conversations.recent("c")
    assert [t.turn for t in recent] == [3, 4, 5]
    assert recent[-1].reply == "re: m4" and recent[-1].decoding == {"k": 1}
    assert conversations.get("c", 5) == recent[-1]
    assert conversations.recent("unknown") == [] and conversations.get("c", 99) is None


def test_concurrent_appends_get_distinct_numbers(conversations):
    with ThreadPoolExecutor(8) as pool:
        turns = list(pool.map(lambda i: append(conversations, "c", f"m{i}").turn, range(40)))
    assert sorted(turns) == list(range(1, 41))


def test_memory_forgets_the_least_recent_conversation():
    store = MemoryConversations(max_conversations=2, turns_kept=3)
    append(store, "a", "hi")
    append(store, "b", "hi")
    store.recent("a")  # a is now more recent than b
    append(store, "c", "hi")
    assert store.recent("b") == [] and store.recent("a") and store.recent("c")


def test_sqlite_history_survives_a_restart(tmp_path):
    path = tmp_path / "history.sqlite3"
    first = SQLiteConversations(path, turns_kept=10)
    append(first, "c", "before")
    first.close()
    second = SQLiteConversations(path, turns_kept=10)
    assert append(second, "c", "after").turn == 2
    assert [t.message for t in second.recent("c")] == ["before", "after"]
    second.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_feedback_keeps_the_rated_exchange_and_the_last_rating(tmp_path):
    store = FeedbackStore(tmp_path / "nested" / "feedback.sqlite3")
    turn = append(MemoryConversations(max_conversations=1, turns_kept=1), "c", "hello")
    store.rate(turn, rating="up", comment=None)
    store.rate(turn, rating="down", comment="rude")
    [row] = store.ratings()
    assert {k: row[k] for k in ("conversation_id", "turn", "rating", "comment", "reply")} == {
        "conversation_id": "c",
        "turn": 1,
        "rating": "down",
        "comment": "rude",
        "reply": "re: hello",
    }
    store.close()
