"""What the server remembers: recent turns of each conversation, and users' ratings of replies.

Conversations live in a bounded in-memory LRU, or in SQLite when a history database is given
(the one choice that survives restarts and is shared by several worker processes). Ratings
always go to SQLite, together with the message and reply they rate: the raw material for
learning from users later.

SQLite is used from the event loop's worker threads: one connection per store, guarded by a
lock, in WAL mode so that readers (and other worker processes) do not block the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Turn:
    """One exchange of a conversation; ``turn`` counts from 1."""

    conversation_id: str
    turn: int
    message: str
    reply: str
    model: str
    decoding: dict[str, Any] = field(default_factory=dict)


class ConversationStore(Protocol):
    def recent(self, conversation_id: str) -> list[Turn]:
        """The last turns kept, oldest first; empty for an unknown conversation."""
        ...

    def append(
        self,
        conversation_id: str,
        *,
        message: str,
        reply: str,
        model: str,
        decoding: dict[str, Any],
    ) -> Turn:
        """Record the next turn; its number is assigned here, so concurrent appends agree."""
        ...

    def get(self, conversation_id: str, turn: int) -> Turn | None: ...

    def close(self) -> None: ...


class MemoryConversations:
    """The last ``turns_kept`` turns of the ``max_conversations`` most recent conversations."""

    def __init__(self, *, max_conversations: int, turns_kept: int) -> None:
        self.max_conversations = max_conversations
        self.turns_kept = turns_kept
        self._turns: OrderedDict[str, deque[Turn]] = OrderedDict()
        self._lock = threading.Lock()

    def recent(self, conversation_id: str) -> list[Turn]:
        with self._lock:
            turns = self._turns.get(conversation_id)
            if turns is None:
                return []
            self._turns.move_to_end(conversation_id)
            return list(turns)

    def append(
        self,
        conversation_id: str,
        *,
        message: str,
        reply: str,
        model: str,
        decoding: dict[str, Any],
    ) -> Turn:
        with self._lock:
            turns = self._turns.get(conversation_id)
            if turns is None:
                turns = self._turns[conversation_id] = deque(maxlen=self.turns_kept)
                if len(self._turns) > self.max_conversations:
                    self._turns.popitem(last=False)
            self._turns.move_to_end(conversation_id)
            number = turns[-1].turn + 1 if turns else 1
            turn = Turn(conversation_id, number, message, reply, model, decoding)
            turns.append(turn)
            return turn

    def get(self, conversation_id: str, turn: int) -> Turn | None:
        with self._lock:
            for kept in self._turns.get(conversation_id, ()):
                if kept.turn == turn:
                    return kept
        return None

    def close(self) -> None:
        pass


class SQLiteDatabase:
    """One connection, one lock, WAL mode; ``transaction()`` commits or rolls back."""

    def __init__(self, path: Path, schema: str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # Waits for other worker processes' writes instead of failing at once.
        self._connection = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
        self._connection.row_factory = sqlite3.Row
        with self.transaction() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(schema)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._connection:
            yield self._connection

    def close(self) -> None:
        with self._lock:
            self._connection.close()


CONVERSATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    message TEXT NOT NULL,
    reply TEXT NOT NULL,
    model TEXT NOT NULL,
    decoding TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, turn)
);
"""


class SQLiteConversations:
    """Every turn of every conversation, on disk; ``recent`` reads the last ``turns_kept``."""

    def __init__(self, path: Path, *, turns_kept: int) -> None:
        self.db = SQLiteDatabase(path, CONVERSATIONS_SCHEMA)
        self.turns_kept = turns_kept

    def recent(self, conversation_id: str) -> list[Turn]:
        with self.db.transaction() as db:
            rows = db.execute(
                "SELECT * FROM turns WHERE conversation_id = ? ORDER BY turn DESC LIMIT ?",
                (conversation_id, self.turns_kept),
            ).fetchall()
        return [_turn(row) for row in reversed(rows)]

    def append(
        self,
        conversation_id: str,
        *,
        message: str,
        reply: str,
        model: str,
        decoding: dict[str, Any],
    ) -> Turn:
        with self.db.transaction() as db:
            # The number is computed inside the INSERT, so two worker processes cannot collide.
            number = db.execute(
                "INSERT INTO turns SELECT ?, COALESCE(MAX(turn), 0) + 1, ?, ?, ?, ?, ? "
                "FROM turns WHERE conversation_id = ? RETURNING turn",
                (
                    conversation_id,
                    message,
                    reply,
                    model,
                    json.dumps(decoding),
                    time.time(),
                    conversation_id,
                ),
            ).fetchone()[0]
        return Turn(conversation_id, number, message, reply, model, decoding)

    def get(self, conversation_id: str, turn: int) -> Turn | None:
        with self.db.transaction() as db:
            row = db.execute(
                "SELECT * FROM turns WHERE conversation_id = ? AND turn = ?",
                (conversation_id, turn),
            ).fetchone()
        return None if row is None else _turn(row)

    def close(self) -> None:
        self.db.close()


def _turn(row: sqlite3.Row) -> Turn:
    return Turn(
        conversation_id=row["conversation_id"],
        turn=row["turn"],
        message=row["message"],
        reply=row["reply"],
        model=row["model"],
        decoding=json.loads(row["decoding"]),
    )


FEEDBACK_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    conversation_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment TEXT,
    message TEXT NOT NULL,
    reply TEXT NOT NULL,
    model TEXT NOT NULL,
    decoding TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, turn)
);
"""


class FeedbackStore:
    """Ratings of replies; a second rating of the same turn replaces the first."""

    def __init__(self, path: Path) -> None:
        self.db = SQLiteDatabase(path, FEEDBACK_SCHEMA)

    def rate(self, turn: Turn, *, rating: str, comment: str | None) -> None:
        with self.db.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    turn.conversation_id,
                    turn.turn,
                    rating,
                    comment,
                    turn.message,
                    turn.reply,
                    turn.model,
                    json.dumps(turn.decoding),
                    time.time(),
                ),
            )

    def ratings(self) -> list[dict[str, Any]]:
        """Every stored rating, oldest first (for export and tests)."""
        with self.db.transaction() as db:
            rows = db.execute("SELECT * FROM feedback ORDER BY created_at").fetchall()
        return [dict(row) for row in rows]

    def close(self) -> None:
        self.db.close()
