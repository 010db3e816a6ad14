"""Stable-Baselines3 ``model.save()`` zips, read without unpickling anything.

The archive holds ``data`` (JSON, see :mod:`.sb3_data`), ``policy.pth`` (``torch.save`` of the
policy's state dict, read by the restricted unpickler of :mod:`.torchzip`), and bookkeeping
(``_stable_baselines3_version``, ``system_info.txt``, optimizer states and
``pytorch_variables.pth``, which are never opened). The policy is rebuilt as SB3's
``predict(deterministic=True)`` acts:

* PPO/A2C ``MlpPolicy``: flatten → ``mlp_extractor.policy_net`` → ``action_net``; argmax for
  Discrete actions, the mean clipped to the bounds for Box actions;
* DQN: the online ``q_net`` (never ``q_net_target``), argmax;
* SAC: ``actor.latent_pi`` → ``actor.mu`` → tanh → rescaled from [-1, 1] to the bounds;
* TD3 (and DDPG): ``actor.mu`` (ending in tanh) → rescaled to the bounds.

The activation comes from ``policy_kwargs``' ``activation_fn`` text; when ``policy_kwargs`` is
there without it, SB3 used the class default (Tanh for ActorCriticPolicy, ReLU otherwise), which
is determined, not assumed. Refused with code ``unsupported_policy``: CnnPolicy (NatureCNN),
MultiInputPolicy (Dict observations), Discrete observations, gSDE, custom or sb3-contrib policy
classes, and ``policy_kwargs`` the hub cannot rebuild.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.modelfiles._common import Limits, mlp_from_layers, open_zip, read_member
from actors.rl.modelfiles.layouts import choose_acting, gather_layers
from actors.rl.modelfiles.sb3_data import (
    CLASS_NAMES,
    DEFAULT_ACTIVATIONS,
    MAX_DATA_BYTES,
    Sb3Data,
    Space,
    activation_from_text,
    actor_arch,
    check_kwargs,
    parse_data,
)
from actors.rl.modelfiles.state_dicts import assumption, bounds_assumption, preprocessing
from actors.rl.policy import MLPPolicy

SB3_MEMBERS = ("data", "policy.pth")


def is_sb3_archive(names: list[str]) -> bool:
    return "data" in names and ("policy.pth" in names or "_stable_baselines3_version" in names)


def _unsupported(message: str, **details: Any) -> ModelFileError:
    return ModelFileError("unsupported_policy", message, details=details)


def _check_class(info: Sb3Data) -> None:
    module, name = info.policy_module, info.policy_name
    label = f"{module}.{name}" if module and name else (module or name or "unknown")
    if module is not None and not module.startswith("stable_baselines3."):
        raise _unsupported(f"the policy class is {label}; the hub rebuilds only Stable-Baselines3's own MlpPolicy "
                           "classes (PPO, A2C, DQN, SAC, TD3). Export other policies to ONNX.", policy_class=label)
    if name is not None and info.family is None:
        if "Cnn" in name:
            raise _unsupported(
                f"{label} (CnnPolicy: a NatureCNN features extractor) is not supported: the hub has no "
                "convolution layers and does not reproduce SB3's image preprocessing (uint8 / 255, HWC → CHW via "
                "VecTransposeImage). Export the policy to ONNX instead.", policy_class=label)
        if "MultiInput" in name:
            raise _unsupported(f"{label} (Dict observations) is not supported", policy_class=label)
        raise _unsupported(f"the policy class {label} is not one whose forward pass the hub rebuilds",
                           policy_class=label)


def _check_spaces(info: Sb3Data) -> None:
    obs, act = info.observation_space, info.action_space
    if obs is not None:
        if obs.kind == "Dict":
            raise _unsupported("Dict observation spaces (MultiInputPolicy) are not supported")
        if obs.kind == "Discrete":
            raise _unsupported("Discrete observations (which SB3 one-hot encodes) are not supported")
        if obs.kind != "Box":
            raise _unsupported(f"{obs.kind} observation spaces are not supported")
        if obs.dtype == "uint8" and len(obs.shape) == 3:
            raise _unsupported("image observations (uint8, 3-D), which SB3 scales by 1/255 and may transpose, "
                               "are not supported")
    if act is not None and act.kind not in ("Box", "Discrete"):
        raise _unsupported(f"{act.kind} action spaces are not supported")
    if info.use_sde:
        raise _unsupported("the policy uses gSDE (use_sde=True), which the hub does not evaluate")


def _activation(info: Sb3Data, family: str, given: str | None) -> tuple[str, str, str, dict | None]:
    """``(activation, source, reason, assumption or None)``."""
    kwargs = info.policy_kwargs
    default = DEFAULT_ACTIVATIONS[family]
    if kwargs is not None and "activation_fn" in kwargs:
        return activation_from_text(kwargs["activation_fn"]), "file", "policy_kwargs.activation_fn", None
    if kwargs is not None:
        return default, "file", (f"policy_kwargs has no activation_fn, so SB3 built {CLASS_NAMES[family]} with "
                                 f"its default ({default})"), None
    if given is not None:
        return given, "uploader", "the activation sent with the upload", None
    why = ("the data member has no policy_kwargs" if info.kwargs_state == "missing" else
           "policy_kwargs is stored only as a cloudpickle blob, which the hub never decodes")
    reason = f"{why}; assumed SB3's default for {CLASS_NAMES[family]} (send activation=relu|tanh if it differs)"
    return default, "assumed", reason, assumption("activation", default, reason)


def _same_bounds(a: np.ndarray, b: np.ndarray) -> bool:
    # The file holds numpy's text form (at most 8 significant digits), the env the exact float32.
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all((a == b) | np.isclose(a, b, rtol=1e-6, atol=1e-7)))


def _spaces_against_env(info: Sb3Data, spaces_, env_id: str | None) -> tuple[Space | None, Space | None, str]:
    """The file's spaces checked against the environment's; Box bounds then taken from the env
    (exact float32) rather than from the file's text form."""
    from gymnasium import spaces

    obs, act = info.observation_space, info.action_space
    if spaces_ is None:
        return obs, act, "file"
    env_obs, env_act = spaces_
    name = env_id or "the environment"
    if obs is not None and isinstance(env_obs, spaces.Box) and tuple(env_obs.shape) != obs.shape:
        raise PolicyMismatchError(f"the model was trained on observations of shape {obs.shape} but {name} "
                                  f"observations have shape {tuple(env_obs.shape)}")
    if act is None:
        if isinstance(env_act, spaces.Box):
            act = Space(kind="Box", shape=tuple(env_act.shape), low=np.asarray(env_act.low),
                        high=np.asarray(env_act.high))
        elif isinstance(env_act, spaces.Discrete):
            act = Space(kind="Discrete", n=int(env_act.n))
        return obs, act, "environment"
    if act.kind == "Discrete" and isinstance(env_act, spaces.Discrete) and act.n is not None and act.n != env_act.n:
        raise PolicyMismatchError(f"the model was trained with Discrete({act.n}) actions but {name} has "
                                  f"Discrete({int(env_act.n)})")
    if act.kind == "Box" and isinstance(env_act, spaces.Box):
        if tuple(env_act.shape) != act.shape:
            raise PolicyMismatchError(f"the model was trained with actions of shape {act.shape} but {name} "
                                      f"actions have shape {tuple(env_act.shape)}")
        for side in ("low", "high"):
            mine = getattr(act, side)
            if mine is not None and not _same_bounds(mine, getattr(env_act, side)):
                raise PolicyMismatchError(
                    f"the model was trained with action {side} {mine.reshape(-1).tolist()} but {name} has "
                    f"{np.asarray(getattr(env_act, side)).reshape(-1).tolist()}")
        act = Space(kind="Box", shape=act.shape, dtype=act.dtype, low=np.asarray(env_act.low),
                    high=np.asarray(env_act.high))
        return obs, act, "environment"
    return obs, act, "file"


