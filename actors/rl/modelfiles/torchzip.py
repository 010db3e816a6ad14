"""PyTorch ``torch.save`` checkpoints, read without torch and without running pickle code.

A ``torch.save`` file is a zip: ``<prefix>/data.pkl`` is a pickle describing the object (for a
state dict: an ``OrderedDict`` of tensors) and each tensor's bytes sit raw in
``<prefix>/data/<key>``. The pickle is where arbitrary code would run, because unpickling calls
whatever global it names. Here it is read by an ``Unpickler`` whose ``find_class`` resolves only
the handful of names a state dict needs, each to a harmless local stand-in; every other global is
refused before it is imported. Tensor bytes are read from the zip with sizes checked against the
limits and the declared storage size, and views are bounds-checked before any striding.
The same reader serves ``policy.pth`` inside a Stable-Baselines3 zip (:func:`read_torch_bytes`).
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import zipfile
from typing import Any, BinaryIO

import numpy as np

from actors.rl.errors import ModelFileError
from actors.rl.modelfiles._common import Limits, open_zip, read_member

# torch storage class name -> numpy dtype (bfloat16 has no numpy dtype and is widened on read).
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
_KEY_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class _Frozen:
    """Base for stand-ins: no ``__dict__``, no attribute assignment, no ``__setstate__``.

    The pickle BUILD opcode sets attributes on whatever object is on its stack; stand-ins must not
    be mutable through it.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("read-only")


class _StorageType(_Frozen):
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)


class _Storage(_Frozen):
    """The decoded 1-D contents of one ``data/<key>`` member."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        object.__setattr__(self, "array", array)


class _Tensor(_Frozen):
    """A rebuilt tensor; unwrapped to its ndarray only after unpickling has finished."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        object.__setattr__(self, "array", array)


class _Rebuild(_Frozen):
    __slots__ = ("fn",)

    def __init__(self, fn) -> None:
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args):
        return self.fn(*args)


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


