"""Engines and sessions, built on demand from :class:`~storage.settings.Settings`.

SQLite gets WAL, a busy timeout and foreign keys so the embedded hub can have a gateway, a relay and
worker threads writing at once; PostgreSQL gets a modest pool. Nothing here runs at import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.settings import Settings


def make_engine(database_url: str, *, pool_size: int = 20) -> Engine:
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            database_url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # pysqlite's own transaction handling defers BEGIN; take the write lock at BEGIN instead so
        # two writers queue on the busy timeout rather than failing with "database is locked".
        @event.listens_for(engine, "connect")
        def _no_pysqlite_tx(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn) -> None:  # pragma: no cover - trivial
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No pre-ping: it costs a round trip per checkout. A connection found dead raises a disconnect
    # error, which makes SQLAlchemy invalidate the whole pool, so the next checkout reconnects.
    return create_engine(database_url, pool_size=pool_size, max_overflow=10, pool_recycle=1800)


class Database:
    """An engine plus a session factory; sessions never autocommit."""

    def __init__(self, settings: Settings, *, pool_size: int = 20) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url, pool_size=pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that rolls back on error; callers commit explicitly."""
        with self.sessions() as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