def _check_arch(info: Sb3Data, net_sizes: list[int]) -> None:
    stated = actor_arch(info)
    if stated is not None and stated != net_sizes[1:-1]:
        raise ModelFileError("bad_content", f"policy_kwargs.net_arch states hidden layers {stated} but the "
                             f"weights have {net_sizes[1:-1]}", details={"net_arch": stated, "sizes": net_sizes})


def read_archive(fh: BinaryIO, limits: Limits) -> tuple[bytes, bytes, str | None]:
    """``(data, policy.pth, SB3 version)``; nothing else in the archive is read."""
    with open_zip(fh, limits) as zf:
        names = zf.namelist()
        for member in SB3_MEMBERS:
            if member not in names:
                raise ModelFileError("bad_content", f"the Stable-Baselines3 archive has no {member!r} member")
        if zf.getinfo("data").file_size > MAX_DATA_BYTES:
            raise ModelFileError("too_large", f"the SB3 data member exceeds {MAX_DATA_BYTES} bytes")
        data = read_member(zf, "data")
        pth = read_member(zf, "policy.pth")
        version = None
        if "_stable_baselines3_version" in names and zf.getinfo("_stable_baselines3_version").file_size <= 64:
            version = read_member(zf, "_stable_baselines3_version").decode("ascii", "replace").strip() or None
    return data, pth, version


