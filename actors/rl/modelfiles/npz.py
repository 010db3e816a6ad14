"""``.npz`` archives: the native format (with ``__manifest__``) and plain state-dict archives.

``numpy.load`` on a zip member allocates the array its header declares before reading the data,
so a 200-byte member can ask for terabytes. Each ``.npy`` header is therefore parsed and checked
here first (numeric dtype, size within limits, size consistent with the member) and the data read
only afterwards. Object arrays, which would need pickle, are refused.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any, BinaryIO

import numpy as np

from actors.rl.errors import ModelFileError
from actors.rl.modelfiles._common import Limits, check_array_header, open_zip
from actors.rl.policy import MANIFEST_KEY, NATIVE_FORMAT, NATIVE_FORMAT_VERSION

_fmt = np.lib.format


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> np.ndarray:
    name = info.filename[: -len(".npy")]
    try:
        with zf.open(info) as fp:
            version = _fmt.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = _fmt.read_array_header_1_0(fp)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = _fmt.read_array_header_2_0(fp)
            else:
                raise ModelFileError("bad_content", f"array {name!r} has unknown .npy version {version}")
            nbytes = check_array_header(name, tuple(shape), np.dtype(dtype), limits)
            data = fp.read(nbytes + 1)
    except ModelFileError:
        raise
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise ModelFileError("truncated", f"array {name!r} cannot be read: {exc}") from None
    except Exception as exc:  # zlib.error, CRC errors
        raise ModelFileError("truncated", f"array {name!r} cannot be read: {exc}") from None
    if len(data) < nbytes:
        raise ModelFileError("truncated", f"array {name!r} has {len(data)} of its {nbytes} bytes")
    if len(data) > nbytes:
        raise ModelFileError("bad_content", f"array {name!r} has data beyond its declared shape")
    arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)) if shape else 1)
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def read_npz(fh: BinaryIO, limits: Limits) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    total = 0
    with open_zip(fh, limits) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_tensors + 1:
            raise ModelFileError("too_many_tensors",
                                 f"the archive holds {len(infos)} arrays; the limit is {limits.max_tensors}")
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise ModelFileError("bad_content", f"unexpected member {info.filename!r} in a .npz")
            arr = _read_npy(zf, info, limits)
            total += arr.nbytes
            if total > limits.max_total_bytes:
                raise ModelFileError("too_large", f"the arrays exceed {limits.max_total_bytes} bytes in total")
            arrays[info.filename[: -len(".npy")]] = arr
    return arrays


def parse_manifest(arr: np.ndarray) -> dict[str, Any]:
    if arr.dtype.kind != "U" or arr.ndim != 0:
        raise ModelFileError("bad_manifest", "__manifest__ must be a 0-d unicode array holding JSON")
    try:
        manifest = json.loads(str(arr[()]))
    except ValueError as exc:
        raise ModelFileError("bad_manifest", f"the manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelFileError("bad_manifest", "the manifest must be a JSON object")
    if manifest.get("format") != NATIVE_FORMAT:
        raise ModelFileError("bad_manifest", f"manifest format is {manifest.get('format')!r}, "
                             f"expected {NATIVE_FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= NATIVE_FORMAT_VERSION:
        raise ModelFileError("bad_manifest", f"unsupported format_version {version!r} "
                             f"(this build reads up to {NATIVE_FORMAT_VERSION})")
    if manifest.get("kind") not in ("mlp", "tabular"):
        raise ModelFileError("bad_manifest", f"unknown model kind {manifest.get('kind')!r}")
    return manifest


def split_native(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays without the manifest, manifest)``; the manifest is validated."""
    arrays = dict(arrays)
    manifest = parse_manifest(arrays.pop(MANIFEST_KEY))
    return arrays, manifest
