"""Observation normalisation statistics (SB3 ``VecNormalize``), in a form that cannot run code.

SB3 keeps these statistics outside the model zip, and ``VecNormalize.save`` writes them as a
pickle, which is refused here like any pickle. Accepted instead:

* JSON: ``{"obs_mean": [...], "obs_var": [...], "epsilon": 1e-8, "clip_obs": 10.0}`` (nested lists
  for multi-dimensional observations);
* ``.npz`` with arrays ``obs_mean``, ``obs_var`` and optionally 0-d ``epsilon``, ``clip_obs``.

``epsilon`` and ``clip_obs`` default to VecNormalize's own defaults (1e-8 and 10.0); when they are
missing, :func:`parse_normalization` says so in ``"assumed"`` so that the loader can report it.
The result is JSON-safe, so it can be stored with a model and handed to the sandbox as is.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError
from actors.rl.modelfiles._common import Limits

MAX_BYTES = 16 * 1024 * 1024
MAX_VALUES = 1_000_000
VECNORMALIZE_DEFAULTS = {"epsilon": 1e-8, "clip_obs": 10.0}

EXPORT_SNIPPET = (
    "import json\n"
    "vn = VecNormalize.load('vecnormalize.pkl', venv)  # or the VecNormalize you trained with\n"
    "json.dump({'obs_mean': vn.obs_rms.mean.tolist(), 'obs_var': vn.obs_rms.var.tolist(), "
    "'epsilon': vn.epsilon, 'clip_obs': vn.clip_obs}, open('vecnormalize.json', 'w'))"
)


def _pickle_refusal() -> ModelFileError:
    return ModelFileError(
        "vecnormalize_pickle",
        "this looks like VecNormalize.save() output, a pickle, which is refused: unpickling can run "
        "arbitrary code. Export the statistics as JSON instead, with the same SB3 install:\n" + EXPORT_SNIPPET,
        details={"snippet": EXPORT_SNIPPET})


def _array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelFileError("bad_normalization", f"{name} must be a (nested) list of numbers") from None
    if arr.ndim == 0 or arr.size == 0 or arr.ndim > 8:
        raise ModelFileError("bad_normalization", f"{name} must be a non-empty array, got shape {arr.shape}")
    if arr.size > MAX_VALUES:
        raise ModelFileError("too_large", f"{name} has {arr.size} values; the limit is {MAX_VALUES}")
    if not np.all(np.isfinite(arr)):
        raise ModelFileError("bad_normalization", f"{name} contains NaN or infinite values")
    return arr


def _scalar(value: Any, name: str) -> float:
    try:
        v = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise ModelFileError("bad_normalization", f"{name} must be a number") from None
    if not math.isfinite(v) or v <= 0:
        raise ModelFileError("bad_normalization", f"{name} must be a positive finite number, got {v}")
    return v


def check_normalization(stats: Any) -> dict[str, Any]:
    """Validate statistics given as a mapping (parsed JSON, or stored with a model): the JSON-safe
    ``{"obs_mean", "obs_var", "epsilon", "clip_obs", "shape", "assumed"}``."""
    if not isinstance(stats, dict):
        raise ModelFileError("bad_normalization", "normalisation statistics must be an object with obs_mean "
                             "and obs_var")
    missing = [k for k in ("obs_mean", "obs_var") if k not in stats]
    if missing:
        raise ModelFileError("bad_normalization", f"normalisation statistics lack {', '.join(missing)}")
    unknown = sorted(set(stats) - {"obs_mean", "obs_var", "epsilon", "clip_obs", "shape", "assumed"})
    if unknown:
        raise ModelFileError("bad_normalization", f"unknown normalisation fields: {', '.join(unknown)}")
    mean, var = _array(stats["obs_mean"], "obs_mean"), _array(stats["obs_var"], "obs_var")
    if mean.shape != var.shape:
        raise ModelFileError("bad_normalization", f"obs_mean has shape {list(mean.shape)} but obs_var has "
                             f"{list(var.shape)}")
    if np.any(var < 0):
        raise ModelFileError("bad_normalization", "obs_var has negative values")
    assumed = [str(a) for a in stats.get("assumed") or []]
    out: dict[str, Any] = {"obs_mean": mean.tolist(), "obs_var": var.tolist(), "shape": list(mean.shape)}
    for key, default in VECNORMALIZE_DEFAULTS.items():
        if stats.get(key) is None:
            out[key] = default
            if key not in assumed:
                assumed.append(key)
        else:
            out[key] = _scalar(stats[key], key)
    out["assumed"] = assumed
    return out


def _from_npz(data: bytes) -> dict[str, Any]:
    from actors.rl.modelfiles.npz import read_npz

    limits = Limits(max_tensors=8, max_tensor_bytes=8 * MAX_VALUES, max_total_bytes=4 * 8 * MAX_VALUES)
    arrays = read_npz(io.BytesIO(data), limits)
    unknown = sorted(set(arrays) - {"obs_mean", "obs_var", "epsilon", "clip_obs"})
    if unknown:
        raise ModelFileError("bad_normalization", f"unexpected arrays in the statistics: {', '.join(unknown)}")
    return {k: (v if v.ndim else v.item()) for k, v in arrays.items()}


def parse_normalization(data: bytes) -> dict[str, Any]:
    """Statistics from the bytes of an uploaded file (JSON or ``.npz``); a pickle is refused with
    code ``vecnormalize_pickle`` and a message showing how to export them."""
    from actors.rl.modelfiles.sniff import looks_like_pickle

    data = bytes(data)
    if len(data) > MAX_BYTES:
        raise ModelFileError("too_large", f"the statistics file is {len(data)} bytes; the limit is {MAX_BYTES}")
    if not data.strip():
        raise ModelFileError("bad_normalization", "the statistics file is empty")
    if looks_like_pickle(data[:64]):
        raise _pickle_refusal()
    if data[:4] == b"PK\x03\x04":
        return check_normalization(_from_npz(data))
    try:
        stats = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError("bad_normalization", f"the statistics are neither JSON nor .npz: {exc}. Export "
                             f"them as JSON:\n{EXPORT_SNIPPET}", details={"snippet": EXPORT_SNIPPET}) from None
    return check_normalization(stats)
