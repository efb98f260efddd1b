"""What the server remembers: recent turns of each conversation, and users' ratings of replies.

Conversations live in a bounded in-memory LRU, or in the database when one is given (the
choice that survives restarts and is shared by worker processes and by replicas behind a
proxy). Ratings always go to the database, with the message and reply they rate: the raw
material for learning from users later.

The database is SQLite (a file, the embedded default) or PostgreSQL (several replicas, one
database), through SQLAlchemy Core; the tables are created on start. A database that cannot
be reached raises ``DatabaseUnavailable``, which the API answers with a 503.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)


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


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (stopped, network down): retry later."""


def database_url(location: str | Path) -> sa.URL:
    """A SQLite path, ``sqlite:///path`` or ``postgresql://...`` as a SQLAlchemy URL (with the
    psycopg 3 driver for PostgreSQL); anything else is refused by name."""
    text = str(location)
    if "://" not in text and text.lower().startswith("postgres"):
        raise ValueError(f"{_hidden(text)} is neither a path nor a URL (postgresql://...)")
    if "://" not in text:
        return sa.URL.create("sqlite", database=str(Path(text).expanduser().resolve()))
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):  # a bad port, say
        raise ValueError(f"{_hidden(text)} is not a database URL") from None
    backend = url.get_backend_name()
    if backend == "postgres":  # the spelling Heroku and others use
        url, backend = url.set(drivername="postgresql"), "postgresql"
    if backend == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return url
    raise ValueError(f"unsupported database {url.drivername!r}: use a SQLite path or postgresql://")


def _hidden(text: str) -> str:
    """A location fit for an error message: whatever follows a colon may be a password."""
    return text.split(":", 1)[0] + (":..." if ":" in text else "")


