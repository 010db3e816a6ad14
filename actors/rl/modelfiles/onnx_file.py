"""ONNX models run by onnxruntime.

**Safety.** The file is parsed and checked by :mod:`.onnx_checks` before any onnxruntime session
exists: external data anywhere, operators outside the standard domains, model-local functions and
oversized graphs are refused there. onnxruntime is then given the checked model as bytes, never a
path. (Giving bytes is *not* enough on its own: onnxruntime resolves a relative external-data
location against the process's working directory even then.) What cannot be decided statically,
a loop that never ends or an allocation sized from the input, is left to the sandbox the caller
runs this in.

**Reading the graph.** One float input, with a batch axis (fixed to 1, or symbolic) or without one.
Symbolic dimensions are taken from the environment's observation shape, and the graph is then run
on one observation of that space, the point nearest zero (a *probe*), to learn what its first
output holds:

* discrete actions: an integer output is the action itself (SB3's documented export of
  ``policy(obs, deterministic=True)``, whose first output is the action); a float output of
  ``n`` values is read as action values (argmax, as a DQN Q-network);
* continuous actions: the output is the action in the environment's units, clipped to the bounds
  (SB3's PPO/A2C), unless the uploader says ``action_scaling="squashed"``: then it is in
  [-1, 1] and rescaled to [low, high] exactly as SB3's ``unscale_action`` does (SAC/TD3). An
  output produced by ``Tanh`` with bounds other than [-1, 1] is refused until the uploader says
  which: a wrong rescaling would be a wrong score, not an error.

Everything assumed is listed in the manifest's ``assumptions``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.modelfiles.onnx_checks import CheckedModel, OnnxLimits, check_onnx_bytes
from actors.rl.policy import _finite_list

# "squashed" is the upload API's word; "tanh" is what load_policy's state-dict readers call the
# same SAC/TD3 action. The graph computes the tanh itself, so for ONNX both mean: rescale
# the output from [-1, 1] to the bounds.
ACTION_SCALINGS = ("clip", "tanh", "squashed")
# Without an environment the probe observation is sized from the graph's own declared input;
# cap it so a graph declaring [1, 10**12] cannot make the loader allocate it.
MAX_PROBE_ELEMENTS = 2**22

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
# Operators that pass a value through unchanged (up to shape or type) when looking for the Tanh
# that produced an output.
_PASSTHROUGH = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast", "CastLike"}


def _assumption(name: str, value: Any, reason: str) -> dict:
    return {"name": name, "value": value, "reason": reason}


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    # onnxruntime's messages start with "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : ..."
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]


class OnnxPolicy:
    """Greedy policy over a checked ONNX graph (see the module docstring for how it is read).

    ``layout`` is ``"batched"`` (one run for the whole batch), ``"rows"`` (the batch axis is fixed
    to 1, or batching was not trustworthy: one run per row) or ``"unbatched"`` (no batch axis: one
    run per row). ``output_kind`` is ``"index"`` (the integer action), ``"values"`` (argmax) or
    ``"action"`` (a continuous action, clipped or rescaled per ``action_scaling``).
    """

    kind = "onnx"

    def __init__(self, session: Any, *, input_name: str, input_dtype: Any, output_name: str,
                 model_obs_shape: tuple[int, ...], obs_shape: tuple[int, ...], layout: str, head: str,
                 output_kind: str, per_row: int, n_outputs: int | None, declared_input: list,
                 action_low: np.ndarray | None = None, action_high: np.ndarray | None = None,
                 action_scaling: str | None = None, meta: dict | None = None) -> None:
        self.session = session
        self.input_name = input_name
        self.input_dtype = input_dtype
        self.output_name = output_name
        self.model_obs_shape = tuple(model_obs_shape)
        self.obs_shape = tuple(obs_shape)
        self.n_inputs = int(np.prod(self.model_obs_shape, dtype=np.int64)) if self.model_obs_shape else 1
        self.layout = layout
        self.head = head
        self.output_kind = output_kind
        self.per_row = int(per_row)
        self.n_outputs = n_outputs
        self.declared_input = list(declared_input)
        self.action_scaling = action_scaling
        # Bounds in the environment's own dtype: SB3 rescales in that precision.
        self._low = None if action_low is None else np.asarray(action_low).reshape(-1)
        self._high = None if action_high is None else np.asarray(action_high).reshape(-1)
        self.action_low = None if self._low is None else self._low.astype(np.float64)
        self.action_high = None if self._high is None else self._high.astype(np.float64)
        self.meta = dict(meta or {})

    # -- running -------------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0])
        except Exception as exc:  # onnxruntime's Fail/InvalidArgument/RuntimeException types
            raise ModelFileError("onnx_run_failed", f"the ONNX graph failed on a batch of observations: "
                                 f"{_short(exc)}") from None

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The first output for a ``(n, *model_obs_shape)`` batch, as ``(n, per_row)``."""
        n = x.shape[0]
        if self.layout == "batched":
            out = self._run(x)
            if out.size != n * self.per_row or (out.ndim and out.shape[0] != n):
                raise ModelFileError("onnx_bad_output", f"the ONNX graph returned shape {list(out.shape)} for "
                                     f"{n} observations; expected {self.per_row} value(s) per observation")
            return out.reshape(n, self.per_row)
        rows = []
        for i in range(n):
            out = self._run(x[i: i + 1] if self.layout == "rows" else x[i])
            if out.size != self.per_row:
                raise ModelFileError("onnx_bad_output", f"the ONNX graph returned shape {list(out.shape)} for "
                                     f"one observation; expected {self.per_row} value(s)")
            rows.append(out.reshape(self.per_row))
        if not rows:
            return np.zeros((0, self.per_row))
        return np.stack(rows)

    def decode(self, out: np.ndarray) -> np.ndarray:
        if self.output_kind == "index":
            actions = out.reshape(-1).astype(np.int64)
            if self.n_outputs is not None and actions.size and (
                    actions.min() < 0 or actions.max() >= self.n_outputs):
                bad = int(actions[(actions < 0) | (actions >= self.n_outputs)][0])
                raise ModelFileError("onnx_bad_output", f"the ONNX graph returned action {bad}, outside "
                                     f"0..{self.n_outputs - 1}")
            return actions
        if self.output_kind == "values":
            return out.argmax(axis=1).astype(np.int64, copy=False)
        if self.action_scaling == "squashed":
            # SB3's unscale_action, in the same precision: low + 0.5 * (a + 1) * (high - low).
            out = self._low + (0.5 * (out + 1.0) * (self._high - self._low))
        actions = out.astype(np.float64)
        if self.action_low is not None or self.action_high is not None:
            np.clip(actions, self.action_low, self.action_high, out=actions)
        return actions

    def act(self, obs_batch: np.ndarray) -> np.ndarray:
        x = np.asarray(obs_batch)
        if x.shape == self.obs_shape:
            x = x[None]
        n = x.shape[0] if x.ndim else 1
        try:
            x = np.ascontiguousarray(x.reshape(n, *self.model_obs_shape), dtype=self.input_dtype)
        except ValueError:
            raise PolicyMismatchError(f"model expects observations of shape {list(self.obs_shape)}, got a batch "
                                      f"of shape {list(np.shape(obs_batch))}") from None
        return self.decode(self.raw(x))

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "head": self.head,
            "obs_shape": list(self.obs_shape),
            "n_inputs": self.n_inputs,
            "n_actions" if self.head == "discrete" else "action_dim": self.n_outputs,
            "input": {"name": self.input_name, "shape": self.declared_input},
            "output": {"name": self.output_name, "size": self.per_row, "read_as": self.output_kind},
            "batch": self.layout,
            "action_scaling": self.action_scaling,
            "action_low": _finite_list(self.action_low),
            "action_high": _finite_list(self.action_high),
        }


