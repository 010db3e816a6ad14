"""ONNX models run by onnxruntime.

The model is handed to onnxruntime as bytes, not as a path: with no model directory, onnxruntime
refuses initialisers stored as "external data", which would otherwise let an uploaded graph read
arbitrary files next to it (or anywhere a relative path reaches).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError
from actors.rl.policy import _finite_list

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _static_dims(shape: list[Any]) -> list[int] | None:
    if all(isinstance(d, int) and d > 0 for d in shape):
        return [int(d) for d in shape]
    return None


class OnnxPolicy:
    """Greedy policy over an ONNX graph with one float input ``(batch, *obs_shape)``.

    The first output is read as action values (argmax) for a discrete head, or as the mean action
    (clipped to the bounds) for a box head. A graph whose batch dimension is fixed to 1 is run row
    by row.
    """

    kind = "onnx"

    def __init__(self, session: Any, head: str = "discrete", obs_shape: tuple[int, ...] | None = None,
                 action_low: np.ndarray | None = None, action_high: np.ndarray | None = None,
                 meta: dict | None = None) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise ModelFileError("bad_content", f"the ONNX graph must take one input, it takes {len(inputs)}")
        if not outputs:
            raise ModelFileError("bad_content", "the ONNX graph has no output")
        inp, out = inputs[0], outputs[0]
        if inp.type not in _FLOAT_TYPES:
            raise ModelFileError("bad_content", f"the ONNX input must be a float tensor, not {inp.type}")
        in_dims = _static_dims(list(inp.shape)[1:])
        out_dims = _static_dims(list(out.shape)[1:])
        if not inp.shape or in_dims is None:
            raise ModelFileError("bad_content", f"the ONNX input shape {inp.shape} needs a batch axis and "
                                 "fixed sizes for the others")
        if not out.shape or out_dims is None or len(out_dims) != 1:
            raise ModelFileError("bad_content", f"the ONNX output shape {out.shape} must be (batch, n)")
        self.session = session
        self.input_name = inp.name
        self.output_name = out.name
        self.input_dtype = _FLOAT_TYPES[inp.type]
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.model_obs_shape = tuple(in_dims)
        self.n_inputs = int(np.prod(in_dims))
        self.n_outputs = int(out_dims[0])
        self.obs_shape = tuple(obs_shape) if obs_shape is not None else self.model_obs_shape
        self.head = head
        self.action_low = None if action_low is None else np.asarray(action_low, dtype=np.float64).reshape(-1)
        self.action_high = None if action_high is None else np.asarray(action_high, dtype=np.float64).reshape(-1)
        self.meta = dict(meta or {})

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0])

    def act(self, obs_batch: np.ndarray) -> np.ndarray:
        x = np.asarray(obs_batch)
        if x.shape == self.obs_shape:
            x = x[None]
        n = x.shape[0]
        x = np.ascontiguousarray(x.reshape(n, *self.model_obs_shape), dtype=self.input_dtype)
        if self.fixed_batch is not None and self.fixed_batch != n:
            if self.fixed_batch != 1:
                raise ModelFileError("bad_content", f"the ONNX graph only accepts batches of {self.fixed_batch}")
            out = np.concatenate([self._run(x[i: i + 1]) for i in range(n)], axis=0)
        else:
            out = self._run(x)
        out = out.reshape(n, self.n_outputs).astype(np.float64, copy=False)
        if self.head == "discrete":
            return out.argmax(axis=1).astype(np.int64, copy=False)
        if self.action_low is not None or self.action_high is not None:
            out = np.clip(out, self.action_low, self.action_high)
        return out

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "head": self.head,
            "obs_shape": list(self.obs_shape),
            "n_inputs": self.n_inputs,
            "n_actions" if self.head == "discrete" else "action_dim": self.n_outputs,
            "input": {"name": self.input_name, "shape": [self.fixed_batch, *self.model_obs_shape]},
            "output": {"name": self.output_name, "size": self.n_outputs},
            "action_low": _finite_list(self.action_low),
            "action_high": _finite_list(self.action_high),
        }


def load_onnx_session(path: str | os.PathLike) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelFileError("unsupported_format", f"onnxruntime is not installed: {exc}") from None
    with open(path, "rb") as fh:
        data = fh.read()
    options = ort.SessionOptions()
    # The machine is shared; evaluation parallelises across environments, not inside a tiny MLP.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        code = "truncated" if "protobuf" in message.lower() else "bad_content"
        raise ModelFileError(code, f"onnxruntime cannot load the model: {message[:300]}") from None
