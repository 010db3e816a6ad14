"""The on-disk protocol every writer, reader and compactor of the snapshot folder follows.

``<snapshots>/<dataset>/env_name=<env>/date=<YYYY-MM-DD>/<file>.parquet`` where a file is either one
batch (``<batch_id>.parquet``, written by the pipeline or a rebuild) or a compacted file
(``part-<generation>-<id>.parquet``) holding many batches, listed with their versions in its footer.
Names starting with ``.`` or ``_`` are never data: temporary files, locks and the generation counter.

Making a file appear is atomic (write a hidden temporary file, then rename). Changes that make files
*disappear* or *change* (compaction, pruning, replacing a batch) are bracketed by the dataset's
generation counter, a seqlock: odd while the change is under way, +2 when it is done. A reader that
saw the same even generation before and after its read knows no such change overlapped it; otherwise
it reads again. An exclusive ``flock`` on ``_write.lock`` serialises those changes against each
other and against the renames of writers (who hold it shared).
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

log = logging.getLogger(__name__)

GENERATION_FILE = "_generation"
WRITE_LOCK = "_write.lock"
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


def _subdirs(directory: Path, key: str) -> Iterator[tuple[str, Path]]:
    prefix = key + "="
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_dir():
            yield entry.name[len(prefix):], Path(entry.path)


def partitions(root: Path, *, envs: set[str] | None = None, since: date | None = None
               ) -> Iterator[tuple[str, str, Path]]:
    """``(env_name, date, directory)`` of every partition, pruned by env and by date before any
    file is opened."""
    floor = since.isoformat() if since else None
    for raw_env, env_dir in sorted(_subdirs(root, "env_name")):
        env = decode_env(raw_env)
        if envs is not None and env not in envs:
            continue
        for day_, day_dir in sorted(_subdirs(env_dir, "date")):
            if floor is not None and day_ < floor:
                continue
            yield env, day_, day_dir


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


# -- generation (seqlock) and locks -------------------------------------------------------------------

class LockBusy(Exception):
    """A non-blocking lock is held by someone else."""


def read_generation(root: Path) -> int:
    try:
        return int((root / GENERATION_FILE).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_generation(root: Path, value: int) -> None:
    tmp = temp_path(root, suffix=".gen")
    try:
        tmp.write_text(str(value))
        os.replace(tmp, root / GENERATION_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
def visible_change(root: Path) -> Iterator[None]:
    """Bracket a change that removes or replaces data files: exclusive write lock, odd generation
    while it runs, the next even generation after it (also after a failure, so readers never wait
    on a change that will not finish)."""
    root.mkdir(parents=True, exist_ok=True)
    with flock(root / WRITE_LOCK, exclusive=True):
        current = read_generation(root)
        start = current + 1 if current % 2 == 0 else current  # an odd value left by a crash is repaired
        _write_generation(root, start)
        try:
            yield
        finally:
            _write_generation(root, start + 1)
            fsync_dir(root)


@contextlib.contextmanager
def shared_write(root: Path) -> Iterator[None]:
    """What a writer holds while renaming a new file into place: never blocks other writers, only
    waits for a visible change in progress."""
    with flock(root / WRITE_LOCK, exclusive=False):
        yield
