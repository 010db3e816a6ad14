"""Analytics reads in a child process of the gateway, replaced when its memory has drifted.

Why a child: the reads are pandas and Arrow work on a snapshot folder that keeps growing. In the
gateway's own process they held the GIL against every other request, and the allocators kept the
high-water memory of each burst of reads although nothing stayed referenced (docs/benchmarks.md,
"Load": +16 to +26 % RSS in five minutes with a partition cache, flat without analytics reads).
A process can give all of that back by exiting; a thread cannot.

So one child process per gateway process answers the reads, two at a time (one thread per pipe).
After each answer it reports its RSS and the bytes Arrow still holds (the partition cache and
nothing else between reads). When RSS not explained by those bytes has grown by more than
``recycle_ratio`` of what it was when the child warmed up (after its first ``warm_reads`` answers),
a fresh child is started; once it has imported what it needs it takes the new reads, and the old one exits when its
reads in flight are done. A child that dies is replaced and the read retried once. If the retry
fails too, or a read outlives ``timeout_s`` (its child is then killed), the client gets a 503 with
``Retry-After``: never a hang, never a 500.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from api.errors import Unavailable

log = logging.getLogger(__name__)

SLOTS = 2
START_TIMEOUT_S = 60.0
READ_TIMEOUT_S = 120.0
#: Answers a fresh child gives before its memory counts as its working set (measured in the load
#: test: its first reads, of a few kinds, grow it by tens of MiB before it levels off).
WARM_READS = 50
RETRY_AFTER = {"Retry-After": "2"}
#: Reads a child answers, by name; resolved in the child, so the gateway never imports pandas.
READS = {
    "recent": ("analytics.reports", "recent"),
    "experiment": ("analytics.reports", "experiment"),
    "leaderboards": ("analytics.reports", "leaderboards"),
    "compare": ("analytics.reports", "compare_agents"),
    "datasets": ("analytics.readers", "dataset_summary"),
}


class RemoteTraceback(Exception):
    """The child's traceback, chained to the exception the gateway re-raises."""

    def __str__(self) -> str:
        return self.args[0]


def read_function(name: str):
    module, attr = READS[name]
    return getattr(__import__(module, fromlist=[attr]), attr)


# --------------------------------------------------------------------------------------- child side

def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best the platform offers
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _footprint() -> tuple[int, int, int]:
    """RSS, bytes Arrow holds, and snapshot files decoded so far."""
    import pyarrow as pa

    from analytics import filecache

    return _rss_bytes(), pa.total_allocated_bytes(), filecache.decoded_files()


def portable(exc: Exception) -> Exception:
    """``exc`` if the gateway can unpickle it, else a RuntimeError naming it. An exception class
    whose ``__init__`` takes other arguments than it passes on pickles but does not unpickle; the
    gateway's ``recv`` would raise instead of returning, and the slot would be lost."""
    try:
        pickle.dumps(exc)
        copy.deepcopy(exc)  # rebuilds it from its pickling recipe, as unpickling would
    except Exception:  # noqa: BLE001 - any failure means: send something that does travel
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    return exc


def _answer(conn: Connection, snapshots_dir: str) -> None:
    from api.memory import release_unused

    while True:
        try:
            name, kwargs = conn.recv()
        except (EOFError, OSError):
            return  # the gateway closed this slot, or exited
        try:
            reply: tuple = ("ok", read_function(name)(snapshots_dir, **kwargs))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the gateway
            reply = ("raise", portable(exc), traceback.format_exc())
        release_unused()
        try:
            conn.send((*reply, _footprint()))
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("raise", RuntimeError(repr(exc)), traceback.format_exc(), _footprint()))


