"""Recognising a model file by its content.

File names are chosen by the uploader and prove nothing (the seed model is a PyTorch zip named
``.pkl``), so the format is decided from magic bytes and, for zip archives, from the member
names (a Stable-Baselines3 zip has ``data`` and ``policy.pth``; a ``torch.save`` zip has
``<prefix>/data.pkl``). Formats that are known but refused get a reason of their own instead of
"unknown".
"""

from __future__ import annotations

import io
import os
import re
import struct
from typing import BinaryIO

from actors.rl.errors import ModelFileError
from actors.rl.modelfiles._common import ACCEPTED_FORMATS, Limits, open_zip
from actors.rl.modelfiles.sb3_zip import is_sb3_archive

NATIVE = "resimhub-npz"
NPZ_STATE_DICT = "npz-state-dict"
TORCH_ZIP = "torch-zip"
SB3_ZIP = "sb3-zip"
SAFETENSORS = "safetensors"
ONNX = "onnx"
FORMATS = (NATIVE, NPZ_STATE_DICT, TORCH_ZIP, SB3_ZIP, SAFETENSORS, ONNX)

_GLOBAL_RE = re.compile(rb"c[A-Za-z_][\w.]*\n[A-Za-z_][\w.]*\n")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# ModelProto fields that may follow ir_version (field 1) in a serialised ONNX model.
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0x7A, 0x82}


def pickle_refusal() -> ModelFileError:
    return ModelFileError(
        "pickle_refused",
        "plain pickle files are refused: unpickling can run arbitrary code on load. "
        f"Send {ACCEPTED_FORMATS} instead.")


def looks_like_pickle(head: bytes) -> bool:
    if len(head) >= 2 and head[0] == 0x80 and 1 <= head[1] <= 5:
        return True
    # Protocol 0/1 pickles are text-ish: a GLOBAL opcode ("c<module>\n<name>\n") or a MARK/EMPTY_*
    # opcode followed by another opcode.
    if _GLOBAL_RE.match(head):
        return True
    return len(head) >= 2 and head[:1] in (b"(", b"]", b"}", b")") and head[1:2] in (
        b"(", b"d", b"l", b"c", b"V", b"S", b"I", b"F", b"N", b"\n", b"q", b"X", b"K", b"t", b"]", b"}")


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _looks_like_onnx(head: bytes) -> bool:
    # A serialised ModelProto starts with ir_version (field 1, varint): tag 0x08 and a small
    # version, followed by another top-level field.
    if len(head) < 3 or head[0] != 0x08 or not 1 <= head[1] <= 64:
        return False
    return head[2] in _ONNX_NEXT_TAGS


def _zip_kind(fh: BinaryIO, limits: Limits) -> str:
    with open_zip(fh, limits) as zf:
        names = zf.namelist()
    if not names:
        raise ModelFileError("bad_content", "the zip archive is empty")
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise ModelFileError("unsupported_format",
                             "TorchScript archives are not supported; save the model's state_dict() "
                             f"with torch.save instead, or send {ACCEPTED_FORMATS}")
    if is_sb3_archive(names):
        return SB3_ZIP
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return TORCH_ZIP
    if all(n.endswith(".npy") for n in names):
        return NATIVE if "__manifest__.npy" in names else NPZ_STATE_DICT
    raise ModelFileError("unsupported_format",
                         "a zip archive that is neither a .npz, a PyTorch checkpoint nor a Stable-Baselines3 "
                         f"model; send {ACCEPTED_FORMATS}")


def sniff_stream(fh: BinaryIO, size: int, limits: Limits | None = None) -> str:
    limits = limits or Limits()
    fh.seek(0)
    head = fh.read(64)
    if not head:
        raise ModelFileError("truncated", "the file is empty")
    if head[:4] in _ZIP_MAGICS:
        return _zip_kind(fh, limits)
    # Before the pickle test: a safetensors header length can begin with the bytes 0x80 0x02.
    if _looks_like_safetensors(head, size):
        return SAFETENSORS
    if looks_like_pickle(head):
        raise pickle_refusal()
    if head.startswith(b"\x93NUMPY"):
        raise ModelFileError("unsupported_format",
                             "a single .npy array is not a model; save the state dict as a .npz "
                             f"(numpy.savez) or send {ACCEPTED_FORMATS}")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        raise ModelFileError("unsupported_format", f"HDF5 (Keras .h5) files are not supported; send {ACCEPTED_FORMATS}")
    if _looks_like_onnx(head):
        return ONNX
    if len(head) < 8:
        raise ModelFileError("truncated", f"the file is only {len(head)} bytes long")
    raise ModelFileError("unsupported_format", f"unrecognised file content; send {ACCEPTED_FORMATS}")


def sniff_format(path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview,
                 limits: Limits | None = None) -> str:
    """The format of a file (path) or of a complete file's bytes, decided by content.

    Returns one of :data:`FORMATS`; raises :class:`ModelFileError` for refused formats (plain
    pickle with code ``pickle_refused``), for damaged files and for unknown content. Zip archives
    are told apart by their member names, so bytes must be the whole file, not just a prefix.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        return sniff_stream(io.BytesIO(data), len(data), limits)
    with open(path_or_bytes, "rb") as fh:
        return sniff_stream(fh, os.fstat(fh.fileno()).st_size, limits)