METADATA = sa.MetaData()
# The same tables (and types) as the earlier hand-written SQLite schema: old files still open.
TURNS = sa.Table(
    "turns",
    METADATA,
    sa.Column("conversation_id", sa.Text, primary_key=True),
    sa.Column("turn", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("reply", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("decoding", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
FEEDBACK = sa.Table(
    "feedback",
    METADATA,
    sa.Column("conversation_id", sa.Text, primary_key=True),
    sa.Column("turn", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("rating", sa.Text, sa.CheckConstraint("rating IN ('up', 'down')"), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("reply", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("decoding", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


LOCK_CONVERSATION = sa.text("SELECT pg_advisory_xact_lock(hashtext(:id))")
# Replicas starting together on an empty database would race to create the tables.
LOCK_SCHEMA = sa.text("SELECT pg_advisory_xact_lock(hashtext('rlchat schema'))")


class Database:
    """An engine on ``location``, its tables made on first reach; ``transaction()`` commits or
    rolls back, and turns a lost connection into ``DatabaseUnavailable``. The stores share
    one; whoever made it closes it."""

    def __init__(self, location: str | Path) -> None:
        self.url = database_url(location)
        self.engine = _engine(self.url)
        self._schema_made = False
        self._schema_lock = threading.Lock()
        try:
            self._make_schema()
        except DatabaseUnavailable:
            # A replica may start before its database: it answers, not ready, until then.
            logger.warning("the database %s is not reachable yet; retrying on use", self.name)

    def _make_schema(self) -> None:
        if self._schema_made:
            return
        with self._schema_lock, self._begin() as connection:
            if not self._schema_made:
                if self.backend == "postgresql":
                    connection.execute(LOCK_SCHEMA)
                METADATA.create_all(connection)
                self._schema_made = True

    @property
    def backend(self) -> str:
        """sqlite or postgresql."""
        return self.url.get_backend_name()

    @property
    def name(self) -> str:
        """The URL without its password: safe to log."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        self._make_schema()
        with self._begin() as connection:
            yield connection

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as error:
            # The DB-API's class for failures of the database, not of the query: refused or
            # lost connections, a file that cannot be opened, a lock held too long, a
            # statement past its timeout; and every pooled connection busy.
            raise DatabaseUnavailable(
                f"the database ({self.backend}) is not reachable; retry later"
            ) from error

    def check(self) -> None:
        """Raise ``DatabaseUnavailable`` unless a query gets through now (readiness)."""
        with self.transaction() as connection:
            connection.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()


def _engine(url: sa.URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # Waits for other processes' writes instead of failing at once.
        engine = sa.create_engine(
            url,
            connect_args={"timeout": 10.0, "check_same_thread": False},
            hide_parameters=True,
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a connection the server dropped (a restart) is replaced, not handed out.
    # hide_parameters: errors (and so logs) carry the SQL, never what users wrote.
    # statement_timeout and keepalives: a hung server frees the threads within seconds.
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=8,
        max_overflow=8,
        pool_timeout=5,
        hide_parameters=True,
        connect_args={
            "connect_timeout": 3,
            "options": "-c statement_timeout=5000",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 2,
        },
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL: readers (and other worker processes) do not block the writer.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class DatabaseConversations:
    """Every turn of every conversation in the database; ``recent`` reads the last
    ``turns_kept``."""

    def __init__(self, database: Database, *, turns_kept: int) -> None:
        self.db = database
        self.turns_kept = turns_kept

    def recent(self, conversation_id: str) -> list[Turn]:
        query = (
            sa.select(TURNS)
            .where(TURNS.c.conversation_id == conversation_id)
            .order_by(TURNS.c.turn.desc())
            .limit(self.turns_kept)
        )
        with self.db.transaction() as db:
            rows = db.execute(query).mappings().all()
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
        # The number is computed inside the INSERT. SQLite takes its write lock before the
        # statement reads; PostgreSQL reads a snapshot, so appends to one conversation (from any
        # replica) are serialised by a transaction-scoped advisory lock on its id.
        next_turn = (
            sa.select(sa.func.coalesce(sa.func.max(TURNS.c.turn), 0) + 1)
            .where(TURNS.c.conversation_id == conversation_id)
            .scalar_subquery()
        )
        values = {
            "conversation_id": conversation_id,
            "turn": next_turn,
            "message": message,
            "reply": reply,
            "model": model,
            "decoding": json.dumps(decoding),
            "created_at": time.time(),
        }
        with self.db.transaction() as db:
            if self.db.backend == "postgresql":
                db.execute(LOCK_CONVERSATION, {"id": conversation_id})
            number = db.execute(TURNS.insert().values(values).returning(TURNS.c.turn)).scalar_one()
        return Turn(conversation_id, number, message, reply, model, decoding)

    def get(self, conversation_id: str, turn: int) -> Turn | None:
        query = sa.select(TURNS).where(
            TURNS.c.conversation_id == conversation_id, TURNS.c.turn == turn
        )
        with self.db.transaction() as db:
            row = db.execute(query).mappings().first()
        return None if row is None else _turn(row)


def _turn(row: Any) -> Turn:
    return Turn(
        conversation_id=row["conversation_id"],
        turn=row["turn"],
        message=row["message"],
        reply=row["reply"],
        model=row["model"],
        decoding=json.loads(row["decoding"]),
    )


class FeedbackStore:
    """Ratings of replies; a second rating of the same turn replaces the first."""

    def __init__(self, database: Database) -> None:
        self.db = database
        dialect = postgresql if database.backend == "postgresql" else sqlite
        self._insert = dialect.insert

    def rate(self, turn: Turn, *, rating: str, comment: str | None) -> None:
        values = {
            "conversation_id": turn.conversation_id,
            "turn": turn.turn,
            "rating": rating,
            "comment": comment,
            "message": turn.message,
            "reply": turn.reply,
            "model": turn.model,
            "decoding": json.dumps(turn.decoding),
            "created_at": time.time(),
        }
        insert = self._insert(FEEDBACK).values(values)
        upsert = insert.on_conflict_do_update(
            index_elements=[FEEDBACK.c.conversation_id, FEEDBACK.c.turn],
            # Every column: after a restart without a database, turn 1 may be another reply.
            set_={c.name: insert.excluded[c.name] for c in FEEDBACK.columns if not c.primary_key},
        )
        with self.db.transaction() as db:
            db.execute(upsert)

    def ratings(self) -> list[dict[str, Any]]:
        """Every stored rating, oldest first (for export and tests)."""
        with self.db.transaction() as db:
            rows = db.execute(sa.select(FEEDBACK).order_by(FEEDBACK.c.created_at)).mappings()
            return [dict(row) for row in rows]
