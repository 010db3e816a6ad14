"""Engines and sessions, built on demand from :class:`~storage.settings.Settings`.

SQLite gets WAL, a busy timeout and foreign keys so the embedded hub can have a gateway, a relay and
worker threads writing at once; PostgreSQL gets a modest pool. Nothing here runs at import time.

The SQLite file holds webhook signing secrets and API key hashes, so it and the data directory are
created readable by their owner only (see :func:`private_dir` and :func:`private_sqlite_file`).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.settings import Settings

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: SQLite's companions of a database file in WAL mode; it creates them with the database's mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Create ``path`` (0700) if it is missing; missing parents get the default mode.

    An existing directory is left as it is: in a cluster the data directory is a shared volume whose
    mode the operator chose for several users, and what needs protecting in it has its own mode.
    """
    Path(path).mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL, or ``None`` for an in-memory database."""
    path = database_url.split("///", 1)[-1].split("?", 1)[0] if "///" in database_url else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def private_sqlite_file(database_url: str) -> None:
    """Make sure the SQLite file exists readable by its owner only, before SQLite opens it.

    SQLite would create it with 0644 (less the umask), and gives its ``-wal`` and ``-shm`` files
    the database file's mode, so creating the empty file 0600 first covers all three. A file left
    group- or world-readable by an older version is tightened, with a warning.
    """
    path = sqlite_path(database_url)
    if path is None:
        return
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE))
        return
    except FileExistsError:
        pass
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(candidate, mode & ~0o077)
            log.warning("%s was readable by other users (mode %o); it holds secrets, now %o",
                        candidate, mode, mode & ~0o077)


#: Execution option marking a connection that only reads (see ``Database.single_statements``).
READ_ONLY_OPTION = "resimhub_read_only"


def make_engine(database_url: str, *, pool_size: int = 20) -> Engine:
    if database_url.startswith("sqlite"):
        private_sqlite_file(database_url)
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
            # Reads through Database.single_statements begin deferred: in WAL mode they then take
            # no write lock, so a crowd of pollers never queues a writer behind it.
            deferred = conn.get_execution_options().get(READ_ONLY_OPTION)
            conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

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
        # Reads that need no transaction of their own. PostgreSQL: autocommit, no BEGIN before and
        # no ROLLBACK after, half the round trips of a plain connection for the read every consumer
        # makes per message. SQLite: a deferred BEGIN instead of the write lock every other
        # transaction takes (pysqlite's own transaction handling does not mix with autocommit).
        if self.engine.dialect.name == "postgresql":
            self.single_statements = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self.single_statements = self.engine.execution_options(**{READ_ONLY_OPTION: True})
        #: Sessions for reads only (a poll): never hold the SQLite write lock, never write.
        self.reads = sessionmaker(self.single_statements, expire_on_commit=False)

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
