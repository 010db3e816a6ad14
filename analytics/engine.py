"""The process's DuckDB database, which scans the snapshot files for every analytics read.

Why DuckDB: it reads only the columns and row groups a query needs, filters and deduplicates
inside the scan on all its threads without holding the GIL, and stays within a fixed memory limit
(spilling beyond it) — where decoding Parquet into pandas per request made the gateway's memory
follow its largest read and needed a child process, a decoded-file cache and allocator tuning to
keep it in check (gone with it). Statistics stay in :mod:`actors.rl.stats`, on what a query returns.

One in-memory database per process, created at the first read (never at import). A DuckDB
connection must not be used by two threads at once, so every read takes a cursor of its own
(:func:`cursor`): cursors of one database run concurrently and share its memory limit and threads.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import duckdb

#: Defaults when :func:`configure` was not called (a one-shot job, a test).
DEFAULT_MEMORY_MB = 1024

_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None
_memory_mb = DEFAULT_MEMORY_MB
_threads: int | None = None


def configure(*, memory_mb: int | None = None, threads: int | None = None) -> None:
    """Set DuckDB's memory limit and threads (``RESIMHUB_ANALYTICS_MEMORY_MB`` and
    ``RESIMHUB_ANALYTICS_THREADS``); applies to the open database too."""
    global _memory_mb, _threads
    with _lock:
        _memory_mb = memory_mb or DEFAULT_MEMORY_MB
        _threads = threads
        if _database is not None:
            _apply(_database)


def _apply(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"SET memory_limit = '{int(_memory_mb)}MiB'")
    # Where a query beyond the limit spills (created only then); DuckDB's default is ./.tmp of
    # whatever directory the process runs in, shared by every process started there.
    spill = Path(tempfile.gettempdir()) / f"resimhub-analytics-{os.getpid()}"
    con.execute("SET temp_directory = $dir", {"dir": str(spill)})
    if _threads:
        con.execute(f"SET threads = {int(_threads)}")
    else:
        con.execute("RESET threads")


def cursor() -> duckdb.DuckDBPyConnection:
    """A connection of its own to the process's database, for one read (close it after)."""
    global _database
    with _lock:
        if _database is None:
            con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
            _apply(con)
            _database = con
        return _database.cursor()
