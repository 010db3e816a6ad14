"""safetensors files: an 8-byte header length, a JSON header, then raw tensor bytes.

The format cannot run code, but its header is trusted by readers for sizes and offsets, so the
header is parsed and checked here (its own size, the tensor count, dtypes, shapes against byte
ranges, ranges inside the file) before the ``safetensors`` package reads any tensor.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError
from actors.rl.modelfiles._common import Limits

_DTYPES = {"F64": "f8", "F32": "f4", "F16": "f2", "BF16": "bf16", "I64": "i8", "I32": "i4",
           "I16": "i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def _itemsize(code: str) -> int:
    return 2 if code == "bf16" else np.dtype(code).itemsize


def read_header(path: str | os.PathLike, limits: Limits) -> tuple[dict[str, Any], dict[str, str], int]:
    """``(tensor entries, metadata, data start)`` after validating every entry."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFileError("truncated", "the safetensors header is cut off")
        (n,) = struct.unpack("<Q", head)
        if n > limits.max_header_bytes:
            raise ModelFileError("too_large", f"the safetensors header declares {n} bytes; the limit is "
                                 f"{limits.max_header_bytes}")
        if 8 + n > size:
            raise ModelFileError("truncated", "the safetensors header runs past the end of the file")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError("bad_content", f"the safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ModelFileError("bad_content", "the safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise ModelFileError("bad_content", "safetensors __metadata__ must be an object")
    if len(header) > limits.max_tensors:
        raise ModelFileError("too_many_tensors", f"the file holds {len(header)} tensors; the limit is "
                             f"{limits.max_tensors}")
    data_len = size - 8 - n
    total = 0
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise ModelFileError("bad_content", f"tensor {name!r} has a malformed entry")
        code = _DTYPES.get(entry.get("dtype"))
        if code is None:
            raise ModelFileError("bad_content", f"tensor {name!r} has unsupported dtype {entry.get('dtype')!r}")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(s, int) and s >= 0 for s in shape)):
            raise ModelFileError("bad_content", f"tensor {name!r} has an invalid shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
            raise ModelFileError("bad_content", f"tensor {name!r} has invalid data offsets")
        nbytes = int(np.prod(shape, dtype=object)) * _itemsize(code) if shape else _itemsize(code)
        if nbytes > limits.max_tensor_bytes:
            raise ModelFileError("too_large", f"tensor {name!r} declares {nbytes} bytes; the limit is "
                                 f"{limits.max_tensor_bytes}")
        if offsets[1] - offsets[0] != nbytes:
            raise ModelFileError("bad_content", f"tensor {name!r}: shape {shape} does not match its byte range")
        if offsets[1] > data_len:
            raise ModelFileError("truncated", f"tensor {name!r} lies past the end of the file")
        total += nbytes
        if total > limits.max_total_bytes:
            raise ModelFileError("too_large", f"the tensors exceed {limits.max_total_bytes} bytes in total")
    return header, {str(k): str(v) for k, v in metadata.items()}, 8 + n


def read_safetensors(path: str | os.PathLike, limits: Limits) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    header, metadata, start = read_header(path, limits)
    from safetensors import safe_open

    arrays: dict[str, np.ndarray] = {}
    bf16 = [name for name, e in header.items() if e["dtype"] == "BF16"]
    try:
        if len(bf16) < len(header):
            with safe_open(os.fspath(path), framework="np") as f:
                for name in header:
                    if name not in bf16:
                        arrays[name] = np.array(f.get_tensor(name), copy=True)
    except Exception as exc:  # the package raises its own SafetensorError
        raise ModelFileError("bad_content", f"the safetensors file cannot be read: {exc}") from None
    if bf16:
        # numpy has no bfloat16: widen to float32 from the validated byte range.
        with open(path, "rb") as fh:
            for name in bf16:
                lo, hi = header[name]["data_offsets"]
                fh.seek(start + lo)
                raw = np.frombuffer(fh.read(hi - lo), dtype="<u2")
                arrays[name] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(header[name]["shape"])
    return arrays, metadata
