"""The sandbox's wire format: length-framed JSON messages and raw arrays.

Both ends read what the other wrote as hostile input: after it has loaded an uploaded file, the
child may be running whatever that file made onnxruntime do. So nothing crossing the socket is a
pickle (unpickling a child's answer would hand the worker to the file). A frame is

    4 bytes   big-endian length of the rest of the frame (checked against the reader's limit)
    1 byte    kind: ``J`` (a JSON object) or ``A`` (an array)
    J: the JSON text                  A: dtype code (1 byte), ndim (1 byte), ndim × uint32 sizes, data

Control messages (load, describe, errors) are JSON; observation and action batches, one pair per
lockstep of the evaluation's environments, are arrays with a binary header, because at a few
thousand exchanges per evaluation a JSON encode and decode on each side costs more than the
forward pass.
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

JSON, ARRAY = b"J", b"A"
MAX_JSON_BYTES = 1 << 20
#: The dtypes an array may travel as, by their one-byte codes; anything else is refused on read.
_CODES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "bool")
_CODE_OF = {name: i for i, name in enumerate(_CODES)}
_DTYPES = tuple(np.dtype(name) for name in _CODES)


class WireError(Exception):
    """A frame broke the format, or the other end went away or missed its deadline.

    ``kind`` is ``"closed"`` (end of stream), ``"timeout"`` or ``"malformed"``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode_json(message: dict[str, Any]) -> bytes:
    raw = JSON + json.dumps(message, allow_nan=False, separators=(",", ":")).encode()
    return struct.pack(">I", len(raw)) + raw


def encode_array(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    code = _CODE_OF.get(array.dtype.name)
    if code is None or array.ndim > 8:
        raise ValueError(f"an array of {array.dtype}{list(array.shape)} cannot travel")
    head = ARRAY + struct.pack(f">BB{array.ndim}I", code, array.ndim, *array.shape)
    data = array.tobytes()
    return struct.pack(">I", len(head) + len(data)) + head + data


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

    Reads are buffered: a whole small frame usually arrives in one ``os.read``.
    """

    def __init__(self, fd: int, max_payload: int) -> None:
        self.fd = fd
        self.max_frame = max_payload + 64
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

    def read(self, deadline: float | None = None, poll=None) -> tuple[dict[str, Any] | None, np.ndarray | None]:
        """``(message, None)`` for a JSON frame, ``(None, array)`` for an array frame."""
        self._fill(5, deadline, poll)
        (length,) = struct.unpack_from(">I", self.buffer)
        if not 1 <= length <= self.max_frame:
            raise WireError("malformed", f"a frame of {length} bytes is not allowed")
        self._fill(4 + length, deadline, poll)
        body = bytes(self.buffer[4: 4 + length])
        del self.buffer[: 4 + length]
        kind = body[:1]
        if kind == JSON:
            if length > MAX_JSON_BYTES:
                raise WireError("malformed", f"a message of {length} bytes is over the limit")
            try:
                message = json.loads(body[1:])
            except (ValueError, RecursionError):
                raise WireError("malformed", "a message is not valid JSON") from None
            if not isinstance(message, dict):
                raise WireError("malformed", "a message is not a JSON object")
            return message, None
        if kind == ARRAY and length >= 3:
            code, ndim = body[1], body[2]
            if code >= len(_DTYPES) or ndim > 8 or length < 3 + 4 * ndim:
                raise WireError("malformed", "an array has an unknown dtype or an invalid shape")
            shape = struct.unpack_from(f">{ndim}I", body, 3)
            dtype = _DTYPES[code]
            start = 3 + 4 * ndim
            if math.prod(shape) * dtype.itemsize != length - start:
                raise WireError("malformed", "an array's shape does not match its bytes")
            return None, np.frombuffer(body, dtype=dtype, offset=start).reshape(shape)
        raise WireError("malformed", "a frame of an unknown kind")
