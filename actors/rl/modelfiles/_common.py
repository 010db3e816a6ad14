"""Pieces shared by the format readers: limits, guarded zip access, and layers → policy.

Every reader treats its input as hostile: sizes are checked from headers *before* anything is
allocated or decompressed, so a small upload cannot make the server allocate gigabytes.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.nn import ACTIVATIONS, MLP
from actors.rl.policy import MLPPolicy

MiB = 1024 * 1024

ACCEPTED_FORMATS = (
    "the ResimHub .npz format, a Stable-Baselines3 model.save() zip, a .npz of an MLP state dict, "
    "a PyTorch torch.save() state-dict checkpoint (zip), safetensors, or ONNX"
)

# State-dict activation when neither the file, its layout nor the uploader says: DQN-style
# Q-networks (like the seed model) are ReLU networks far more often than tanh ones. Always
# reported as an assumption when used (see layouts.HUB_DEFAULT).
DEFAULT_STATE_DICT_ACTIVATION = "relu"


@dataclass(frozen=True)
class Limits:
    """Caps applied while reading an untrusted model file."""

    max_bytes: int = 64 * MiB  # the file itself
    max_tensors: int = 256  # arrays (and zip members beyond a few bookkeeping ones)
    max_tensor_bytes: int = 64 * MiB  # one decoded array
    max_total_bytes: int = 256 * MiB  # all decoded arrays together
    max_compression_ratio: float = 200.0  # uncompressed / compressed, per zip member
    max_pickle_bytes: int = 4 * MiB  # torch's data.pkl holds structure only, never weights
    max_header_bytes: int = 16 * MiB  # safetensors JSON header

    @property
    def max_zip_members(self) -> int:
        return self.max_tensors + 16


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file_size(path: str | os.PathLike, limits: Limits) -> int:
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise ModelFileError("too_large", f"the file is {size} bytes; the limit is {limits.max_bytes}",
                             details={"size": size, "limit": limits.max_bytes})
    if size == 0:
        raise ModelFileError("truncated", "the file is empty")
    return size


# -- zip archives ------------------------------------------------------------------------------

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"


def zip_entry_count(fh) -> int | None:
    """Number of entries the archive's end record declares, read before ``zipfile`` builds an
    in-memory object for every entry (which is itself the memory bomb for a crafted directory).
    ``None`` when there is no end record, i.e. a truncated or damaged archive.
    """
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        return None
    total = struct.unpack("<H", tail[pos + 10: pos + 12])[0]
    loc = pos - 20
    if loc >= 0 and tail[loc: loc + 4] == _EOCD64_LOCATOR:
        offset64 = struct.unpack("<Q", tail[loc + 8: loc + 16])[0]
        if offset64 + 56 <= size:
            fh.seek(offset64)
            rec = fh.read(56)
            if rec[:4] == b"PK\x06\x06":
                total = max(total, struct.unpack("<Q", rec[32:40])[0])
    return total


def open_zip(fh, limits: Limits) -> zipfile.ZipFile:
    """Open an archive after checking member count, declared sizes and compression ratios."""
    count = zip_entry_count(fh)
    if count is None:
        raise ModelFileError("truncated", "the zip archive is truncated or damaged (no end-of-archive record)")
    if count > limits.max_zip_members:
        raise ModelFileError("too_many_tensors",
                             f"the archive declares {count} members; the limit is {limits.max_zip_members}",
                             details={"members": count, "limit": limits.max_zip_members})
    fh.seek(0)
    try:
        zf = zipfile.ZipFile(fh)
    except NotImplementedError as exc:  # a zip feature Python cannot read, e.g. "zip file version 6.4"
        raise ModelFileError("unsupported_format", f"the zip archive uses an unsupported feature: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError("truncated", f"the zip archive cannot be read: {exc}") from None
    infos = zf.infolist()
    if len(infos) > limits.max_zip_members:
        raise ModelFileError("too_many_tensors",
                             f"the archive has {len(infos)} members; the limit is {limits.max_zip_members}")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise ModelFileError("bad_content", "the archive has duplicate member names")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise ModelFileError("unsupported_format", "encrypted zip members are not supported")
        if info.file_size > limits.max_tensor_bytes + 64 * 1024:
            raise ModelFileError("too_large",
                                 f"member {info.filename!r} declares {info.file_size} bytes; "
                                 f"the per-tensor limit is {limits.max_tensor_bytes}")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ModelFileError("too_large", f"the archive expands to more than {limits.max_total_bytes} bytes")
        if (info.compress_type != zipfile.ZIP_STORED and info.file_size > 64 * 1024
                and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1)):
            raise ModelFileError("too_large",
                                 f"member {info.filename!r} has a compression ratio above "
                                 f"{limits.max_compression_ratio:g} (a zip bomb?)")
    return zf


def read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    """Read one member; its size was bounded by :func:`open_zip` and zipfile enforces it."""
    try:
        return zf.read(name)
    except KeyError:
        raise ModelFileError("bad_content", f"the archive has no member {name!r}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        # zlib errors and CRC mismatches are what a cut-off or tampered member looks like.
        raise ModelFileError("truncated", f"member {name!r} cannot be read: {exc}") from None
    except Exception as exc:  # zlib.error and friends
        raise ModelFileError("truncated", f"member {name!r} cannot be read: {exc}") from None


# -- arrays ------------------------------------------------------------------------------------

_NUMERIC_KINDS = "fiub"


def check_array_header(name: str, shape: tuple, dtype: np.dtype, limits: Limits) -> int:
    """Validate a declared array before allocating it; returns its size in bytes."""
    if dtype.hasobject:
        raise ModelFileError("pickle_refused",
                             f"array {name!r} holds Python objects, which can only be read by unpickling")
    if dtype.kind not in _NUMERIC_KINDS and dtype.kind != "U":
        raise ModelFileError("bad_content", f"array {name!r} has unsupported dtype {dtype}")
    if any((not isinstance(s, int)) or s < 0 for s in shape) or len(shape) > 8:
        raise ModelFileError("bad_content", f"array {name!r} has an invalid shape {shape}")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
    if nbytes > limits.max_tensor_bytes:
        raise ModelFileError("too_large", f"array {name!r} declares {nbytes} bytes; the limit is "
                             f"{limits.max_tensor_bytes}", details={"tensor": name, "bytes": nbytes})
    return nbytes


def shapes_of(arrays: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
    return {k: [int(s) for s in np.shape(v)] for k, v in arrays.items()}


# -- state dict -> MLP policy ------------------------------------------------------------------

_LOG_STD_KEYS = ("log_std", "actor_logstd", "logstd", "actor_log_std")


def find_log_std(arrays: Mapping[str, np.ndarray]) -> np.ndarray | None:
    for k, v in arrays.items():
        if k.rsplit(".", 1)[-1] in _LOG_STD_KEYS and np.ndim(v) <= 2:
            return np.asarray(v, dtype=np.float64).reshape(-1)
    return None


def mlp_from_layers(weights: list[np.ndarray], biases: list[np.ndarray], activation: str) -> MLP:
    """Chain PyTorch-layout layers into an :class:`MLP`, in the precision they were stored in:
    float32 checkpoints (PyTorch's default) evaluate as they were trained, with the same rounding
    (and about twice as fast as in float64)."""
    if activation not in ACTIVATIONS:
        raise ModelFileError("bad_content", f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    narrow = all(np.asarray(a).dtype.itemsize <= 4 for a in (*weights, *biases))
    try:
        return MLP.from_layers(weights, biases, activation=activation, dtype=np.float32 if narrow else np.float64)
    except ValueError as exc:
        raise ModelFileError("shape_mismatch", f"the layers do not form a chain: {exc}") from None


def mlp_from_state_dict(arrays: Mapping[str, np.ndarray], activation: str | None,
                        prefix: str | None = None) -> tuple[MLP, list[str]]:
    """The acting network of a state dict (chosen by :func:`.layouts.choose_acting`) as an MLP."""
    from actors.rl.modelfiles.layouts import choose_acting, gather_layers

    acting = choose_acting(arrays, prefix)
    weights, biases = gather_layers(arrays, acting.paths)
    return mlp_from_layers(weights, biases, activation or DEFAULT_STATE_DICT_ACTIVATION), acting.paths


def build_mlp_policy(net: MLP, spaces_: tuple[Any, Any] | None, env_id: str | None,
                     head: str | None = None, obs_shape: tuple[int, ...] | None = None,
                     action_low: np.ndarray | None = None, action_high: np.ndarray | None = None,
                     log_std: np.ndarray | None = None, meta: dict | None = None,
                     squash: bool = False, one_hot: int | None = None) -> MLPPolicy:
    """Wrap ``net`` for an environment when one is given, else with what the file says.

    Without an environment and without a stated head, outputs are taken as discrete action values
    (logits or Q-values), the common case for uploaded state dicts.
    """
    from gymnasium import spaces

    if spaces_ is not None:
        obs_space, act_space = spaces_
        if isinstance(act_space, spaces.Discrete):
            env_head = "discrete"
        elif isinstance(act_space, spaces.Box):
            env_head = "box"
        else:
            env_head = None
        if head is not None and env_head is not None and head != env_head:
            raise PolicyMismatchError(f"the model has a {head} action head but {env_id} has "
                                      f"{type(act_space).__name__} actions")
        head = env_head or head or "discrete"
        if isinstance(obs_space, spaces.Box) and int(np.prod(obs_space.shape)) == net.sizes[0]:
            obs_shape = tuple(int(s) for s in obs_space.shape)
        elif isinstance(obs_space, spaces.Discrete) and int(obs_space.n) == net.sizes[0]:
            one_hot = int(obs_space.n)  # a network over Discrete states reads them one-hot (so does SB3)
        if head == "box" and isinstance(act_space, spaces.Box) and act_space.low.size == net.sizes[-1]:
            if action_low is None:
                action_low = act_space.low
            if action_high is None:
                action_high = act_space.high
    head = head or "discrete"
    if obs_shape is None or int(np.prod(obs_shape)) != net.sizes[0]:
        obs_shape = (net.sizes[0],)
    return MLPPolicy(net, head, obs_shape, action_low=action_low, action_high=action_high,  # type: ignore[arg-type]
                     meta=meta, log_std=log_std, squash=squash, one_hot=one_hot)
