"""Greedy policies the evaluator can run, and the project's own model file format.

Evaluation always acts greedily (docs/architecture.md, "The evaluation protocol"), so a policy here is
deliberately small: a batched ``act`` plus enough shape information to check it against an
environment before any episode runs. Training-time stochasticity (sampling, exploration) belongs to the agents.

The native file is a single ``.npz``: numpy can read it with ``allow_pickle=False``, it needs no
framework, and the JSON manifest rides inside as a 0-d unicode array so that a model can never be
separated from the description of how it was made.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from actors.rl.errors import PolicyMismatchError, RLError
from actors.rl.nn import MLP

NATIVE_FORMAT = "resimhub-policy"
NATIVE_FORMAT_VERSION = 1
MANIFEST_KEY = "__manifest__"

Head = Literal["discrete", "box"]


@runtime_checkable
class Policy(Protocol):
    """What the evaluator needs from a policy.

    ``obs_shape`` is the shape of ONE observation (``()`` for a discrete observation);
    ``n_inputs`` is the flattened input size (the number of states for a tabular policy);
    ``n_outputs`` is the number of discrete actions or the size of a continuous action.
    """

    head: str
    obs_shape: tuple[int, ...]
    n_inputs: int
    n_outputs: int

    def act(self, obs_batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict: ...


def _as_bounds(x: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
    if x is None:
        return None
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size == 1 and n != 1:
        arr = np.full(n, float(arr[0]))
    if arr.size != n:
        raise ValueError(f"{name} has {arr.size} values but the policy outputs {n}")
    return arr


def _finite_list(x: np.ndarray | None) -> list | None:
    # JSON has no infinities; unbounded ends are reported as null.
    if x is None:
        return None
    return [float(v) if math.isfinite(v) else None for v in np.asarray(x, dtype=np.float64).tolist()]


class MLPPolicy:
    """A greedy MLP policy: argmax over outputs (``discrete``) or, for ``box``, the mean clipped to
    the bounds, or with ``squash`` the tanh of the output rescaled from [-1, 1] to the bounds
    (Stable-Baselines3's SAC and TD3 act that way).

    Observations are cast to the network's dtype first (as SB3 and PyTorch cast to float32), so a
    float32 checkpoint computes in float32 whatever the environment's dtype.

    The network is used by reference, so an agent can keep training it and the policy follows.
    ``log_std`` is carried only so that a Gaussian policy survives a save/load round trip; greedy
    evaluation never samples.
    """

    kind = "mlp"

    def __init__(self, net: MLP, head: Head, obs_shape: tuple[int, ...],
                 action_low: np.ndarray | None = None, action_high: np.ndarray | None = None,
                 meta: dict | None = None, log_std: np.ndarray | None = None, squash: bool = False,
                 one_hot: int | None = None) -> None:
        if head not in ("discrete", "box"):
            raise ValueError(f"head must be 'discrete' or 'box', not {head!r}")
        self.net = net
        self.head: str = head
        #: Discrete observations (state indices) become one-hot vectors of this many entries
        #: before the network, as the hub's agents train on them and as SB3 preprocesses them.
        self.one_hot = None if one_hot is None else int(one_hot)
        self.obs_shape = () if self.one_hot is not None else tuple(int(s) for s in obs_shape)
        self.n_inputs = self.one_hot if self.one_hot is not None else int(np.prod(self.obs_shape, dtype=np.int64))
        if self.n_inputs != net.sizes[0]:
            what = (f"one-hot observations of {self.one_hot} states" if self.one_hot is not None
                    else f"observations of shape {self.obs_shape} flatten to {self.n_inputs}")
            raise PolicyMismatchError(f"the network takes {net.sizes[0]} inputs but {what}")
        self.n_outputs = int(net.sizes[-1])
        self.action_low = _as_bounds(action_low, self.n_outputs, "action_low")
        self.action_high = _as_bounds(action_high, self.n_outputs, "action_high")
        self.log_std = None if log_std is None else np.asarray(log_std, dtype=np.float64)
        self.meta = dict(meta or {})
        self.squash = bool(squash) and head == "box"
        if self.squash and (self.action_low is None) != (self.action_high is None):
            raise ValueError("a squashed policy needs both action bounds or neither")
        if self.squash and self.action_low is not None and not (
                np.all(np.isfinite(self.action_low)) and np.all(np.isfinite(self.action_high))):
            raise PolicyMismatchError("a tanh-squashed policy needs finite action bounds to rescale to")

    @property
    def activation(self) -> str:
        return self.net.activation

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Raw network outputs for a flattened ``(n, n_inputs)`` batch."""
        # Same arithmetic as MLP.forward, with the bias and activation applied in place: at the
        # batch sizes evaluation uses, temporaries cost more than the matrix products.
        weights, biases = self.net.weights, self.net.biases
        last = len(weights) - 1
        relu = self.net.activation == "relu"
        h = x
        for i in range(last):
            h = h @ weights[i]
            h += biases[i]
            if relu:
                np.maximum(h, 0.0, out=h)
            else:
                np.tanh(h, out=h)
        out = h @ weights[last]
        out += biases[last]
        return out

    def act(self, obs_batch: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch: ``(n,)`` int64 for ``discrete``, ``(n, act_dim)`` for ``box``.

        A single unbatched observation (shape ``obs_shape``) is treated as a batch of one.
        """
        if self.one_hot is not None:
            states = np.asarray(obs_batch).reshape(-1).astype(np.int64)
            if states.size and (states.min() < 0 or states.max() >= self.one_hot):
                raise PolicyMismatchError(f"observation {int(states.max())} is outside the policy's "
                                          f"{self.one_hot} states")
            x = np.zeros((states.size, self.one_hot), dtype=self.net.weights[0].dtype)
            x[np.arange(states.size), states] = 1.0
        else:
            x = np.asarray(obs_batch, dtype=self.net.weights[0].dtype)
            if x.shape == self.obs_shape:
                x = x[None]
            x = x.reshape(x.shape[0], self.n_inputs)
        out = self.forward(x)
        if self.head == "discrete":
            return out.argmax(axis=1).astype(np.int64, copy=False)
        if self.squash:
            np.tanh(out, out=out)
            if self.action_low is not None:
                # SB3's unscale_action, with the same operations in the same (network) dtype.
                low = self.action_low.astype(out.dtype)
                span = self.action_high.astype(out.dtype) - low  # type: ignore[union-attr]
                out = low + (0.5 * (out + 1.0) * span)
            return out
        if self.action_low is not None or self.action_high is not None:
            np.clip(out, self.action_low, self.action_high, out=out)
        return out

    @property
    def action_transform(self) -> str:
        if self.head == "discrete":
            return "argmax"
        if self.squash:
            return "tanh-rescale" if self.action_low is not None else "tanh"
        return "clip" if self.action_low is not None or self.action_high is not None else "identity"

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "sizes": list(self.net.sizes),
            "activation": self.net.activation,
            "head": self.head,
            "obs_shape": list(self.obs_shape),
            "n_inputs": self.n_inputs,
            "obs_encoding": "one-hot" if self.one_hot is not None else "vector",
            "n_actions" if self.head == "discrete" else "action_dim": self.n_outputs,
            "action_low": _finite_list(self.action_low),
            "action_high": _finite_list(self.action_high),
            "action_transform": self.action_transform,
            "num_params": self.net.num_params,
        }


class TabularPolicy:
    """Greedy policy over a Q-table of shape ``(n_states, n_actions)`` for discrete observations."""

    kind = "tabular"
    head = "discrete"
    obs_shape: tuple[int, ...] = ()

    def __init__(self, q_table: np.ndarray, meta: dict | None = None) -> None:
        q = np.asarray(q_table)
        if q.ndim != 2 or q.shape[0] < 1 or q.shape[1] < 1:
            raise ValueError(f"a Q-table must be 2-D (n_states, n_actions), got shape {q.shape}")
        self.q_table = q
        self.n_inputs = int(q.shape[0])
        self.n_outputs = int(q.shape[1])
        self.meta = dict(meta or {})

    def act(self, obs: np.ndarray) -> np.ndarray:
        idx = np.asarray(obs, dtype=np.int64).reshape(-1)
        return self.q_table[idx].argmax(axis=1).astype(np.int64, copy=False)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "head": self.head,
            "obs_shape": [],
            "n_states": self.n_inputs,
            "n_inputs": self.n_inputs,
            "n_actions": self.n_outputs,
        }


class NormalizedPolicy:
    """A policy behind fixed observation normalisation, exactly as SB3's ``VecNormalize`` applies it.

    ``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)`` in float64, then cast to
    float32 (``VecNormalize.normalize_obs``), then the wrapped policy. The statistics are frozen:
    evaluation never updates them.
    """

    def __init__(self, inner: Policy, mean: np.ndarray, var: np.ndarray, epsilon: float, clip_obs: float,
                 source: str = "uploader") -> None:
        if getattr(inner, "kind", None) == "tabular":
            raise PolicyMismatchError("observation normalisation applies to vector observations, "
                                      "not to a Q-table over discrete states")
        mean = np.asarray(mean, dtype=np.float64)
        var = np.asarray(var, dtype=np.float64)
        if mean.shape != var.shape:
            raise PolicyMismatchError(f"normalisation mean has shape {mean.shape} but var has {var.shape}")
        if mean.size != inner.n_inputs:
            raise PolicyMismatchError(
                f"normalisation statistics have {mean.size} values (shape {tuple(mean.shape)}) but the policy "
                f"takes {inner.n_inputs} inputs (observation shape {tuple(inner.obs_shape)})",
                details={"normalization_shape": list(mean.shape), "model_inputs": inner.n_inputs})
        if mean.shape != tuple(inner.obs_shape):
            mean, var = mean.reshape(inner.obs_shape), var.reshape(inner.obs_shape)
        self.inner = inner
        self.mean, self.var = mean, var
        self.epsilon, self.clip_obs = float(epsilon), float(clip_obs)
        self._scale = np.sqrt(var + self.epsilon)
        self.source = source
        self.kind = getattr(inner, "kind", "policy")
        self.head = inner.head
        self.obs_shape = tuple(inner.obs_shape)
        self.n_inputs = inner.n_inputs
        self.n_outputs = inner.n_outputs
        self.meta = dict(getattr(inner, "meta", {}) or {})

    def normalize(self, obs_batch: np.ndarray) -> np.ndarray:
        z = np.clip((np.asarray(obs_batch) - self.mean) / self._scale, -self.clip_obs, self.clip_obs)
        return z.astype(np.float32)

    def act(self, obs_batch: np.ndarray) -> np.ndarray:
        return self.inner.act(self.normalize(obs_batch))

    def describe(self) -> dict:
        d = dict(self.inner.describe())
        norm: dict[str, Any] = {"kind": "vecnormalize", "source": self.source, "shape": list(self.mean.shape),
                                "epsilon": self.epsilon, "clip_obs": self.clip_obs}
        if self.mean.size <= 256:
            norm["obs_mean"] = _finite_list(self.mean.reshape(-1))
            norm["obs_var"] = _finite_list(self.var.reshape(-1))
        d["normalization"] = norm
        return d


# -- compatibility with an environment ---------------------------------------------------------

def check_policy_spaces(policy: Policy, observation_space: Any, action_space: Any,
                        env_id: str = "the environment") -> None:
    """Raise :class:`PolicyMismatchError` when ``policy`` cannot act in these spaces.

    The message names both shapes, because "shape mismatch" alone leaves a user guessing which
    side is wrong.
    """
    from gymnasium import spaces

    obs_kind = type(observation_space).__name__
    # A network over one-hot states, possibly behind a normalisation wrapper.
    one_hot = getattr(getattr(policy, "inner", policy), "one_hot", None)
    if isinstance(observation_space, spaces.Discrete):
        n_obs = int(observation_space.n)
        if getattr(policy, "kind", None) != "tabular" and one_hot is None:
            raise PolicyMismatchError(
                f"model expects vector observations of {policy.n_inputs} values but {env_id} "
                f"observations are Discrete({n_obs}); use a tabular model or a network over one-hot states")
        if policy.n_inputs != n_obs:
            what = "a Q-table for" if getattr(policy, "kind", None) == "tabular" else "one-hot inputs for"
            raise PolicyMismatchError(
                f"model has {what} {policy.n_inputs} states but {env_id} has Discrete({n_obs}) observations",
                details={"model_inputs": policy.n_inputs, "n_states": n_obs})
    elif isinstance(observation_space, spaces.Box):
        shape = tuple(int(s) for s in observation_space.shape)
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if getattr(policy, "kind", None) == "tabular":
            raise PolicyMismatchError(
                f"model is a Q-table over {policy.n_inputs} discrete states but {env_id} observations "
                f"have shape {shape}")
        if one_hot is not None:
            raise PolicyMismatchError(
                f"model reads {policy.n_inputs} discrete states (one-hot) but {env_id} observations "
                f"have shape {shape}")
        if policy.n_inputs != n:
            raise PolicyMismatchError(
                f"model expects {policy.n_inputs} inputs but {env_id} observations have shape {shape}",
                details={"model_inputs": policy.n_inputs, "observation_shape": list(shape)})
    else:
        raise PolicyMismatchError(f"{env_id} has {obs_kind} observations, which no model format here supports")

    if isinstance(action_space, spaces.Discrete):
        n_act = int(action_space.n)
        if policy.head != "discrete":
            raise PolicyMismatchError(
                f"model outputs continuous actions of size {policy.n_outputs} but {env_id} has "
                f"Discrete({n_act}) actions")
        if policy.n_outputs != n_act:
            raise PolicyMismatchError(
                f"model outputs {policy.n_outputs} action values but {env_id} has Discrete({n_act}) actions",
                details={"model_outputs": policy.n_outputs, "n_actions": n_act})
    elif isinstance(action_space, spaces.Box):
        shape = tuple(int(s) for s in action_space.shape)
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if policy.head != "box":
            raise PolicyMismatchError(
                f"model outputs {policy.n_outputs} discrete action values but {env_id} has continuous "
                f"actions of shape {shape}")
        if policy.n_outputs != n:
            raise PolicyMismatchError(
                f"model outputs actions of size {policy.n_outputs} but {env_id} actions have shape {shape}",
                details={"model_outputs": policy.n_outputs, "action_shape": list(shape)})
    else:
        raise PolicyMismatchError(
            f"{env_id} has {type(action_space).__name__} actions, which no model format here supports")


# -- the native file format --------------------------------------------------------------------

def _json_safe(value: Any) -> Any:
    """Turn numpy scalars/arrays, tuples and non-finite floats into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def library_versions() -> dict[str, str]:
    """Versions that matter for reproducing a run, recorded in manifests and results."""
    from importlib import metadata

    import gymnasium

    try:
        own = metadata.version("resimhub")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {"numpy": np.__version__, "gymnasium": gymnasium.__version__, "resimhub": own}


def policy_arrays(policy: Policy) -> dict[str, np.ndarray]:
    """The arrays the native format stores for ``policy`` (state-dict names for MLPs)."""
    if isinstance(policy, MLPPolicy):
        arrays = policy.net.state_dict()
        if policy.head == "box":
            if policy.action_low is not None:
                arrays["action_low"] = policy.action_low
            if policy.action_high is not None:
                arrays["action_high"] = policy.action_high
            if policy.log_std is not None:
                arrays["log_std"] = policy.log_std
        return arrays
    if isinstance(policy, TabularPolicy):
        return {"q_table": policy.q_table}
    if isinstance(policy, NormalizedPolicy):  # the frozen statistics travel with the weights
        return {**policy_arrays(policy.inner), "obs_mean": policy.mean, "obs_var": policy.var}
    raise RLError(f"{type(policy).__name__} cannot be saved in the native format")


def build_manifest(policy: Policy, manifest: Mapping | None = None) -> dict:
    """The caller's manifest (env id, spaces, training config…) completed with what the policy knows.

    Fields that describe the arrays (format, architecture, activation, head) always come from the
    policy itself so that a manifest can never contradict its file.
    """
    m: dict[str, Any] = dict(_json_safe(dict(manifest or {})))
    env_id = m.get("env_id")
    if env_id and ("observation_space" not in m or "action_space" not in m):
        try:
            from actors.rl.envspec import env_spaces, space_to_dict

            obs_space, act_space = env_spaces(str(env_id), m.get("env_kwargs") or None)
            m.setdefault("observation_space", space_to_dict(obs_space))
            m.setdefault("action_space", space_to_dict(act_space))
        except RLError:
            pass  # an env that cannot be built here still gets its model saved
    desc = policy.describe()
    m.update({
        "format": NATIVE_FORMAT,
        "format_version": NATIVE_FORMAT_VERSION,
        "kind": desc["kind"],
        "head": policy.head,
        "architecture": desc,
        "activation": desc.get("activation"),
    })
    m.setdefault("created_at", _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z"))
    versions = library_versions()
    versions.update(m.get("versions") or {})
    m["versions"] = versions
    return m


def save_npz_atomic(path: str | os.PathLike, payload: Mapping[str, np.ndarray]) -> None:
    """Write an ``.npz`` so it appears complete or not at all (temp file in the same directory,
    fsync, ``os.replace``): a reader, or a crash mid-write, never meets half a file."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_policy(policy: Policy, path: str | os.PathLike, manifest: Mapping | None = None) -> None:
    """Write ``policy`` and its manifest as ONE ``.npz`` file, atomically.

    The file appears under ``path`` complete or not at all (temp file in the same directory, then
    ``os.replace``), so a reader, or a crash mid-write, never leaves half a model behind.
    """
    arrays = policy_arrays(policy)
    full = build_manifest(policy, manifest)
    text = json.dumps(full, allow_nan=False, sort_keys=True)
    payload = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    payload[MANIFEST_KEY] = np.array(text)
    save_npz_atomic(path, payload)
