"""Loading untrusted model files into greedy policies (docs/models.md, "Formats" and "The sandbox").

Accepted, recognised by content (never by file name):

* ``resimhub-npz``: the project's own ``.npz`` with a JSON ``__manifest__`` (see
  :func:`actors.rl.policy.save_policy`);
* ``sb3-zip``: a Stable-Baselines3 ``model.save()`` zip (PPO, A2C, DQN, SAC, TD3 ``MlpPolicy``),
  read from the plain JSON of ``data`` and the ``policy.pth`` state dict; the cloudpickle
  (``:serialized:``) fields are never decoded (:mod:`.sb3_zip`);
* ``npz-state-dict``: a ``.npz`` of a state dict (``net.0.weight``, ``net.0.bias``, …);
* ``torch-zip``: a ``torch.save(model.state_dict())`` checkpoint, read without torch and without
  executing pickle code (:mod:`.torchzip`);
* ``safetensors``;
* ``onnx``: run by onnxruntime.

Plain pickle is refused (code ``pickle_refused``, HTTP 415): unpickling can run arbitrary code.

State dicts (npz, torch, safetensors) store weights, not how they act. The acting network is picked
by role from the layout (:mod:`.layouts`: SB3 ``policy.state_dict()``, CleanRL agents, a plain
``nn.Sequential``; ``prefix`` names it explicitly; several candidates left → ``ambiguous_layers``).
The activation comes from the uploader (``activation``), the file, or the layout's framework
default, **else ReLU**; whatever the hub had to assume is listed in ``manifest["assumptions"]``
with its reason, next to ``manifest["acting_network"]`` (which layers act, and why) and
``manifest["preprocessing"]``. A Box output is the mean clipped to the bounds, or (SB3 SAC/TD3
layouts, or ``action_scaling="tanh"``) tanh rescaled to the bounds.

``normalization`` (see :func:`.normalization.parse_normalization`) puts SB3 ``VecNormalize``
statistics in front of any policy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError
from actors.rl.modelfiles._common import (
    ACCEPTED_FORMATS,
    DEFAULT_STATE_DICT_ACTIVATION,
    Limits,
    build_mlp_policy,
    check_file_size,
    mlp_from_state_dict,
    sha256_file,
    shapes_of,
)
from actors.rl.modelfiles.normalization import check_normalization, parse_normalization
from actors.rl.modelfiles.sniff import (
    FORMATS,
    NATIVE,
    NPZ_STATE_DICT,
    ONNX,
    SAFETENSORS,
    SB3_ZIP,
    TORCH_ZIP,
    sniff_format,
    sniff_stream,
)
from actors.rl.modelfiles.state_dicts import ACTION_SCALINGS, assumption, state_dict_policy
from actors.rl.nn import ACTIVATIONS
from actors.rl.policy import NormalizedPolicy, Policy, TabularPolicy, check_policy_spaces

__all__ = [
    "ACCEPTED_FORMATS", "ACTION_SCALINGS", "DEFAULT_STATE_DICT_ACTIVATION", "FORMATS", "Limits", "LoadedModel",
    "NATIVE", "NPZ_STATE_DICT", "ONNX", "SAFETENSORS", "SB3_ZIP", "TORCH_ZIP", "load_policy",
    "parse_normalization", "sniff_format",
]

_DEFAULT = Limits()


@dataclass
class LoadedModel:
    """A policy read from a file, with what identifies and describes the file.

    ``manifest`` is the file's own manifest for the native format; for state dicts and SB3 zips
    it records what was read and inferred so that every choice is visible: ``activation`` (and
    ``activation_source``: ``file``, ``uploader`` or ``assumed``), ``acting_network`` (layout, layer
    paths, why those, what was set aside), ``preprocessing`` (dtype, flatten, normalisation, image
    scaling) and ``assumptions``: ``[{"name", "value", "reason"}]`` for everything neither the file
    nor the uploader stated.
    """

    policy: Policy
    format: str
    sha256: str
    shapes: dict[str, list[int]]
    manifest: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0

    def to_dict(self) -> dict:
        """JSON-safe summary (without the policy object)."""
        return {"format": self.format, "sha256": self.sha256, "size_bytes": self.size_bytes,
                "shapes": self.shapes, "policy": self.policy.describe(), "manifest": self.manifest}


def _spaces(env_id: str | None, env_kwargs: dict | None):
    if env_id is None:
        return None
    from actors.rl.envspec import env_spaces

    return env_spaces(env_id, env_kwargs)


def _native_policy(arrays: dict[str, np.ndarray], manifest: dict, spaces_, env_id: str | None) -> Policy:
    if manifest["kind"] == "tabular":
        q = arrays.get("q_table")
        if q is None or q.ndim != 2 or q.dtype.kind not in "fiu":
            raise ModelFileError("bad_manifest", "a tabular model needs a 2-D numeric q_table array")
        return TabularPolicy(q.astype(np.float64), meta={"manifest": True})
    activation = manifest.get("activation")
    if activation not in ACTIVATIONS:
        raise ModelFileError("bad_manifest", f"manifest activation {activation!r} is not one of {ACTIVATIONS}")
    state = {k: v for k, v in arrays.items() if k not in ("action_low", "action_high", "log_std", *_NATIVE_NORM)}
    net, _ = mlp_from_state_dict(state, activation)
    arch = manifest.get("architecture") or {}
    sizes = arch.get("sizes")
    if sizes is not None and [int(s) for s in sizes] != net.sizes:
        raise ModelFileError("bad_manifest", f"the manifest describes layers {sizes} but the arrays are {net.sizes}")
    head = manifest.get("head")
    if head not in ("discrete", "box"):
        raise ModelFileError("bad_manifest", f"manifest head {head!r} is not 'discrete' or 'box'")
    obs_shape = arch.get("obs_shape")
    obs_shape = tuple(int(s) for s in obs_shape) if isinstance(obs_shape, list) else None
    squash = arch.get("action_transform") in ("tanh-rescale", "tanh")
    one_hot = net.sizes[0] if arch.get("obs_encoding") == "one-hot" else None
    policy = build_mlp_policy(net, spaces_, env_id, head=head, obs_shape=obs_shape,
                              action_low=arrays.get("action_low"), action_high=arrays.get("action_high"),
                              log_std=arrays.get("log_std"), meta={"format": NATIVE}, squash=squash,
                              one_hot=one_hot)
    return _native_normalization(policy, arrays, manifest)


#: The arrays a native file of a policy trained with normalised observations adds.
_NATIVE_NORM = ("obs_mean", "obs_var")


def _native_normalization(policy: Policy, arrays: dict[str, np.ndarray], manifest: dict) -> Policy:
    """A native file's own observation statistics (a hub-trained ``normalize_obs`` policy): its
    arrays, and the epsilon and clip the manifest states; nothing is assumed if one is missing."""
    present = [k for k in _NATIVE_NORM if k in arrays]
    if not present:
        return policy
    stated = (manifest.get("architecture") or {}).get("normalization") or {}
    missing = [k for k in _NATIVE_NORM if k not in arrays] + [k for k in ("epsilon", "clip_obs") if k not in stated]
    if missing:
        raise ModelFileError("bad_manifest", f"the file carries observation statistics but not {missing}; "
                             "a policy cannot be evaluated with half its preprocessing")
    stats = check_normalization({"obs_mean": arrays["obs_mean"].tolist(), "obs_var": arrays["obs_var"].tolist(),
                                 "epsilon": stated["epsilon"], "clip_obs": stated["clip_obs"]})
    manifest.setdefault("preprocessing", {})["normalization"] = {
        "kind": "vecnormalize", "source": "file", "shape": stats["shape"], "epsilon": stats["epsilon"],
        "clip_obs": stats["clip_obs"],
        "formula": "clip((obs - obs_mean) / sqrt(obs_var + epsilon), -clip_obs, clip_obs)"}
    return NormalizedPolicy(policy, np.asarray(stats["obs_mean"]), np.asarray(stats["obs_var"]), stats["epsilon"],
                            stats["clip_obs"], source="file")


def _state_dict_policy(arrays: dict[str, np.ndarray], activation: str | None, prefix: str | None,
                       spaces_, env_id: str | None, fmt: str, action_scaling: str | None = None,
                       activation_source: str | None = None) -> tuple[Policy, dict]:
    return state_dict_policy(arrays, activation=activation,
                             activation_source=activation_source or ("uploader" if activation else None),
                             prefix=prefix, action_scaling=action_scaling, spaces_=spaces_, env_id=env_id, fmt=fmt)


def _normalize(policy: Policy, manifest: dict[str, Any], normalization: dict | None) -> Policy:
    """Wrap ``policy`` in the uploader's normalisation, or record that none was applied."""
    hint = manifest.pop("normalization_hint", None)
    if normalization is None:
        if hint:
            manifest.setdefault("assumptions", []).append(assumption(
                "observation_normalization", None,
                f"{hint}; none were given, so observations reach the policy unnormalised. If the model "
                "was trained with normalised observations, send its statistics (normalization)"))
        return policy
    stats = check_normalization(normalization)
    pre = manifest.setdefault("preprocessing", {})
    wrapped = NormalizedPolicy(policy, np.asarray(stats["obs_mean"]), np.asarray(stats["obs_var"]),
                               stats["epsilon"], stats["clip_obs"], source="uploader")
    pre["normalization"] = {"kind": "vecnormalize", "source": "uploader", "shape": stats["shape"],
                            "epsilon": stats["epsilon"], "clip_obs": stats["clip_obs"],
                            "formula": "clip((obs - obs_mean) / sqrt(obs_var + epsilon), -clip_obs, clip_obs)"}
    for key in stats["assumed"]:
        manifest.setdefault("assumptions", []).append(assumption(
            f"normalization.{key}", stats[key], f"the statistics do not give {key}; VecNormalize's default"))
    return wrapped


