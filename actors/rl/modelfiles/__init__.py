"""Loading untrusted model files into greedy policies (ARCHITECTURE §6).

Accepted, recognised by content (never by file name):

* ``resimhub-npz``: the project's own ``.npz`` with a JSON ``__manifest__`` (see
  :func:`actors.rl.policy.save_policy`);
* ``npz-state-dict``: a ``.npz`` of an MLP state dict (``net.0.weight``, ``net.0.bias``, …);
* ``torch-zip``: a ``torch.save(model.state_dict())`` checkpoint, read without torch and without
  executing pickle code (:mod:`.torchzip`);
* ``safetensors``;
* ``onnx``: run by onnxruntime.

Plain pickle is refused (code ``pickle_refused``, HTTP 415): unpickling can run arbitrary code.

State dicts (npz, torch, safetensors) store weights but not the activation between layers. The
caller passes ``activation``; **the default is ``"relu"``**. Layers are the ``Linear`` weights of
one stack, in index order; the output is read as discrete action values unless the environment's
action space is continuous (then it is the mean action, clipped to the bounds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.modelfiles._common import (
    ACCEPTED_FORMATS,
    DEFAULT_STATE_DICT_ACTIVATION,
    Limits,
    build_mlp_policy,
    check_file_size,
    find_log_std,
    mlp_from_state_dict,
    sha256_file,
    shapes_of,
)
from actors.rl.modelfiles.sniff import (
    FORMATS,
    NATIVE,
    NPZ_STATE_DICT,
    ONNX,
    SAFETENSORS,
    TORCH_ZIP,
    sniff_format,
    sniff_stream,
)
from actors.rl.nn import ACTIVATIONS
from actors.rl.policy import Policy, TabularPolicy, check_policy_spaces

__all__ = [
    "ACCEPTED_FORMATS", "DEFAULT_STATE_DICT_ACTIVATION", "FORMATS", "Limits", "LoadedModel",
    "NATIVE", "NPZ_STATE_DICT", "ONNX", "SAFETENSORS", "TORCH_ZIP", "load_policy", "sniff_format",
]

_DEFAULT = Limits()


@dataclass
class LoadedModel:
    """A policy read from a file, with what identifies and describes the file.

    ``manifest`` is the file's own manifest for the native format; for other formats it records
    what was inferred (activation, layer names, source format) so that the choice is visible.
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
    state = {k: v for k, v in arrays.items() if k not in ("action_low", "action_high", "log_std")}
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
    return build_mlp_policy(net, spaces_, env_id, head=head, obs_shape=obs_shape,
                            action_low=arrays.get("action_low"), action_high=arrays.get("action_high"),
                            log_std=arrays.get("log_std"), meta={"format": NATIVE})


def _state_dict_policy(arrays: dict[str, np.ndarray], activation: str | None, prefix: str | None,
                       spaces_, env_id: str | None, fmt: str) -> tuple[Policy, dict]:
    net, paths = mlp_from_state_dict(arrays, activation, prefix)
    policy = build_mlp_policy(net, spaces_, env_id, log_std=find_log_std(arrays), meta={"format": fmt})
    inferred = {"source_format": fmt, "activation": net.activation,
                "activation_given": activation is not None, "layers": paths, "sizes": net.sizes,
                "head": policy.head}
    return policy, inferred


def load_policy(path: str | os.PathLike, *, env_id: str | None = None, activation: str | None = None,
                prefix: str | None = None, env_kwargs: dict | None = None,
                max_bytes: int = _DEFAULT.max_bytes, max_tensors: int = _DEFAULT.max_tensors,
                max_tensor_bytes: int = _DEFAULT.max_tensor_bytes,
                max_total_bytes: int = _DEFAULT.max_total_bytes) -> LoadedModel:
    """Read a model file (any accepted format) into a greedy policy.

    ``activation`` applies to state dicts, which do not record it: ``"relu"`` (the default) or
    ``"tanh"``; the native format's manifest states its own and wins. ``prefix`` picks the layer
    stack when a state dict holds several (e.g. ``"actor"``). With ``env_id``, the observation size
    and the action count/size are checked against that environment and a mismatch raises
    :class:`~actors.rl.errors.PolicyMismatchError` naming both shapes.

    Every refusal is a :class:`~actors.rl.errors.ModelFileError` with a ``code`` and an HTTP
    ``status`` hint.
    """
    if activation is not None and activation not in ACTIVATIONS:
        raise ModelFileError("bad_content", f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
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
                policy, manifest = _state_dict_policy(arrays, activation, prefix, spaces_, env_id, fmt)
            shapes = shapes_of(arrays)
        elif fmt == TORCH_ZIP:
            from actors.rl.modelfiles.torchzip import read_torch_zip

            fh.seek(0)
            arrays = read_torch_zip(fh, limits)
            policy, manifest = _state_dict_policy(arrays, activation, prefix, spaces_, env_id, fmt)
            shapes = shapes_of(arrays)
        elif fmt == SAFETENSORS:
            from actors.rl.modelfiles.safetensors_file import read_safetensors

            arrays, metadata = read_safetensors(path, limits)
            stated = metadata.get("activation")
            act = activation or (stated if stated in ACTIVATIONS else None)
            policy, manifest = _state_dict_policy(arrays, act, prefix, spaces_, env_id, fmt)
            if metadata:
                manifest["metadata"] = metadata
            shapes = shapes_of(arrays)
        elif fmt == ONNX:
            policy, manifest, shapes = _onnx(path, spaces_, env_id)
        else:  # pragma: no cover - sniff_stream only returns known formats
            raise ModelFileError("unsupported_format", f"unknown format {fmt}")
    if spaces_ is not None:
        check_policy_spaces(policy, spaces_[0], spaces_[1], env_id or "the environment")
    return LoadedModel(policy=policy, format=fmt, sha256=sha256_file(path), shapes=shapes,
                       manifest=manifest, size_bytes=size)


def _onnx(path, spaces_, env_id):
    from gymnasium import spaces

    from actors.rl.modelfiles.onnx_file import OnnxPolicy, load_onnx_session

    session = load_onnx_session(path)
    probe = OnnxPolicy(session)
    head, obs_shape, low, high = "discrete", None, None, None
    if spaces_ is not None:
        obs_space, act_space = spaces_
        if isinstance(act_space, spaces.Box):
            head = "box"
            low, high = act_space.low, act_space.high
            if act_space.low.size != probe.n_outputs:
                raise PolicyMismatchError(
                    f"model outputs actions of size {probe.n_outputs} but {env_id} actions have shape "
                    f"{tuple(act_space.shape)}")
        if isinstance(obs_space, spaces.Box) and int(np.prod(obs_space.shape)) == probe.n_inputs:
            obs_shape = tuple(int(s) for s in obs_space.shape)
    policy = OnnxPolicy(session, head=head, obs_shape=obs_shape, action_low=low, action_high=high,
                        meta={"format": ONNX})
    shapes = {"input": [-1, *policy.model_obs_shape], "output": [-1, policy.n_outputs]}
    manifest = {"source_format": ONNX, "head": head, "input": policy.input_name, "output": policy.output_name}
    return policy, manifest, shapes
