"""Bare state dicts (torch-zip, npz, safetensors) → a greedy policy, with every assumption stated.

The acting network is chosen by :mod:`.layouts`. What a state dict cannot say is filled in from,
in this order: the uploader (``activation``, ``prefix``, ``action_scaling``), the file (safetensors
metadata), the recognised layout's framework default (SB3 PPO/A2C: Tanh; CleanRL PPO: Tanh;
SB3 DQN/SAC/TD3: ReLU), and last the hub's own default (ReLU). Whatever did not come from the
uploader or the file is listed in the manifest's ``"assumptions"`` with the source of the value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.modelfiles._common import build_mlp_policy, find_log_std, mlp_from_layers
from actors.rl.modelfiles.layouts import Acting, choose_acting, gather_layers
from actors.rl.policy import MLPPolicy

# "squashed" is the upload API's word for "tanh" (tanh, then rescaled from [-1, 1] to the bounds).
ACTION_SCALINGS = ("clip", "tanh", "squashed")


def assumption(name: str, value: Any, reason: str) -> dict[str, Any]:
    return {"name": name, "value": value, "reason": reason}


def preprocessing(policy: MLPPolicy, obs_shape_hint: tuple[int, ...] | None = None) -> dict[str, Any]:
    shape = list(obs_shape_hint or policy.obs_shape)
    return {"dtype": str(policy.net.weights[0].dtype), "flatten": {"from": shape, "to": policy.n_inputs},
            "normalization": None, "image_scaling": None}


def head_assumption(policy: MLPPolicy, acting: Acting | None, spaces_) -> dict | None:
    if spaces_ is not None or (acting is not None and acting.head is not None):
        return None
    return assumption("head", policy.head, "no environment was given and the file does not say what its outputs "
                      "are; they are read as discrete action values (argmax)")


def bounds_assumption(policy: MLPPolicy) -> dict | None:
    if policy.squash and policy.action_low is None:
        return assumption("action_bounds", [-1.0, 1.0], "the tanh output is not rescaled: no environment (and "
                          "so no action bounds) was given")
    return None


def _buffer_bounds(arrays, acting: Acting, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if acting.scale_keys is None:
        return None, None
    scale, bias = (arrays.get(k) for k in acting.scale_keys)
    if scale is None or bias is None:
        return None, None
    try:
        scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (n,))
        bias = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (n,))
    except ValueError:
        raise ModelFileError("bad_content", f"action_scale/action_bias do not fit {n} action values") from None
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(bias))):
        raise ModelFileError("bad_content", "action_scale/action_bias contain NaN or infinite values")
    return bias - scale, bias + scale


def state_dict_policy(arrays: dict[str, np.ndarray], *, activation: str | None, activation_source: str | None,
                      prefix: str | None, action_scaling: str | None, spaces_, env_id: str | None,
                      fmt: str) -> tuple[MLPPolicy, dict[str, Any]]:
    """``(policy, manifest)``; ``activation_source`` says who stated ``activation`` ("uploader" or
    "file"), ``None`` when nobody did."""
    if action_scaling is not None and action_scaling not in ACTION_SCALINGS:
        raise ModelFileError("bad_option", f"action_scaling must be one of {ACTION_SCALINGS}, not "
                             f"{action_scaling!r}")
    acting = choose_acting(arrays, prefix)
    weights, biases = gather_layers(arrays, acting.paths)
    assumptions: list[dict] = []
    if activation is None:
        activation, reason = acting.activation
        assumptions.append(assumption("activation", activation, f"{reason}; the file does not record its "
                                      "activation (send activation=relu|tanh if it differs)"))
        activation_source = "assumed"
    net = mlp_from_layers(weights, biases, activation)
    squash = acting.squash if action_scaling is None else action_scaling in ("tanh", "squashed")
    log_std = arrays.get(acting.log_std_key) if acting.log_std_key else find_log_std(arrays)
    log_std = None if log_std is None else np.asarray(log_std, dtype=np.float64).reshape(-1)
    low, high = _buffer_bounds(arrays, acting, net.sizes[-1])
    policy = build_mlp_policy(net, spaces_, env_id, head=acting.head, log_std=log_std, squash=squash,
                              meta={"format": fmt}, action_low=low if spaces_ is None else None,
                              action_high=high if spaces_ is None else None)
    if low is not None and spaces_ is not None and policy.action_low is not None and not (
            np.allclose(low, policy.action_low, rtol=1e-6, atol=1e-6)
            and np.allclose(high, policy.action_high, rtol=1e-6, atol=1e-6)):
        raise PolicyMismatchError(
            f"the actor's action_scale/action_bias buffers give bounds {low.tolist()}..{high.tolist()} but "
            f"{env_id or 'the environment'} has {policy.action_low.tolist()}..{policy.action_high.tolist()}")
    for extra in (head_assumption(policy, acting, spaces_), bounds_assumption(policy)):
        if extra is not None:
            assumptions.append(extra)
    acting_doc = acting.to_dict()
    if policy.head == "box":
        acting_doc["action_transform"] = policy.action_transform
        acting_doc["action_transform_source"] = "uploader" if action_scaling is not None else "layout"
    manifest = {"source_format": fmt, "activation": net.activation, "activation_given": activation_source == "uploader",
                "activation_source": activation_source, "layers": list(acting.paths), "sizes": net.sizes,
                "head": policy.head, "acting_network": acting_doc, "assumptions": assumptions,
                "preprocessing": preprocessing(policy)}
    if acting.normalization_hint:
        manifest["normalization_hint"] = acting.normalization_hint
    return policy, manifest