def load_sb3(fh: BinaryIO, limits: Limits, spaces_, env_id: str | None, activation: str | None,
             prefix: str | None, action_scaling: str | None) -> tuple[MLPPolicy, dict, dict[str, np.ndarray]]:
    """``(policy, manifest, policy state dict)`` of an SB3 zip."""
    from actors.rl.modelfiles.torchzip import read_torch_bytes

    raw_data, pth, version = read_archive(fh, limits)
    info = parse_data(raw_data)
    _check_class(info)
    _check_spaces(info)
    check_kwargs(info)
    arrays = read_torch_bytes(pth, limits, member="policy.pth")
    acting = choose_acting(arrays)
    family = info.family
    if family is not None and acting.layout != family:
        raise ModelFileError("bad_content", f"the data names {CLASS_NAMES[family]} but policy.pth is laid out as "
                             f"{acting.layout}", details={"policy_class": family, "layout": acting.layout})
    if family is None:
        if acting.layout not in DEFAULT_ACTIVATIONS:
            raise _unsupported("the data does not name a policy class the hub rebuilds and policy.pth is not "
                               "laid out like an SB3 MlpPolicy", layout=acting.layout)
        family = acting.layout
        acting.reason += " (policy class read from the layout of policy.pth: the data does not name it plainly)"
    act, act_source, act_reason, act_assumption = _activation(info, family, activation)
    weights, biases = gather_layers(arrays, acting.paths)
    net = mlp_from_layers(weights, biases, act)
    _check_arch(info, net.sizes)

    obs, act_space, bounds_source = _spaces_against_env(info, spaces_, env_id)
    head = {"Discrete": "discrete", "Box": "box"}.get(act_space.kind) if act_space is not None else acting.head
    if head is None:
        head = "box" if acting.head == "box" else "discrete"
    if acting.head is not None and head != acting.head:
        raise ModelFileError("bad_content", f"the data has {act_space.kind if act_space else '?'} actions but "
                             f"policy.pth is laid out as a {acting.head} policy")
    if obs is not None and obs.shape and int(np.prod(obs.shape)) != net.sizes[0]:
        raise ModelFileError("bad_content", f"the data has observations of shape {obs.shape} but the network "
                             f"takes {net.sizes[0]} inputs")
    if head == "discrete" and act_space is not None and act_space.n is not None and act_space.n != net.sizes[-1]:
        raise ModelFileError("bad_content", f"the data has Discrete({act_space.n}) actions but the network "
                             f"outputs {net.sizes[-1]} values")
    if head == "box" and act_space is not None and act_space.shape and int(np.prod(act_space.shape)) != net.sizes[-1]:
        raise ModelFileError("bad_content", f"the data has actions of shape {act_space.shape} but the network "
                             f"outputs {net.sizes[-1]} values")
    low = act_space.low if act_space is not None and head == "box" else None
    high = act_space.high if act_space is not None and head == "box" else None
    if (low is None) != (high is None):
        low = high = None
    log_std = arrays.get(acting.log_std_key) if acting.log_std_key else None
    try:
        policy = MLPPolicy(net, head, obs.shape if obs is not None and obs.shape else (net.sizes[0],),
                           action_low=low, action_high=high, squash=acting.squash,
                           log_std=None if log_std is None else np.asarray(log_std, np.float64).reshape(-1),
                           meta={"format": "sb3-zip", "sb3_version": version})
    except ValueError as exc:
        raise ModelFileError("bad_content", f"the SB3 data and policy.pth do not fit together: {exc}") from None

    assumptions = [a for a in (act_assumption, bounds_assumption(policy)) if a is not None]
    acting_doc = acting.to_dict()
    acting_doc["policy_class"] = CLASS_NAMES[family]
    if head == "box":
        acting_doc["action_transform"] = policy.action_transform
        acting_doc["action_bounds_source"] = bounds_source
    ignored = {k: v for k, v in (("prefix", prefix), ("action_scaling", action_scaling)) if v is not None}
    if activation is not None and act_source == "file" and activation != act:
        ignored["activation"] = activation
    manifest: dict[str, Any] = {
        "source_format": "sb3-zip", "sb3_version": version, "activation": act, "activation_source": act_source,
        "activation_reason": act_reason, "activation_given": act_source == "uploader",
        "layers": list(acting.paths), "sizes": net.sizes, "head": head, "acting_network": acting_doc,
        "policy_kwargs_state": info.kwargs_state,
        "observation_space": obs.to_dict() if obs is not None else None,
        "action_space": act_space.to_dict() if act_space is not None else None,
        "assumptions": assumptions, "preprocessing": preprocessing(policy),
        "normalization_hint": acting.normalization_hint,
    }
    if ignored:
        manifest["ignored_options"] = {"options": ignored, "reason": "the SB3 file states these itself"}
    return policy, manifest, arrays
