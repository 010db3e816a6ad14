"""The sandbox's wire format: a JSON header and an optional raw array, framed by lengths.

Both ends read what the other wrote as hostile input: after it has loaded an uploaded file, the
child may be running whatever that file made onnxruntime do. So nothing crossing the pipe is a
pickle (unpickling a child's answer would hand the worker to the file); a frame is

    4 bytes  big-endian length of the JSON header (at most ``MAX_HEADER_BYTES``)
    header   a JSON object; ``"nbytes"`` says how many payload bytes follow (0 when none)
    payload  raw array bytes, whose dtype and shape the header names

and the reader checks every length against its own limits before it allocates anything.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from typing import Any

import numpy as np

MAX_HEADER_BYTES = 1 << 20
#: Dtypes an array may travel as; anything else (object, void, strings) is refused on read.
DTYPES = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                    "uint32", "uint64", "bool"})


class WireError(Exception):
    """A frame broke the format, or the other end went away or missed its deadline.

    ``kind`` is ``"closed"`` (end of stream), ``"timeout"`` or ``"malformed"``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode(header: dict[str, Any], array: np.ndarray | None = None) -> bytes:
    payload = b""
    if array is not None:
        array = np.ascontiguousarray(array)
        header = {**header, "dtype": array.dtype.name, "shape": list(array.shape)}
        payload = array.tobytes()
    header = {**header, "nbytes": len(payload)}
    raw = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    return struct.pack(">I", len(raw)) + raw + payload


def write_all(fd: int, data: bytes, deadline: float | None = None) -> None:
    """Write every byte, waiting at most until ``deadline`` (``time.monotonic()``) for room.

    With a deadline, ``fd`` must be non-blocking: a frame usually fits the socket buffer and goes
    out in one call, and only a full buffer (a child that stopped reading) makes it wait.
    """
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise WireError("closed", "the other end closed the connection") from None
        except BlockingIOError:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WireError("timeout", "the other end did not read in time") from None
            select.select([], [fd], [], remaining)
            continue
        view = view[n:]


class Reader:
    """Reads frames from ``fd``; ``poll`` is called about every ``tick`` seconds while waiting,
    so that a caller can give up (a cancelled evaluation) without waiting for the deadline.

    Reads are buffered: a whole small frame usually arrives in one ``os.read``, which matters
    because evaluation exchanges one frame pair per lockstep of its environments.
    """

    def __init__(self, fd: int, max_payload: int) -> None:
        self.fd = fd
        self.max_payload = max_payload
        self.buffer = bytearray()

    def _fill(self, need: int, deadline: float | None, poll, tick: float = 0.1) -> None:
        while len(self.buffer) < need:
            wait = tick
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WireError("timeout", "no answer before the deadline")
                wait = min(tick, remaining)
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                if poll is not None:
                    poll()
                continue
            try:
                chunk = os.read(self.fd, max(need - len(self.buffer), 1 << 16))
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise WireError("closed", "the other end closed the connection")
            self.buffer += chunk

    def _take(self, n: int, deadline: float | None, poll) -> bytes:
        self._fill(n, deadline, poll)
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def read(self, deadline: float | None = None, poll=None) -> tuple[dict[str, Any], np.ndarray | None]:
        (length,) = struct.unpack(">I", self._take(4, deadline, poll))
        if length > MAX_HEADER_BYTES:
            raise WireError("malformed", f"a header of {length} bytes is over the limit")
        try:
            header = json.loads(self._take(length, deadline, poll))
        except (ValueError, RecursionError):
            raise WireError("malformed", "a header is not valid JSON") from None
        if not isinstance(header, dict):
            raise WireError("malformed", "a header is not a JSON object")
        nbytes = header.get("nbytes", 0)
        if not isinstance(nbytes, int) or not 0 <= nbytes <= self.max_payload:
            raise WireError("malformed", f"a payload of {nbytes!r} bytes is not allowed")
        if not nbytes:
            return header, None
        dtype, shape = header.get("dtype"), header.get("shape")
        if dtype not in DTYPES or not isinstance(shape, list) or len(shape) > 8 or not all(
                isinstance(s, int) and s >= 0 for s in shape):
            raise WireError("malformed", "an array has an unknown dtype or an invalid shape")
        if math.prod(shape) * np.dtype(dtype).itemsize != nbytes:
            raise WireError("malformed", "an array's shape does not match its bytes")
        raw = self._take(nbytes, deadline, poll)
        return header, np.frombuffer(raw, dtype=dtype).reshape(shape)
