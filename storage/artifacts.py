"""The artifact store: model files and training checkpoints under the data directory.

Files are written to a temporary name in the same directory and renamed into place, so a reader
(or a worker on another machine sharing the volume) never sees half a file. Paths stored in the
database are relative to the store's root so the volume can be mounted anywhere.

A write killed half-way (a ``kill -9`` during an upload's copy, a checkpoint or a policy being saved)
leaves its temporary file behind; :func:`remove_temporaries` removes such files. Several processes
may share the volume, so outside start-up of the embedded hub (which alone writes its data directory)
only temporaries untouched for :data:`TEMP_FILE_GRACE_S` are removed: a file being written is touched
with every block, and every write here finishes in seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

#: Prefixes of the temporary files the atomic writers use: uploads and adopted files here, and
#: ``.tmp-`` for checkpoints and policies (actors/rl/policy.py) and Parquet files (analytics/layout.py).
TEMP_PREFIXES = (".incoming-", ".tmp-")
#: How long a temporary file must have been left untouched before a shared volume's sweep removes it.
TEMP_FILE_GRACE_S = 3600.0


class ArtifactTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"file larger than {limit} bytes")
        self.limit = limit


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, relative: str) -> Path:
        resolved = (self.root / relative).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"artifact path escapes the store: {relative!r}")
        return resolved

    def model_path(self, model_id: str) -> str:
        return f"models/{model_id}.bin"

    def checkpoint_path(self, run_id: int) -> Path:
        path = self.root / "checkpoints" / f"run-{run_id}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_stream(self, relative: str, stream: BinaryIO, max_bytes: int, chunk: int = 1 << 20) -> tuple[str, int]:
        """Copy ``stream`` into place, hashing on the way; returns (sha256, size). Over the cap the
        partial file is removed and :class:`ArtifactTooLarge` raised."""
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := stream.read(chunk):
                    size += len(block)
                    if size > max_bytes:
                        raise ArtifactTooLarge(max_bytes)
                    digest.update(block)
                    out.write(block)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest.hexdigest(), size

    def adopt(self, relative: str, source: Path) -> None:
        """Move a finished file (e.g. a freshly saved policy) into the store atomically."""
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".incoming-{target.name}")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)

    def delete(self, relative: str) -> None:
        self.path(relative).unlink(missing_ok=True)


def remove_temporaries(root: Path, *, older_than_s: float = TEMP_FILE_GRACE_S, now: float | None = None) -> int:
    """Delete the temporary files under ``root`` last modified more than ``older_than_s`` ago (all of
    them with 0); returns how many. A file that vanishes meanwhile (renamed into place) is skipped."""
    root = Path(root)
    if not root.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if not name.startswith(TEMP_PREFIXES):
                continue
            path = Path(directory) / name
            try:
                if older_than_s > 0 and path.stat().st_mtime > cutoff:
                    continue
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
            log.info("removed %s (%d bytes), left by an interrupted write", path, size)
    return removed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