def load_policy(path: str | os.PathLike, *, env_id: str | None = None, activation: str | None = None,
                prefix: str | None = None, env_kwargs: dict | None = None,
                normalization: dict | None = None, action_scaling: str | None = None,
                max_bytes: int = _DEFAULT.max_bytes, max_tensors: int = _DEFAULT.max_tensors,
                max_tensor_bytes: int = _DEFAULT.max_tensor_bytes,
                max_total_bytes: int = _DEFAULT.max_total_bytes) -> LoadedModel:
    """Read a model file (any accepted format) into a greedy policy.

    ``activation`` applies to state dicts, which do not record it: ``"relu"`` (the default) or
    ``"tanh"``; the native format's manifest states its own and wins. ``prefix`` picks the layer
    stack when a state dict holds several (e.g. ``"actor"``). ``action_scaling`` (``"clip"``, or
    ``"tanh"`` alias ``"squashed"``) says how a Box output becomes an action when the file does not.
    ``normalization`` is VecNormalize statistics (:func:`parse_normalization`'s result), applied
    before the policy. With ``env_id``, the observation size
    and the action count/size are checked against that environment and a mismatch raises
    :class:`~actors.rl.errors.PolicyMismatchError` naming both shapes.

    Every refusal is a :class:`~actors.rl.errors.ModelFileError` with a ``code`` and an HTTP
    ``status`` hint.
    """
    if activation is not None and activation not in ACTIVATIONS:
        raise ModelFileError("bad_content", f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    if action_scaling is not None and action_scaling not in ACTION_SCALINGS:
        raise ModelFileError("bad_option", f"action_scaling must be one of {ACTION_SCALINGS}, not "
                             f"{action_scaling!r}")
    if normalization is not None:
        normalization = check_normalization(normalization)
    limits = Limits(max_bytes=max_bytes, max_tensors=max_tensors, max_tensor_bytes=max_tensor_bytes,
                    max_total_bytes=max_total_bytes)
    size = check_file_size(path, limits)
    with open(path, "rb") as fh:
        fmt = sniff_stream(fh, size, limits)
        spaces_ = _spaces(env_id, env_kwargs)
        manifest: dict[str, Any]
        if fmt in (NATIVE, NPZ_STATE_DICT):
            from actors.rl.modelfiles.npz import read_npz, split_native

            fh.seek(0)
            arrays = read_npz(fh, limits)
            if fmt == NATIVE:
                arrays, manifest = split_native(arrays)
                policy = _native_policy(arrays, manifest, spaces_, env_id)
            else:
                policy, manifest = _state_dict_policy(arrays, activation, prefix, spaces_, env_id, fmt,
                                                      action_scaling)
            shapes = shapes_of(arrays)
        elif fmt == SB3_ZIP:
            from actors.rl.modelfiles.sb3_zip import load_sb3

            fh.seek(0)
            policy, manifest, arrays = load_sb3(fh, limits, spaces_, env_id, activation, prefix, action_scaling)
            shapes = shapes_of(arrays)
        elif fmt == TORCH_ZIP:
            from actors.rl.modelfiles.torchzip import read_torch_zip

            fh.seek(0)
            arrays = read_torch_zip(fh, limits)
            policy, manifest = _state_dict_policy(arrays, activation, prefix, spaces_, env_id, fmt, action_scaling)
            shapes = shapes_of(arrays)
        elif fmt == SAFETENSORS:
            from actors.rl.modelfiles.safetensors_file import read_safetensors

            arrays, metadata = read_safetensors(path, limits)
            stated = metadata.get("activation")
            act = activation or (stated if stated in ACTIVATIONS else None)
            source = "uploader" if activation else ("file" if act else None)
            policy, manifest = _state_dict_policy(arrays, act, prefix, spaces_, env_id, fmt, action_scaling, source)
            if metadata:
                manifest["metadata"] = metadata
            shapes = shapes_of(arrays)
        elif fmt == ONNX:
            policy, manifest, shapes = _onnx(path, spaces_, env_id, action_scaling, max_bytes)
        else:  # pragma: no cover - sniff_stream only returns known formats
            raise ModelFileError("unsupported_format", f"unknown format {fmt}")
    if normalization is not None and isinstance(policy, NormalizedPolicy):
        raise ModelFileError("normalization_conflict", "the model file carries its own observation statistics; "
                             "send none with it")
    policy = _normalize(policy, manifest, normalization)
    if spaces_ is not None:
        check_policy_spaces(policy, spaces_[0], spaces_[1], env_id or "the environment")
    return LoadedModel(policy=policy, format=fmt, sha256=sha256_file(path), shapes=shapes,
                       manifest=manifest, size_bytes=size)


def _onnx(path, spaces_, env_id, action_scaling=None, max_bytes=_DEFAULT.max_bytes):
    """An ONNX upload: static checks, then a session, then a probe run (:mod:`.onnx_file`).

    ``action_scaling`` says how a continuous output becomes an action: ``"clip"`` (in the
    environment's units, clipped to the bounds: PPO/A2C) or ``"squashed"`` (alias ``"tanh"``: the
    graph's output is already squashed into [-1, 1] and is rescaled to the bounds: SAC/TD3).
    Without it, an output produced by a Tanh under bounds other than [-1, 1] is refused.
    """
    from actors.rl.modelfiles.onnx_checks import OnnxLimits
    from actors.rl.modelfiles.onnx_file import load_onnx

    return load_onnx(path, spaces_, env_id, action_scaling, OnnxLimits(max_file_bytes=max_bytes))
