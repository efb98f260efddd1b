"""Conversations (memory LRU or the database) and feedback storage, on SQLite; the same stores
on a real PostgreSQL server are tested in tests/deploy."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlchat.server.storage import (
    Database,
    DatabaseConversations,
    DatabaseUnavailable,
    FeedbackStore,
    MemoryConversations,
    database_url,
)


def append(store, conversation_id: str, message: str):  # noqa: ANN001, ANN201
    return store.append(
        conversation_id, message=message, reply=f"re: {message}", model="m", decoding={"k": 1}
    )


@pytest.fixture(params=["memory", "sqlite"])
def conversations(request, tmp_path):  # noqa: ANN001, ANN201
    if request.param == "memory":
        store = MemoryConversations(max_conversations=100, turns_kept=3)
    else:
        database = Database(tmp_path / "history.sqlite3")
        store = DatabaseConversations(database, turns_kept=3)
    yield store
    if request.param == "sqlite":
        database.close()


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
    first = Database(path)
    append(DatabaseConversations(first, turns_kept=10), "c", "before")
    first.close()
    second = Database(str(path))
    conversations = DatabaseConversations(second, turns_kept=10)
    assert append(conversations, "c", "after").turn == 2
    assert [t.message for t in conversations.recent("c")] == ["before", "after"]
    second.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_feedback_keeps_the_rated_exchange_and_the_last_rating(tmp_path):
    database = Database(tmp_path / "nested" / "feedback.sqlite3")
    store = FeedbackStore(database)
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
    database.close()


def test_database_locations_name_their_backend(tmp_path):
    assert database_url(tmp_path / "a.db").get_backend_name() == "sqlite"
    url = database_url("postgresql://rlchat:secret@db.example:5432/rlchat")
    assert url.drivername == "postgresql+psycopg" and url.database == "rlchat"
    assert database_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="mysql"):
        database_url("mysql://u@h/d")
    with pytest.raises(ValueError, match="neither a path nor a URL") as typo:
        database_url("postgresql//rlchat:secret@h/db")  # a colon missing: not a file name
    assert "secret" not in str(typo.value)
    with pytest.raises(ValueError, match="not a database URL"):
        database_url("postgresql://rlchat:secret@h:port/db")


def test_a_new_rating_of_a_turn_keeps_the_exchange_it_rates(tmp_path):
    """Without a database, turn 1 of a conversation is another reply after a restart."""
    database = Database(tmp_path / "feedback.sqlite3")
    store = FeedbackStore(database)
    before = append(MemoryConversations(max_conversations=1, turns_kept=1), "c", "hello")
    after = append(MemoryConversations(max_conversations=1, turns_kept=1), "c", "bye")
    store.rate(before, rating="up", comment=None)
    store.rate(after, rating="down", comment=None)
    [row] = store.ratings()
    assert (row["message"], row["reply"], row["rating"]) == ("bye", "re: bye", "down")
    database.close()


def test_a_database_that_cannot_be_opened_is_unavailable_not_a_crash(tmp_path):
    database = Database(tmp_path / "feedback.sqlite3")
    database.check()
    (tmp_path / "feedback.sqlite3").unlink()
    (tmp_path / "feedback.sqlite3").mkdir()  # now a directory: SQLite cannot open it
    database.engine.dispose()  # drop pooled connections to the old file
    with pytest.raises(DatabaseUnavailable, match="retry later"):
        database.check()
    database.close()
