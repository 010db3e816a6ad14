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
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb

T = TypeVar("T")

#: Defaults when :func:`configure` was not called (a one-shot job, a test).
DEFAULT_MEMORY_MB = 1024
DEFAULT_READERS = 2

_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None
_memory_mb = DEFAULT_MEMORY_MB
_threads: int | None = None
_readers = DEFAULT_READERS
_pool: ThreadPoolExecutor | None = None


def configure(*, memory_mb: int | None = None, threads: int | None = None, readers: int | None = None) -> None:
    """Set DuckDB's memory limit and threads (``RESIMHUB_ANALYTICS_MEMORY_MB`` and
    ``RESIMHUB_ANALYTICS_THREADS``) and how many reads run at once (``RESIMHUB_ANALYTICS_READERS``);
    applies to the open database too."""
    global _memory_mb, _threads, _readers, _pool
    with _lock:
        _memory_mb = memory_mb or DEFAULT_MEMORY_MB
        _threads = threads
        if _database is not None:
            _apply(_database)
        wanted = readers or DEFAULT_READERS
        if wanted != _readers and _pool is not None:
            _pool.shutdown(wait=False)  # reads in flight finish on the old threads
            _pool = None
        _readers = wanted


_answers: OrderedDict[Hashable, Any] = OrderedDict()
#: Answers kept: one per (read, arguments) for the folder as it is; a folder that changed makes
#: every kept answer unreachable, and they age out.
ANSWERS_KEPT = 64


def answer(key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``'s result, or the one already computed under ``key`` (which must name
    everything the answer depends on: the read, its arguments and the folder's state)."""
    with _lock:
        if key in _answers:
            _answers.move_to_end(key)
            return _answers[key]
    value = compute()
    with _lock:
        _answers[key] = value
        while len(_answers) > ANSWERS_KEPT:
            _answers.popitem(last=False)
    return value


def run(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run one analytics read on the process's few reader threads and wait for its answer.

    A gateway serves requests on dozens of threads; analytics reads on all of them bought no speed
    on a few CPUs (DuckDB already scans on its own threads) and cost memory: each thread's malloc
    arena kept the high-water mark of the reads it had run, and the gateway's RSS grew by a third
    in the five-minute load test (docs/benchmarks.md, "Load"). Confined to a couple of threads,
    reads queue for their turn instead.
    """
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_readers, thread_name_prefix="analytics-read")
        pool = _pool
    return pool.submit(fn, *args, **kwargs).result()


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
