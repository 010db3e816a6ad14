"""The ``data`` member of a Stable-Baselines3 zip, read as plain JSON only.

SB3 writes every constructor argument it cannot express in JSON (the policy class, the spaces,
schedules, ``policy_kwargs`` holding an activation class…) as ``{":type:": ..., ":serialized:":
<base64 cloudpickle>, <first-level attributes as JSON or as their str()>}``. Decoding a
``:serialized:`` value means unpickling, i.e. running whatever code the uploader put there, so it
is never decoded, not even base64-decoded. What is needed is in the plain fields beside it:

* the policy class: ``__module__`` and the ``<function Name.__init__ at …>`` text of ``__init__``;
* ``policy_kwargs``: ``net_arch`` (JSON) and ``activation_fn`` as text
  (``"<class 'torch.nn.modules.activation.ReLU'>"``);
* the spaces: ``_shape``, ``dtype``, ``n`` and the bounds as numpy's text form of the array.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError

MAX_DATA_BYTES = 16 * 1024 * 1024

# Policy classes whose deterministic forward pass the hub rebuilds, by SB3 module.
FAMILIES = {
    ("stable_baselines3.common.policies", "ActorCriticPolicy"): "sb3-actor-critic",
    ("stable_baselines3.dqn.policies", "DQNPolicy"): "sb3-dqn",
    ("stable_baselines3.sac.policies", "SACPolicy"): "sb3-sac",
    ("stable_baselines3.td3.policies", "TD3Policy"): "sb3-td3",
}
MODULE_FAMILIES = {module: family for (module, _), family in FAMILIES.items()}
# What SB3 uses when policy_kwargs has no activation_fn.
DEFAULT_ACTIVATIONS = {"sb3-actor-critic": "tanh", "sb3-dqn": "relu", "sb3-sac": "relu", "sb3-td3": "relu"}
CLASS_NAMES = {"sb3-actor-critic": "ActorCriticPolicy (PPO/A2C MlpPolicy)", "sb3-dqn": "DQNPolicy (DQN MlpPolicy)",
               "sb3-sac": "SACPolicy (SAC MlpPolicy)", "sb3-td3": "TD3Policy (TD3/DDPG MlpPolicy)"}
_TORCH_ACTIVATIONS = {"ReLU": "relu", "Tanh": "tanh"}

# policy_kwargs that do not change the deterministic forward pass of an MLP policy, or whose
# effect is checked below (net_arch against the weights, activation_fn, the features extractor).
_KNOWN_KWARGS = {"net_arch", "activation_fn", "ortho_init", "log_std_init", "full_std", "use_expln",
                 "share_features_extractor", "normalize_images", "optimizer_class", "optimizer_kwargs",
                 "n_critics", "features_extractor_class", "features_extractor_kwargs", "use_sde",
                 "squash_output", "clip_mean"}
_INIT_RE = re.compile(r"^<function ([A-Za-z_]\w*)\.__init__ at ")
_CLASS_TEXT_RE = re.compile(r"^<class '([\w.]+)'>$")


@dataclass
class Space:
    kind: str  # "Box", "Discrete", or another gymnasium space class name
    shape: tuple[int, ...] = ()
    dtype: str | None = None
    n: int | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "shape": list(self.shape), "dtype": self.dtype}
        if self.n is not None:
            d["n"] = self.n
        for name in ("low", "high"):
            arr = getattr(self, name)
            if arr is not None and arr.size <= 64:
                d[name] = [float(v) if np.isfinite(v) else None for v in arr.reshape(-1).tolist()]
        return d


@dataclass
class Sb3Data:
    policy_module: str | None
    policy_name: str | None
    family: str | None
    policy_kwargs: dict[str, Any] | None  # plain items only; None when absent or only serialised
    kwargs_state: str  # "plain", "serialized-with-fields", "serialized-only", "missing"
    observation_space: Space | None
    action_space: Space | None
    use_sde: bool
    notes: list[str] = field(default_factory=list)


def _is_blob(value: Any) -> bool:
    return isinstance(value, dict) and ":serialized:" in value


def _plain_items(value: dict) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k not in (":type:", ":serialized:")}


def _type_name(value: dict) -> str | None:
    text = value.get(":type:")
    m = _CLASS_TEXT_RE.match(text) if isinstance(text, str) else None
    return m.group(1).rsplit(".", 1)[-1] if m else None


def parse_array_text(text: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """numpy's ``str()`` of an array (``'[-4.8  -inf  0.41887903]'``) back to values; ``None`` when
    it was summarised (``...``) or does not hold ``prod(shape)`` numbers."""
    if not isinstance(text, str) or "..." in text or len(text) > 1_000_000:
        return None
    tokens = text.replace("[", " ").replace("]", " ").split()
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        return None
    if values.size != int(np.prod(shape, dtype=np.int64)) or np.isnan(values).any():
        return None
    return values.reshape(shape)


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _space(value: Any) -> Space | None:
    if not isinstance(value, dict):
        return None
    kind = _type_name(value) or "unknown"
    raw_shape = value.get("_shape")
    if isinstance(raw_shape, list) and len(raw_shape) <= 8 and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 2**31 for s in raw_shape):
        shape = tuple(int(s) for s in raw_shape)
    elif raw_shape is None:
        shape = ()
    else:
        raise ModelFileError("bad_content", f"a space in the SB3 data has an invalid _shape: {str(raw_shape)[:80]}")
    dtype = value.get("dtype") if isinstance(value.get("dtype"), str) else None
    space = Space(kind=kind, shape=shape, dtype=dtype)
    if kind == "Discrete":
        space.n = _int(value.get("n"))
        start = _int(value.get("start", "0"))
        if start not in (0, None):
            raise ModelFileError("unsupported_policy", f"a Discrete action space starting at {start} is not supported")
    elif kind == "Box":
        space.low = parse_array_text(value.get("low"), shape)
        space.high = parse_array_text(value.get("high"), shape)
    return space


def activation_from_text(text: Any) -> str | None:
    """``"<class 'torch.nn.modules.activation.ReLU'>"`` → ``"relu"``; unknown classes are refused."""
    m = _CLASS_TEXT_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ModelFileError("bad_content", f"policy_kwargs activation_fn is not a class name: {str(text)[:80]!r}")
    name = m.group(1).rsplit(".", 1)[-1]
    if name not in _TORCH_ACTIVATIONS:
        raise ModelFileError("unsupported_activation",
                             f"the policy uses activation {m.group(1)}; the hub evaluates ReLU and Tanh networks",
                             details={"activation": m.group(1)})
    return _TORCH_ACTIVATIONS[name]


def parse_data(raw: bytes) -> Sb3Data:
    if len(raw) > MAX_DATA_BYTES:
        raise ModelFileError("too_large", f"the SB3 data member is {len(raw)} bytes; the limit is {MAX_DATA_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError("bad_content", f"the SB3 data member is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelFileError("bad_content", "the SB3 data member must be a JSON object")

    module = name = None
    pc = data.get("policy_class")
    if isinstance(pc, dict):
        module = pc.get("__module__") if isinstance(pc.get("__module__"), str) else None
        m = _INIT_RE.match(pc.get("__init__", "")) if isinstance(pc.get("__init__"), str) else None
        name = m.group(1) if m else None
    family = FAMILIES.get((module, name)) if module and name else None

    kwargs_raw = data.get("policy_kwargs")
    if kwargs_raw is None:
        kwargs, state = None, "missing"
    elif _is_blob(kwargs_raw):
        items = _plain_items(kwargs_raw)
        kwargs, state = (items, "serialized-with-fields") if items else (None, "serialized-only")
    elif isinstance(kwargs_raw, dict):
        kwargs, state = kwargs_raw, "plain"
    else:
        raise ModelFileError("bad_content", "policy_kwargs in the SB3 data is neither an object nor absent")

    use_sde = data.get("use_sde") is True or bool(kwargs and kwargs.get("use_sde") is True)
    return Sb3Data(policy_module=module, policy_name=name, family=family, policy_kwargs=kwargs,
                   kwargs_state=state, observation_space=_space(data.get("observation_space")),
                   action_space=_space(data.get("action_space")), use_sde=use_sde)


def check_kwargs(info: Sb3Data) -> None:
    """Refuse policy_kwargs that change the forward pass in ways the hub does not rebuild."""
    kwargs = info.policy_kwargs or {}
    unknown = sorted(set(kwargs) - _KNOWN_KWARGS)
    if unknown:
        raise ModelFileError("unsupported_policy",
                             f"policy_kwargs has {', '.join(unknown)}, whose effect on the policy the hub "
                             "cannot rebuild", details={"policy_kwargs": unknown})
    extractor = kwargs.get("features_extractor_class")
    if extractor is not None and "FlattenExtractor" not in str(extractor):
        raise ModelFileError("unsupported_policy",
                             f"the policy uses features_extractor_class {str(extractor)[:120]}; only SB3's "
                             "FlattenExtractor (MlpPolicy) is evaluated",
                             details={"features_extractor": str(extractor)})


def actor_arch(info: Sb3Data) -> list[int] | None:
    """The actor's hidden sizes that ``net_arch`` states, or ``None`` when it does not say (plainly)."""
    arch = (info.policy_kwargs or {}).get("net_arch")
    if arch is None:
        return None
    if isinstance(arch, dict):
        pi = arch.get("pi", [])
        return [int(x) for x in pi] if isinstance(pi, list) and all(isinstance(x, int) for x in pi) else None
    if isinstance(arch, list):
        shared = [x for x in arch if isinstance(x, int)]
        tail = [x for x in arch if isinstance(x, dict)]
        if tail:  # SB3 < 1.8: [shared..., dict(pi=[...], vf=[...])]
            pi = tail[0].get("pi", [])
            return shared + [int(x) for x in pi] if isinstance(pi, list) else None
        return shared if len(shared) == len(arch) else None
    return None
