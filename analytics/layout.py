"""The on-disk protocol every writer, reader and compactor of the snapshot folder follows.

``<snapshots>/<dataset>/env_name=<env>/date=<YYYY-MM-DD>/<file>.parquet`` where a file is either one
batch (``<batch_id>.parquet``, written by the pipeline or a rebuild) or a compacted file
(``part-<time>-<id>.parquet``) holding many batches, listed with their versions in its footer.
Names starting with ``.`` or ``_`` are never data: temporary files and locks (readers list only
:func:`is_data_name` names, and hand DuckDB that list, never a glob that could match ``.tmp-*``).

Making a file appear is atomic (write a hidden temporary file, then rename) and needs no lock: a
reader either lists the new name or not, and either way reads whole files. Changes that make files
*disappear* or *change* (compaction swapping many files for one, pruning, replacing a batch's file)
run under :func:`change`; every read lists and scans its files under :func:`reading`. That is the
whole protocol between readers and changers: a shared ``flock`` per read, an exclusive one per
change, so a read never sees a compaction half done (the merged file and its inputs: rows twice; or
a listing that missed both: rows lost) and never has a listed file vanish under it. A change waits
for the reads in flight (at most one leaderboard's time); the turnstile lock keeps a stream of
overlapping reads from starving it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from urllib.parse import quote, unquote

from analytics.errors import SnapshotUnreadable

log = logging.getLogger(__name__)

WRITE_LOCK = "_write.lock"
TURNSTILE_LOCK = "_turnstile.lock"
COMPACT_LOCK = "_compact.lock"
COMPACTED_PREFIX = "part-"
SUFFIX = ".parquet"
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


def encode_env(env_name: str) -> str:
    """Percent-encode a partition value the way pyarrow and Spark decode it (``ALE/Pong-v5``)."""
    return quote(env_name, safe="")


def decode_env(segment: str) -> str:
    return unquote(segment)


def day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def check_batch_id(batch_id: str) -> str:
    if not _BATCH_ID.match(batch_id) or batch_id.startswith(COMPACTED_PREFIX):
        raise ValueError(f"invalid batch id {batch_id!r}: letters, digits, '_', '.', '-'; not starting with "
                         f"{COMPACTED_PREFIX!r}")
    return batch_id


def partition_dir(root: Path, env_name: str, when: datetime) -> Path:
    return root / f"env_name={encode_env(env_name)}" / f"date={day(when)}"


@dataclass(frozen=True)
class DataFile:
    path: Path
    env_name: str
    date: str

    @property
    def compacted(self) -> bool:
        return self.path.name.startswith(COMPACTED_PREFIX)

    @property
    def batch_id(self) -> str:
        """For a one-batch file, its batch; compacted files list theirs in the footer."""
        return self.path.name[: -len(SUFFIX)]


def is_data_name(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith((".", "_"))


def _subdirs(directory: Path, key: str, strays: list[str]) -> Iterator[tuple[str, Path]]:
    """``key=value`` subdirectories; anything else that is not hidden goes to ``strays``."""
    prefix = key + "="
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_dir():
            yield entry.name[len(prefix):], Path(entry.path)
        elif not entry.name.startswith((".", "_")):
            strays.append(entry.path)


def partitions(root: Path, *, envs: set[str] | None = None, since: date | None = None
               ) -> Iterator[tuple[str, str, Path]]:
    """``(env_name, date, directory)`` of every partition, pruned by env and by date before any
    file is opened.

    A folder laid out otherwise (``env_name=`` without ``date=``, files beside the partitions) is
    refused with :class:`SnapshotUnreadable` rather than read as empty: its rows would silently be
    missing from every answer.
    """
    floor = since.isoformat() if since else None
    strays: list[str] = []
    found = []
    for raw_env, env_dir in sorted(_subdirs(root, "env_name", strays)):
        env = decode_env(raw_env)
        days = sorted(_subdirs(env_dir, "date", strays))
        if envs is not None and env not in envs:
            continue
        for day_, day_dir in days:
            if floor is not None and day_ < floor:
                continue
            found.append((env, day_, day_dir))
    if strays:
        shown = ", ".join(str(Path(s).relative_to(root)) for s in sorted(strays)[:3])
        raise SnapshotUnreadable(
            f"{root} is not a ReSimHub snapshot dataset: expected env_name=<env>/date=<YYYY-MM-DD>/<file>.parquet, "
            f"found {shown}" + (f" and {len(strays) - 3} more" if len(strays) > 3 else ""),
            path=str(root))
    yield from found


def list_files(root: Path, *, envs: set[str] | None = None, since: date | None = None) -> list[DataFile]:
    out = []
    for env, day_, directory in partitions(root, envs=envs, since=since):
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        out.extend(DataFile(directory / n, env, day_) for n in sorted(names) if is_data_name(n))
    return out


# -- atomic files ---------------------------------------------------------------------------------

def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path(directory: Path, suffix: str = SUFFIX) -> Path:
    """A hidden temporary file beside its target, so the final rename never crosses filesystems."""
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    return Path(name)


# -- locks ----------------------------------------------------------------------------------------

class LockBusy(Exception):
    """A non-blocking lock is held by someone else."""


@contextlib.contextmanager
def flock(path: Path, *, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
    """Yield True when the lock is held, False when this filesystem cannot lock (the caller goes on
    unprotected, as it would on a platform without ``fcntl``); non-blocking, raise :class:`LockBusy`
    when another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        yield False
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:  # a read-only copy of the folder: a shared lock still works on an existing file
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            log.debug("no lock file %s: %s", path, exc)
            yield False
            return
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            raise LockBusy(str(path)) from None
        except OSError as exc:
            log.warning("cannot lock %s (%s); going on without the lock", path, exc)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def reading(root: Path) -> Iterator[None]:
    """Held by a read while it lists and scans the dataset's files: shared, so reads never wait for
    each other. A read passes the turnstile first (held only for that instant), so once a change
    waits at the turnstile, new reads queue behind it and the reads in flight drain."""
    with flock(root / TURNSTILE_LOCK, exclusive=False):
        pass
    with flock(root / WRITE_LOCK, exclusive=False):
        yield


@contextlib.contextmanager
def change(root: Path) -> Iterator[None]:
    """Held while files of the dataset are removed or replaced (a compaction's swap, pruning, a
    batch written again): no read is listing or scanning meanwhile. Changes also exclude each other."""
    root.mkdir(parents=True, exist_ok=True)
    with flock(root / TURNSTILE_LOCK, exclusive=True), flock(root / WRITE_LOCK, exclusive=True):
        yield
        fsync_dir(root)
