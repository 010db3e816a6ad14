"""Snapshot partitions kept decoded in memory, so a long-running reader decodes each file once.

A snapshot file never changes under its name: a batch written again, or a compaction, makes a new
file (a new inode) and removes the old one. So rows decoded from a file stay valid for as long as
the directory lists that file with the same identity (path, inode, size, modification time). The
gateway answers analytics requests again and again over a folder that grows by a few small files
per finished experiment; without this cache every request decoded every file again, and its time
and memory grew with the folder (the load test in docs/benchmarks.md).

Each partition directory is held as one table of all its files' rows, with the row range of each
file. Bringing it up to date with a new listing drops the rows of files that went away and appends
the rows of new ones; a read then filters one contiguous table instead of thousands of tiny ones.
When the budget is spent, partitions not read for a while are evicted, least recently read first;
if none is idle, the newcomer is not kept. A partition that takes more than a quarter of the budget
(or holds a file that would) is never kept. Reads of what is not kept go to the files, as without
a cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

LARGEST_SHARE = 0.25
#: On-disk bytes times this estimate a file's decoded size before it is read (zstd Parquet of
#: these datasets decodes to about 3-6 times its size).
DECODED_PER_DISK_BYTE = 8
#: A partition read within this many seconds is not evicted to make room for another.
IDLE_S = 30.0


@dataclass(frozen=True)
class Listed:
    """A file as the reader listed it: name in the partition directory and identity (path, inode,
    size, modification time)."""

    name: str
    identity: tuple

    @property
    def disk_bytes(self) -> int:
        return self.identity[2]


@dataclass
class _Partition:
    table: pa.Table | None = None
    #: name -> (identity, first row, rows), in table order
    files: dict[str, tuple[tuple, int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    used_at: float = 0.0

    @property
    def nbytes(self) -> int:
        return self.table.nbytes if self.table is not None else 0


@dataclass(frozen=True)
class Rows:
    """A partition's rows and where each file's rows are."""

    table: pa.Table
    ranges: dict[str, tuple[int, int]]


class PartitionTables:
    """Decoded partitions of one snapshot folder, within ``max_bytes``. Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._partitions: OrderedDict[Path, _Partition] = OrderedDict()
        self._lock = threading.Lock()
        self._too_big: set[Path] = set()
        self.decoded_files = 0

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(p.nbytes for p in self._partitions.values())

    def rows(self, directory: Path, listed: Sequence[Listed], decode: Callable[[str, tuple], pa.Table]
             ) -> Rows | None:
        """The rows of exactly the ``listed`` files of ``directory``; files not seen before (or
        changed) are decoded with ``decode(name, identity)``. None if the partition is too big to
        keep: the caller reads its files itself."""
        largest = self.max_bytes * LARGEST_SHARE
        if directory in self._too_big or any(f.disk_bytes * DECODED_PER_DISK_BYTE > largest for f in listed):
            return None
        with self._lock:
            part = self._partitions.get(directory)
            if part is None:
                part = self._partitions[directory] = _Partition()
            self._partitions.move_to_end(directory)
            part.used_at = time.monotonic()
        with part.lock:
            self._update(part, listed, decode)
            rows = Rows(part.table, {name: (start, n) for name, (_, start, n) in part.files.items()})
        if rows.table.nbytes > largest:
            # Remembered, so that its reads go straight to the files instead of decoding it again.
            self._too_big.add(directory)
            self.forget(directory)
        else:
            self._fit(keep=directory)
        return rows

    def _update(self, part: _Partition, listed: Sequence[Listed], decode: Callable[[str, tuple], pa.Table]) -> None:
        wanted = {f.name: f.identity for f in listed}
        gone = [name for name, (identity, _, _) in part.files.items() if wanted.get(name) != identity]
        if gone and part.table is not None:
            keep = np.ones(part.table.num_rows, dtype=bool)
            for name in gone:
                _, start, n = part.files[name]
                keep[start:start + n] = False
            part.table = part.table.filter(pa.array(keep))
            for name in gone:
                del part.files[name]
            offset = 0
            for name, (identity, _, n) in list(part.files.items()):
                part.files[name] = (identity, offset, n)
                offset += n
        new = [f for f in listed if f.name not in part.files]
        if not new:
            return
        pieces = [part.table] if part.table is not None else []
        offset = part.table.num_rows if part.table is not None else 0
        for f in new:
            table = decode(f.name, f.identity)
            self.decoded_files += 1
            pieces.append(table)
            part.files[f.name] = (f.identity, offset, table.num_rows)
            offset += table.num_rows
        # One contiguous table: filtering it is far cheaper than filtering thousands of tiny chunks.
        part.table = pa.concat_tables(pieces).combine_chunks()

    def _fit(self, keep: Path) -> None:
        """Evict partitions idle for ``IDLE_S``, least recently read first; if that is not enough,
        do not keep ``keep`` (a scan cycling over more partitions than fit would otherwise evict,
        on every read, the partition the next read needs)."""
        now = time.monotonic()
        with self._lock:
            used = sum(p.nbytes for p in self._partitions.values())
            for directory, part in list(self._partitions.items()):
                if used <= self.max_bytes:
                    return
                if directory != keep and now - part.used_at >= IDLE_S:
                    used -= self._partitions.pop(directory).nbytes
            if used > self.max_bytes:
                self._partitions.pop(keep, None)

    def forget(self, directory: Path) -> None:
        with self._lock:
            self._partitions.pop(directory, None)


_caches: dict[Path, PartitionTables] = {}
_caches_lock = threading.Lock()


def enable(snapshots_dir: Path | str, max_bytes: int) -> None:
    """Keep decoded partitions of the datasets under ``snapshots_dir``, ``max_bytes`` in all (0
    turns the cache off). Long-lived readers (the gateway) call this at startup; one-shot jobs
    read the files directly."""
    root = Path(snapshots_dir).resolve()
    with _caches_lock:
        _caches.pop(root, None)
        if max_bytes > 0:
            _caches[root] = PartitionTables(max_bytes)


def for_dataset(dataset_root: Path) -> PartitionTables | None:
    """The cache of ``<snapshots>/<dataset>``'s snapshot folder, if it has one."""
    if not _caches:
        return None
    return _caches.get(dataset_root.resolve().parent)


def decoded_files() -> int:
    """Files decoded into any cache of this process so far."""
    with _caches_lock:
        return sum(c.decoded_files for c in _caches.values())