# -- loading -----------------------------------------------------------------------------------------

def new_session(data: bytes) -> Any:
    """An onnxruntime session over *checked* model bytes (see :func:`check_onnx_bytes`)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelFileError("unsupported_format", f"onnxruntime is not installed: {exc}") from None
    options = ort.SessionOptions()
    # The machine is shared; evaluation parallelises across environments, not inside a tiny MLP.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    options.add_session_config_entry("session.load_model_format", "ONNX")
    try:
        # read_config_from_model=0: session options come from here, never from the model's metadata
        # (ORT_LOAD_CONFIG_FROM_MODEL=1 would otherwise let it set them); enable_fallback=0: no
        # second attempt (and no banner on stdout) after a failure.
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"],
                                    read_config_from_model=0, enable_fallback=0)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        message = _short(exc)
        code = "truncated" if "protobuf" in message.lower() else "bad_content"
        raise ModelFileError(code, f"onnxruntime cannot load the model: {message}") from None


def load_onnx_session(path: str | os.PathLike, limits: OnnxLimits | None = None) -> tuple[Any, CheckedModel]:
    """Read, check, then open a session: nothing reaches onnxruntime before the checks pass."""
    with open(path, "rb") as fh:
        data = fh.read((limits or OnnxLimits()).max_file_bytes + 1)
    checked = check_onnx_bytes(data, limits)
    return new_session(checked.data), checked


def _static(d: Any) -> bool:
    return isinstance(d, int) and d > 0


def _fill(dims: list, obs_shape: tuple[int, ...] | None) -> tuple[list[int] | None, bool]:
    """Concrete dims: static ones as declared, symbolic ones from the observation shape (same rank)."""
    if all(_static(d) for d in dims):
        return [int(d) for d in dims], False
    if obs_shape is None or len(dims) != len(obs_shape):
        return None, False
    return [int(d) if _static(d) else int(o) for d, o in zip(dims, obs_shape, strict=True)], True


def _prod(dims) -> int:
    return math.prod(int(d) for d in dims)  # Python ints: a declared [10**12, 10**12] must not wrap


def _layout(declared: list, obs_shape: tuple[int, ...] | None, env: str) -> tuple[str, list[int], bool]:
    if not declared:
        raise ModelFileError("bad_content", "the ONNX graph's input is a scalar; it must take an observation")
    n_obs = _prod(obs_shape) if obs_shape is not None else None
    rest, filled = _fill(declared[1:], obs_shape)
    if rest is not None and (n_obs is None or _prod(rest) == n_obs):
        batch = declared[0]
        if _static(batch):
            if batch != 1:
                raise ModelFileError(
                    "bad_content", f"the ONNX graph's batch axis is fixed to {batch}; export it with a dummy batch "
                    "of 1, or with a dynamic batch (dynamic_axes={'input': {0: 'batch'}})")
            return "rows", rest, filled
        return "dynamic", rest, filled
    if obs_shape is None:
        raise ModelFileError("bad_content", f"the ONNX input shape {declared} has symbolic dimensions besides "
                             "the batch axis; give the environment so that they can be resolved")
    whole, whole_filled = _fill(declared, obs_shape)
    if whole is not None and _prod(whole) == n_obs:
        return "unbatched", whole, whole_filled
    n = _prod(rest) if rest is not None else None
    expects = f"{n} inputs (ONNX input shape {declared})" if n is not None else f"inputs of shape {declared}"
    raise PolicyMismatchError(f"model expects {expects} but {env} observations have shape {tuple(obs_shape)}",
                              details={"model_input": [d if isinstance(d, int) else str(d) for d in declared],
                                       "observation_shape": list(obs_shape)})


def _probe_observation(obs_space: Any, model_dims: list[int], dtype: Any) -> np.ndarray:
    """One valid observation, ``(1, *model_dims)``: the point of the space nearest zero."""
    if obs_space is not None:
        shape = tuple(int(s) for s in obs_space.shape)
        low = np.broadcast_to(np.asarray(obs_space.low, dtype=np.float64), shape)
        high = np.broadcast_to(np.asarray(obs_space.high, dtype=np.float64), shape)
        obs = np.clip(np.zeros(shape), low, high).astype(obs_space.dtype)
    else:
        obs = np.zeros(model_dims)
    return np.ascontiguousarray(obs.reshape(1, *model_dims), dtype=dtype)


def _ends_in_tanh(model: Any, name: str) -> bool:
    producers = {out: node for node in model.graph.node for out in node.output}
    for _ in range(16):
        node = producers.get(name)
        if node is None:
            return False
        if node.op_type == "Tanh":
            return True
        if node.op_type not in _PASSTHROUGH or not node.input:
            return False
        name = node.input[0]
    return False


def load_onnx(path: str | os.PathLike, spaces_: tuple | None, env_id: str | None,
              action_scaling: str | None = None, limits: OnnxLimits | None = None
              ) -> tuple[OnnxPolicy, dict, dict]:
    """Check, open and probe an ONNX upload; returns ``(policy, manifest, shapes)``."""
    from gymnasium import spaces

    env = env_id or "the environment"
    if action_scaling is not None and action_scaling not in ACTION_SCALINGS:
        raise ModelFileError("bad_option", f"action_scaling must be one of {ACTION_SCALINGS}, not {action_scaling!r}")
    obs_space, act_space = spaces_ if spaces_ is not None else (None, None)
    if obs_space is not None and not isinstance(obs_space, spaces.Box):
        raise PolicyMismatchError(f"{env} has {type(obs_space).__name__} observations; an ONNX model takes "
                                  "vector (Box) observations")
    if action_scaling is not None and not isinstance(act_space, spaces.Box):
        raise ModelFileError("bad_option", f"action_scaling applies to continuous (Box) actions; {env} has "
                             f"{type(act_space).__name__ if act_space is not None else 'no known'} actions")
    if action_scaling == "tanh":  # the same thing for a graph (see ACTION_SCALINGS)
        action_scaling = "squashed"
    if isinstance(act_space, spaces.Box) and action_scaling == "squashed" and not (
            np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        raise ModelFileError("bad_option", f"action_scaling='squashed' needs finite bounds; {env}'s are "
                             f"{act_space.low.tolist()}..{act_space.high.tolist()}")

    session, checked = load_onnx_session(path, limits)
    assumptions: list[dict] = []

    try:
        inputs, outputs = session.get_inputs(), session.get_outputs()
    except Exception as exc:  # e.g. names that are not UTF-8
        raise ModelFileError("bad_content", f"the ONNX graph's inputs cannot be read: {_short(exc)}") from None
    if len(inputs) != 1:
        raise ModelFileError("bad_content", f"the ONNX graph must take one input, it takes {len(inputs)}")
    if not outputs:
        raise ModelFileError("bad_content", "the ONNX graph has no output")
    inp, out = inputs[0], outputs[0]
    if inp.type not in _FLOAT_TYPES:
        raise ModelFileError("bad_content", f"the ONNX input must be a float tensor, not {inp.type}")
    if not str(out.type).startswith("tensor("):
        raise ModelFileError("bad_content", f"the ONNX graph's first output must be a tensor, not {out.type}")
    declared = [d if isinstance(d, int) else (str(d) if d is not None else None) for d in inp.shape]
    obs_shape = tuple(int(s) for s in obs_space.shape) if obs_space is not None else None
    layout, model_dims, filled = _layout(declared, obs_shape, env)
    if obs_space is None and _prod(model_dims) > MAX_PROBE_ELEMENTS:
        raise ModelFileError("onnx_too_large", f"the ONNX input declares {_prod(model_dims)} values per "
                             f"observation; the limit is {MAX_PROBE_ELEMENTS}", status=413,
                             details={"what": "input_elements", "value": _prod(model_dims),
                                      "limit": MAX_PROBE_ELEMENTS})
    if filled:
        assumptions.append(_assumption(
            "input_dims", model_dims, f"the graph's input {declared} has symbolic dimensions; they are taken from "
            f"{env}'s observation shape {list(obs_shape or ())}"))
    if len(outputs) > 1:
        assumptions.append(_assumption(
            "output", out.name, f"the graph has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); the "
            "first is read as the action, as in SB3's documented export (actions, values, log_prob)"))

    # -- the probe: run the graph on one observation of the space --------------------------------
    input_dtype = _FLOAT_TYPES[inp.type]
    obs = _probe_observation(obs_space, model_dims, input_dtype)

    def probe(x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(session.run([out.name], {inp.name: x})[0])
        except Exception as exc:
            raise ModelFileError("onnx_probe_failed", f"the ONNX graph does not run on one observation of "
                                 f"{env} (shape {list(x.shape)}): {_short(exc)}") from None

    first = probe(obs[0] if layout == "unbatched" else obs)
    if first.dtype.kind not in "fiu":
        raise ModelFileError("bad_content", f"the ONNX graph's first output has dtype {first.dtype}; expected "
                             "numbers (the action, or action values)")
    per_row = int(first.size)
    if per_row == 0:
        raise ModelFileError("bad_content", f"the ONNX graph's first output is empty (shape {list(first.shape)})")
    if layout == "dynamic":
        # The same observation twice: a graph whose batch axis is symbolic in name only (a reshape
        # to a fixed batch inside) fails here or returns the wrong shape, and is run row by row.
        layout, why = "rows", ""
        try:
            both = probe(np.concatenate([obs, obs]))
            if both.size != 2 * per_row or not both.ndim or both.shape[0] != 2 or both.dtype != first.dtype:
                why = f"a batch of 2 observations returned shape {list(both.shape)}"
            else:
                pair, alone = both.reshape(2, per_row), np.stack([first.reshape(per_row)] * 2)
                same = (np.array_equal(pair, alone) if first.dtype.kind in "iu"
                        else np.allclose(pair, alone, rtol=1e-4, atol=1e-5, equal_nan=True))
                if same:
                    layout = "batched"
                else:
                    why = "a batch of 2 gave other results than one observation alone"
        except ModelFileError as exc:
            why = f"a batch of 2 observations failed ({exc})"
        if layout == "batched":
            assumptions.append(_assumption(
                "batch", "dynamic", "the input's batch axis is symbolic and a batch of 2 gave the same results as one "
                "observation alone: all environments' observations are run together, each row taken to depend on "
                "its own observation only"))
        else:
            assumptions.append(_assumption("batch", "row by row", f"the input's batch axis is symbolic but {why}"))
    elif layout == "rows":
        assumptions.append(_assumption("batch", "row by row", "the input's batch axis is fixed to 1 (a dummy batch "
                                       "of 1 and no dynamic axis at export): one run per observation"))
    else:
        assumptions.append(_assumption("batch", "row by row", f"the input {declared} has no batch axis: one run "
                                       "per observation"))

    # -- what the output is ------------------------------------------------------------------------
    low = high = None
    scaling: str | None = None
    if isinstance(act_space, spaces.Discrete):
        head, n_act = "discrete", int(act_space.n)
        n_outputs: int | None = n_act
        if first.dtype.kind in "iu":
            if per_row != 1:
                raise PolicyMismatchError(
                    f"model outputs {per_row} integers per observation but {env} has Discrete({n_act}) actions "
                    f"(expected the action itself, or {n_act} float action values)")
            kind = "index"
            value = int(first.reshape(-1)[0])
            if not 0 <= value < n_act:
                raise ModelFileError("onnx_bad_output", f"the ONNX graph returned action {value} for an observation "
                                     f"of {env}, outside Discrete({n_act})")
            assumptions.append(_assumption("output_kind", "action", "the first output is an integer: the action "
                                           "index itself (SB3's policy(obs, deterministic=True))"))
        else:
            if per_row != n_act:
                raise PolicyMismatchError(
                    f"model outputs {per_row} action values but {env} has Discrete({n_act}) actions",
                    details={"model_outputs": per_row, "n_actions": n_act})
            kind = "values"
            assumptions.append(_assumption("output_kind", "action values", f"the first output is {per_row} floats "
                                           f"for Discrete({n_act}): the action is their argmax (the first on ties)"))
    elif isinstance(act_space, spaces.Box):
        head, kind = "box", "action"
        shape = tuple(int(s) for s in act_space.shape)
        n_outputs = _prod(shape)
        if first.dtype.kind != "f":
            raise PolicyMismatchError(f"model outputs integers ({first.dtype}) but {env} has continuous actions of "
                                      f"shape {shape}")
        if per_row != n_outputs:
            raise PolicyMismatchError(f"model outputs actions of size {per_row} but {env} actions have shape {shape}",
                                      details={"model_outputs": per_row, "action_shape": list(shape)})
        low, high = act_space.low, act_space.high
        unit = bool(np.all(low == -1.0) and np.all(high == 1.0))
        tanh = _ends_in_tanh(checked.model, out.name)
        if action_scaling is not None:
            scaling = action_scaling
            assumptions.append(_assumption("action_scaling", scaling, "given by the uploader"))
            if scaling == "squashed":
                peak = float(np.max(np.abs(first)))
                if not peak <= 1.0:
                    raise ModelFileError(
                        "onnx_action_scaling", f"action_scaling='squashed' says the output lies in [-1, 1], but "
                        f"the graph returned {peak:g} for an observation of {env}; use action_scaling='clip'",
                        details={"options": ["clip", "squashed"], "output": out.name})
                if not tanh:
                    assumptions.append(_assumption(
                        "squashed_output", True, "the output is not produced by a Tanh node; it is taken to lie in "
                        "[-1, 1] as the uploader said"))
        elif tanh and not unit:
            raise ModelFileError(
                "onnx_action_scaling",
                f"the ONNX graph's output {out.name!r} comes from a Tanh, so it is probably an action squashed into "
                f"[-1, 1] (SAC, TD3, or an SB3 policy with squash_output), but {env}'s actions range over "
                f"{_finite_list(low)}..{_finite_list(high)}. Say how to read it: action_scaling='squashed' "
                "(alias 'tanh') rescales [-1, 1] to the bounds as SB3's predict does for SAC/TD3; "
                "action_scaling='clip' reads the output in the environment's units and clips it to the bounds "
                "(PPO/A2C).",
                details={"options": ["clip", "squashed"], "output": out.name,
                         "low": _finite_list(low), "high": _finite_list(high)})
        else:
            scaling = "clip"
            reason = ("the output comes from a Tanh and the bounds are [-1, 1]: clipping and rescaling agree"
                      if tanh else "the output is not squashed by a Tanh: it is read in the environment's units "
                      "and clipped to the bounds, as SB3's predict does for PPO/A2C; pass "
                      "action_scaling='squashed' if it lies in [-1, 1]")
            assumptions.append(_assumption("action_scaling", "clip", reason))
    elif act_space is None:
        head = "discrete"
        kind = "index" if first.dtype.kind in "iu" else "values"
        n_outputs = None if kind == "index" else per_row
        assumptions.append(_assumption("head", "discrete", "no environment given: the output is read as a discrete "
                                       "action (" + ("the integer itself" if kind == "index" else "argmax") + ")"))
    else:
        raise PolicyMismatchError(f"{env} has {type(act_space).__name__} actions, which no model format here supports")

    policy = OnnxPolicy(
        session, input_name=inp.name, input_dtype=input_dtype, output_name=out.name,
        model_obs_shape=tuple(model_dims), obs_shape=obs_shape if obs_shape is not None else tuple(model_dims),
        layout=layout, head=head, output_kind=kind, per_row=per_row, n_outputs=n_outputs, declared_input=declared,
        action_low=low, action_high=high, action_scaling=scaling, meta={"format": "onnx"})
    if kind == "action":
        action_step = ("rescaled from [-1, 1] to [low, high] (SB3's unscale_action), then clipped"
                       if scaling == "squashed" else "clipped to [low, high]")
    elif kind == "values":
        action_step = "argmax over the output"
    else:
        action_step = "the output itself (an integer action index)"
    manifest = {
        "source_format": "onnx",
        "head": head,
        "input": inp.name,
        "output": out.name,
        "outputs": [o.name for o in outputs],
        "output_kind": kind,
        "batch": layout,
        "action_scaling": scaling,
        "action_scaling_given": action_scaling is not None,
        "graph": checked.summary(),
        "preprocessing": {
            "observation": f"as the environment returns it, cast to {np.dtype(input_dtype).name} and reshaped to "
                           f"{[-1, *model_dims] if layout != 'unbatched' else list(model_dims)}",
            "normalization": None,
            "action": action_step,
        },
        "assumptions": assumptions,
    }
    shapes = {"input": [-1, *model_dims] if layout != "unbatched" else list(model_dims),
              "output": [-1, per_row]}
    return policy, manifest, shapes