def serve(conns: list[Connection], ready: Connection, snapshots_dir: str, cache_bytes: int) -> None:
    """The child's main: one thread per slot, until the gateway closes every slot."""
    # Ctrl-C reaches the whole process group; the gateway decides when its child stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from analytics import filecache
    from api.memory import tune_gateway_process

    tune_gateway_process()
    filecache.enable(snapshots_dir, cache_bytes)
    for name in READS:
        read_function(name)
    ready.send(_footprint())
    ready.close()
    threads = [threading.Thread(target=_answer, args=(c, snapshots_dir), name=f"analytics-read-{i}")
               for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ------------------------------------------------------------------------------------- gateway side

@dataclass(eq=False)
class _Child:
    process: multiprocessing.process.BaseProcess
    conns: list[Connection]
    ready: Connection
    #: RSS minus Arrow's bytes after ``warm_reads`` answers; growth is measured from there
    baseline: int | None = None
    answers: int = 0
    footprint: tuple[int, int, int] | None = None
    retired: bool = False
    open_slots: int = 0
    ready_open: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_ready(self, timeout: float) -> bool:
        try:
            return self.ready.poll(timeout) and self.ready.recv() is not None
        except (EOFError, OSError):
            return False

    def close_slot(self, conn: Connection) -> None:
        conn.close()
        with self.lock:
            self.open_slots -= 1
            last = self.open_slots == 0
        if last:
            threading.Thread(target=self.reap, daemon=True, name="analytics-reap").start()

    def reap(self) -> None:
        """Wait for the child to exit once its slots are closed; kill it if it does not. Safe from
        several threads at once (the last slot's reaper and :meth:`AnalyticsReads.close`): the
        pipe is closed by one of them only, as a second ``close`` of its descriptor could close
        whatever file took that number in between."""
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        with self.lock:
            ready, self.ready_open = self.ready_open, False
        if ready:
            self.ready.close()

    def kill(self) -> None:
        self.retired = True
        if self.process.is_alive():
            self.process.kill()

    def discard(self) -> None:
        """Stop a child that never took a read."""
        self.kill()
        for conn in self.conns:
            conn.close()
        self.reap()


@dataclass(eq=False)
class _Slot:
    child: _Child
    conn: Connection


@dataclass(eq=False)
class _Waiter:
    """A read waiting for a slot. Slots are handed to waiters in arrival order: with a plain queue
    a thread returning its slot took it straight back, and a waiting read starved (seen for 120 s
    with four readers on two slots)."""

    handed: threading.Event = field(default_factory=threading.Event)
    slot: _Slot | None = None


class AnalyticsReads:
    """Runs :data:`READS` in a child process; thread-safe. The child starts at the first read (or
    :meth:`start`) and stops with :meth:`close`."""

    def __init__(self, snapshots_dir: Path | str, *, cache_bytes: int, recycle_ratio: float,
                 timeout_s: float = READ_TIMEOUT_S, slots: int = SLOTS, warm_reads: int = WARM_READS) -> None:
        self.snapshots_dir = str(snapshots_dir)
        self.cache_bytes = cache_bytes
        self.recycle_ratio = recycle_ratio
        self.timeout_s = timeout_s
        self.slots = slots
        self.warm_reads = warm_reads
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._idle: list[_Slot] = []
        self._waiters: deque[_Waiter] = deque()
        self._child: _Child | None = None
        self._recycling = False
        self._closed = False
        #: children started to replace one whose memory drifted, or that died
        self.recycled = 0
        self.replaced_after_failure = 0
        #: hooks for the gateway's metrics: the child's RSS after each answer; a replacement's reason
        self.on_answer: Callable[[int], None] | None = None
        self.on_replaced: Callable[[str], None] | None = None

    # -- lifecycle

    def start(self) -> None:
        with self._lock:
            if self._child is None and not self._closed:
                self._install(self._spawn())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
            self._close_idle()
            while self._waiters:
                self._waiters.popleft().handed.set()  # with no slot: refused below
        if child is not None:
            child.retired = True
            child.reap()

    def stats(self) -> dict[str, Any]:
        """The current child as of its last answer, and how often children were replaced."""
        child = self._child
        rss, arrow, decoded = (child.footprint if child is not None and child.footprint else (None, None, None))
        return {"pid": child.process.pid if child is not None else None, "rss_bytes": rss,
                "arrow_bytes": arrow, "decoded_files": decoded, "recycled": self.recycled,
                "replaced_after_failure": self.replaced_after_failure}

    def _spawn(self) -> _Child:
        pairs = [self._ctx.Pipe() for _ in range(self.slots)]
        ready_recv, ready_send = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=serve, name="resimhub-analytics", daemon=True,
                                    args=([c for _, c in pairs], ready_send, self.snapshots_dir, self.cache_bytes))
        process.start()
        ready_send.close()
        for _, c in pairs:
            c.close()
        return _Child(process, [p for p, _ in pairs], ready_recv, open_slots=self.slots)

    def _install(self, child: _Child) -> None:
        """Make ``child`` the one that takes new reads (caller holds ``_lock``)."""
        old, self._child = self._child, child
        if old is not None:
            old.retired = True
        self._close_idle()
        for conn in child.conns:
            self._give(_Slot(child, conn))

    def _close_idle(self) -> None:
        """Close the idle slots; only a retired child's are ever idle here (caller holds ``_lock``)."""
        for slot in self._idle:
            slot.child.close_slot(slot.conn)
        self._idle.clear()

    def _give(self, slot: _Slot) -> None:
        """A slot back from a read, or new: to the longest-waiting read (caller holds ``_lock``)."""
        if slot.child.retired or self._closed:
            slot.child.close_slot(slot.conn)
        elif self._waiters:
            waiter = self._waiters.popleft()
            waiter.slot = slot
            waiter.handed.set()
        else:
            self._idle.append(slot)

    # -- reads

    def call(self, name: str, **kwargs: Any) -> Any:
        if name not in READS:
            raise KeyError(name)
        for attempt in (1, 2):
            slot = self._checkout()
            try:
                slot.conn.send((name, kwargs))
                if not slot.conn.poll(self.timeout_s):
                    self._lost(slot, "timed out")
                    raise Unavailable(f"the analytics read took longer than {self.timeout_s:.0f} s and was stopped",
                                      code="analytics_timeout", headers=RETRY_AFTER)
                reply = slot.conn.recv()
            except (EOFError, OSError) as exc:
                self._lost(slot, f"failed: {exc!r}")
                if attempt == 2:
                    raise Unavailable("the analytics process failed twice in a row; retry shortly",
                                      code="analytics_unavailable", headers=RETRY_AFTER) from None
                continue
            status, *rest = reply
            self._checkin(slot, rest[-1])
            if status == "ok":
                return rest[0]
            exc, remote_tb = rest[0], rest[1]
            raise exc from RemoteTraceback(remote_tb)
        raise AssertionError("unreachable")

    def _checkout(self) -> _Slot:
        if self._closed:
            raise _stopped()
        self.start()
        with self._lock:
            if self._idle:
                return self._idle.pop()
            waiter = _Waiter()
            self._waiters.append(waiter)
        waiter.handed.wait(self.timeout_s)
        with self._lock:
            if waiter.slot is not None:
                return waiter.slot
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if self._closed:
            raise _stopped()
        raise Unavailable("the analytics process is busy; retry shortly", code="analytics_busy",
                          headers=RETRY_AFTER)

    def _checkin(self, slot: _Slot, footprint: tuple[int, int, int]) -> None:
        rss, arrow, _ = footprint
        unexplained = rss - arrow
        child = slot.child
        if self.on_answer is not None:
            self.on_answer(rss)
        with self._lock:
            child.footprint = footprint
            self._give(slot)
            if child.retired or self._closed:
                return
            child.answers += 1
            if child.baseline is None:
                if child.answers >= self.warm_reads:
                    child.baseline = unexplained
                return
            drift = unexplained - child.baseline
            if drift <= child.baseline * self.recycle_ratio or self._recycling:
                return
            self._recycling = True
        log.info("analytics process %s grew by %.1f MiB (%.0f %%) beyond what it holds; starting a fresh one",
                 child.process.pid, drift / 2**20, 100 * drift / child.baseline)
        threading.Thread(target=self._recycle, args=(child,), daemon=True, name="analytics-recycle").start()

    def _recycle(self, old: _Child) -> None:
        fresh = self._spawn()
        ready = fresh.wait_ready(START_TIMEOUT_S)
        with self._lock:
            self._recycling = False
            if not ready or self._closed or self._child is not old:
                fresh.discard()
                if not ready:
                    log.warning("a fresh analytics process did not start within %.0f s; keeping the old one",
                                START_TIMEOUT_S)
                return
            self._install(fresh)
            self.recycled += 1
        if self.on_replaced is not None:
            self.on_replaced("memory")

    def _lost(self, slot: _Slot, why: str) -> None:
        child = slot.child
        log.warning("analytics process %s %s; starting a fresh one", child.process.pid, why)
        child.kill()
        child.close_slot(slot.conn)
        with self._lock:
            replaced = self._child is child and not self._closed
            if replaced:
                self._install(self._spawn())
                self.replaced_after_failure += 1
        if replaced and self.on_replaced is not None:
            self.on_replaced("failure")


def _stopped() -> Unavailable:
    return Unavailable("the analytics process has been stopped (the gateway is shutting down)",
                       code="analytics_unavailable", headers=RETRY_AFTER)


_pools: dict[str, AnalyticsReads] = {}
_pools_lock = threading.Lock()


def enable(snapshots_dir: Path | str, **options: Any) -> AnalyticsReads:
    """Serve the analytics reads of ``snapshots_dir`` from a child process (replacing, and
    stopping, the one already there)."""
    root = str(Path(snapshots_dir).resolve())
    with _pools_lock:
        old = _pools.pop(root, None)
        pool = _pools[root] = AnalyticsReads(root, **options)
    if old is not None:
        old.close()
    return pool


def disable(pool: AnalyticsReads) -> None:
    """Stop ``pool``'s child; its folder's reads run in the caller's threads from now on."""
    with _pools_lock:
        if _pools.get(pool.snapshots_dir) is pool:
            del _pools[pool.snapshots_dir]
    pool.close()


def for_dir(snapshots_dir: Path | str) -> AnalyticsReads | None:
    if not _pools:
        return None
    return _pools.get(str(Path(snapshots_dir).resolve()))