class _CheckpointReader:
    def __init__(self, zf: zipfile.ZipFile, prefix: str, limits: Limits) -> None:
        self.zf = zf
        self.prefix = prefix
        self.limits = limits
        self.storages: dict[str, _Storage] = {}
        self.tensors = 0
        self.total_bytes = 0
        order = "little"
        if f"{prefix}/byteorder" in zf.namelist():
            order = read_member(zf, f"{prefix}/byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise ModelFileError("bad_content", f"unknown byte order {order!r}")
        self.endian = "<" if order == "little" else ">"
        self.storage_types = {name: _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()}
        self.rebuild_v2 = _Rebuild(self._rebuild_tensor_v2)
        self.rebuild_v1 = _Rebuild(self._rebuild_tensor)
        self.rebuild_param = _Rebuild(self._rebuild_parameter)

    # -- names the pickle may refer to ---------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils":
            if name == "_rebuild_tensor_v2":
                return self.rebuild_v2
            if name == "_rebuild_tensor":
                return self.rebuild_v1
            if name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
                return self.rebuild_param
        if module == "torch" and name in self.storage_types:
            return self.storage_types[name]
        raise ModelFileError(
            "unsafe_global",
            f"the checkpoint refers to {module}.{name}, which is not allowed: only state dicts of "
            "plain tensors are accepted (save model.state_dict(), not the model object)",
            details={"global": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ModelFileError("bad_content", f"unexpected persistent id {type(pid).__name__}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise ModelFileError("bad_content", "storage of an unknown type")
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ModelFileError("bad_content", "storage key is not a plain name")
        if not isinstance(numel, int) or numel < 0:
            raise ModelFileError("bad_content", f"storage {key} has an invalid size")
        if key in self.storages:
            return self.storages[key]
        if len(self.storages) >= self.limits.max_tensors:
            raise ModelFileError("too_many_tensors",
                                 f"the checkpoint has more than {self.limits.max_tensors} storages")
        itemsize = 2 if stype.dtype == "bf16" else np.dtype(stype.dtype).itemsize
        nbytes = numel * itemsize
        if nbytes > self.limits.max_tensor_bytes:
            raise ModelFileError("too_large", f"storage {key} declares {nbytes} bytes; the limit is "
                                 f"{self.limits.max_tensor_bytes}")
        self.total_bytes += nbytes
        if self.total_bytes > self.limits.max_total_bytes:
            raise ModelFileError("too_large", f"the tensors exceed {self.limits.max_total_bytes} bytes in total")
        name = f"{self.prefix}/data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise ModelFileError("truncated", f"the checkpoint lacks the data of storage {key}") from None
        if info.file_size < nbytes:
            raise ModelFileError("truncated", f"storage {key} has {info.file_size} of its {nbytes} bytes")
        raw = read_member(self.zf, name)[:nbytes]
        if stype.dtype == "bf16":
            array = _bf16_to_f32(np.frombuffer(raw, dtype=self.endian + "u2"))
        elif stype.dtype == "?":
            array = np.frombuffer(raw, dtype=np.bool_)
        else:
            array = np.frombuffer(raw, dtype=self.endian + stype.dtype).astype(stype.dtype)
        storage = _Storage(array)
        self.storages[key] = storage
        return storage

    # -- tensor reconstruction -----------------------------------------------------------------
    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False, hooks=None,
                           metadata=None, *rest) -> _Tensor:
        return self._rebuild_tensor(storage, offset, size, stride)

    def _rebuild_tensor(self, storage, offset, size, stride) -> _Tensor:
        if not isinstance(storage, _Storage):
            raise ModelFileError("bad_content", "a tensor refers to something that is not a storage")
        if not (isinstance(offset, int) and offset >= 0 and isinstance(size, tuple) and isinstance(stride, tuple)
                and len(size) == len(stride) and len(size) <= 8
                and all(isinstance(v, int) and v >= 0 for v in (*size, *stride))):
            raise ModelFileError("bad_content", "a tensor has an invalid offset, size or stride")
        self.tensors += 1
        if self.tensors > self.limits.max_tensors:
            raise ModelFileError("too_many_tensors", f"the checkpoint has more than {self.limits.max_tensors} tensors")
        base = storage.array
        count = int(np.prod(size, dtype=object)) if size else 1
        if count == 0:
            return _Tensor(np.zeros(size, dtype=base.dtype))
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= base.size:
            raise ModelFileError("bad_content", f"a tensor of size {size} reaches past its storage "
                                 f"({base.size} elements)")
        if count * base.itemsize > self.limits.max_tensor_bytes:
            raise ModelFileError("too_large", f"a tensor of size {size} exceeds the per-tensor limit")
        view = np.lib.stride_tricks.as_strided(
            base[offset:], shape=size, strides=tuple(s * base.itemsize for s in stride), writeable=False)
        return _Tensor(np.array(view, copy=True))

    def _rebuild_parameter(self, data, requires_grad=False, hooks=None, *rest) -> _Tensor:
        if not isinstance(data, _Tensor):
            raise ModelFileError("bad_content", "a parameter wraps something that is not a tensor")
        return data


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that can only build dicts, lists, scalars and tensors (see the module doc)."""

    def __init__(self, data: bytes, reader: _CheckpointReader) -> None:
        super().__init__(io.BytesIO(data))
        self._reader = reader

    def find_class(self, module: str, name: str) -> Any:
        return self._reader.find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        return self._reader.persistent_load(pid)


def _unwrap(obj: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """Replace stand-ins by arrays; bounded so a pickle of shared references cannot explode."""
    budget = budget if budget is not None else [100_000]
    budget[0] -= 1
    if budget[0] < 0 or depth > 32:
        raise ModelFileError("bad_content", "the checkpoint's structure is too large or too deep")
    if isinstance(obj, _Tensor):
        return obj.array
    if isinstance(obj, dict):
        return {k: _unwrap(v, depth + 1, budget) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_unwrap(v, depth + 1, budget) for v in obj]
    if isinstance(obj, (_Frozen,)) or callable(obj):
        raise ModelFileError("bad_content", "the checkpoint holds something other than data and tensors")
    return obj


_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "policy", "actor", "q_network", "network", "net")


def _flat_tensor_dict(obj: Any) -> dict[str, np.ndarray]:
    """The state dict inside a checkpoint: the top level, or one nested dict of tensors."""
    if not isinstance(obj, dict):
        raise ModelFileError("bad_content", f"the checkpoint holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, np.ndarray)}
    if tensors:
        return tensors
    nested = [k for k, v in obj.items() if isinstance(v, dict)
              and any(isinstance(t, np.ndarray) for t in v.values())]
    for key in _NESTED_KEYS:
        if key in nested:
            return _flat_tensor_dict(obj[key])
    if len(nested) == 1:
        return _flat_tensor_dict(obj[nested[0]])
    raise ModelFileError("bad_content", "no state dict of tensors found in the checkpoint"
                         + (f" (candidates: {', '.join(map(str, nested))})" if nested else ""))


def read_torch_zip(fh: BinaryIO, limits: Limits) -> dict[str, np.ndarray]:
    with open_zip(fh, limits) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkls) != 1:
            raise ModelFileError("bad_content", "a PyTorch checkpoint has exactly one data.pkl")
        prefix = pkls[0].rsplit("/", 1)[0] if "/" in pkls[0] else ""
        info = zf.getinfo(pkls[0])
        if info.file_size > limits.max_pickle_bytes:
            raise ModelFileError("too_large", f"data.pkl is {info.file_size} bytes; the limit is "
                                 f"{limits.max_pickle_bytes}")
        reader = _CheckpointReader(zf, prefix, limits)
        data = read_member(zf, pkls[0])
        try:
            obj = _RestrictedUnpickler(data, reader).load()
        except ModelFileError:
            raise
        except MemoryError:
            raise ModelFileError("too_large", "the checkpoint's structure does not fit in memory") from None
        except Exception as exc:  # UnpicklingError, EOFError, TypeError from a malformed stream…
            raise ModelFileError("bad_content", f"the checkpoint's data.pkl is malformed: "
                                 f"{type(exc).__name__}: {exc}") from None
    return _flat_tensor_dict(_unwrap(obj))


def read_torch_bytes(raw: bytes, limits: Limits, member: str = "checkpoint") -> dict[str, np.ndarray]:
    """A ``torch.save`` checkpoint held in memory (e.g. ``policy.pth`` inside an SB3 zip), read by
    the same restricted unpickler as a checkpoint file."""
    if raw[:4] != b"PK\x03\x04":
        raise ModelFileError("unsupported_format", f"{member} is not in torch.save's zip format (a legacy "
                             "or plain pickle, which is refused)")
    return read_torch_zip(io.BytesIO(raw), limits)
