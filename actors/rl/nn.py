"""A small numpy multilayer perceptron with hand-written backpropagation, and Adam.

Weights are kept as ``(in, out)`` matrices so a batch is ``x @ W + b``; the state-dict view uses
PyTorch's ``(out, in)`` layout and ``net.<2i>.weight`` names so that files move between the two
worlds without renaming (a ``torch.nn.Sequential`` puts an activation module at every odd index).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ACTIVATIONS = ("tanh", "relu")


def _act(name: str, z: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return np.tanh(z)
    return np.maximum(z, 0.0)


def _act_grad(name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    # Derivative expressed through the cached pre-activation ``z`` or output ``a``, whichever is cheaper.
    if name == "tanh":
        return 1.0 - a * a
    return (z > 0.0).astype(z.dtype)


class MLP:
    """Fully connected network: hidden layers use ``activation``, the output layer is linear."""

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "tanh",
        rng: np.random.Generator | None = None,
        out_gain: float = 1.0,
        dtype=np.float64,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        if len(sizes) < 2:
            raise ValueError("an MLP needs at least an input and an output size")
        self.sizes = [int(s) for s in sizes]
        self.activation = activation
        rng = rng if rng is not None else np.random.default_rng(0)
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        n_layers = len(self.sizes) - 1
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            # Orthogonal-style scaling keeps early policies close to uniform, which helps PPO/A2C.
            gain = out_gain if i == n_layers - 1 else np.sqrt(2.0)
            w = rng.standard_normal((fan_in, fan_out)) * gain / np.sqrt(fan_in)
            self.weights.append(w.astype(dtype))
            self.biases.append(np.zeros(fan_out, dtype=dtype))

    # -- parameters ---------------------------------------------------------------------------
    @property
    def params(self) -> list[np.ndarray]:
        """Every parameter array, in a fixed order shared with :meth:`backward`'s gradients."""
        out: list[np.ndarray] = []
        for w, b in zip(self.weights, self.biases, strict=True):
            out.extend((w, b))
        return out

    @property
    def num_params(self) -> int:
        return int(sum(p.size for p in self.params))

    def get_flat(self) -> np.ndarray:
        return np.concatenate([p.ravel() for p in self.params])

    def set_flat(self, flat: np.ndarray) -> None:
        flat = np.asarray(flat)
        if flat.size != self.num_params:
            raise ValueError(f"expected {self.num_params} parameters, got {flat.size}")
        offset = 0
        for p in self.params:
            p[...] = flat[offset : offset + p.size].reshape(p.shape)
            offset += p.size

    def copy(self) -> MLP:
        clone = MLP.__new__(MLP)
        clone.sizes = list(self.sizes)
        clone.activation = self.activation
        clone.weights = [w.copy() for w in self.weights]
        clone.biases = [b.copy() for b in self.biases]
        return clone

    # -- computation --------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=self.weights[0].dtype)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < last:
                h = _act(self.activation, h)
        return h

    __call__ = forward

    def forward_cache(self, x: np.ndarray) -> tuple[np.ndarray, list]:
        """Forward pass that keeps what :meth:`backward` needs."""
        h = np.asarray(x, dtype=self.weights[0].dtype)
        cache = []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = h @ w + b
            a = _act(self.activation, z) if i < last else z
            cache.append((h, z, a))
            h = a
        return h, cache

    def backward(self, cache: list, grad_out: np.ndarray) -> list[np.ndarray]:
        """Gradients of ``sum(grad_out * output)`` for every array in :attr:`params`, same order."""
        grads: list[np.ndarray] = [None] * (2 * len(self.weights))  # type: ignore[list-item]
        g = grad_out
        for i in range(len(self.weights) - 1, -1, -1):
            h_in, z, a = cache[i]
            if i < len(self.weights) - 1:
                g = g * _act_grad(self.activation, z, a)
            grads[2 * i] = h_in.T @ g
            grads[2 * i + 1] = g.sum(axis=0)
            if i > 0:
                g = g @ self.weights[i].T
        return grads

    def input_grad(self, cache: list, grad_out: np.ndarray) -> np.ndarray:
        """The gradient of ``sum(grad_out * output)`` with respect to the input batch, without
        parameter gradients: what an actor needs from a critic it does not train (SAC, TD3)."""
        g = grad_out
        for i in range(len(self.weights) - 1, -1, -1):
            _, z, a = cache[i]
            if i < len(self.weights) - 1:
                g = g * _act_grad(self.activation, z, a)
            g = g @ self.weights[i].T
        return g

    # -- interchange --------------------------------------------------------------------------
    def state_dict(self, prefix: str = "net") -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"{prefix}.{2 * i}.weight"] = np.ascontiguousarray(w.T)
            out[f"{prefix}.{2 * i}.bias"] = b.copy()
        return out

    @classmethod
    def from_layers(cls, weights_out_in: Sequence[np.ndarray], biases: Sequence[np.ndarray],
                    activation: str = "tanh", dtype=np.float64) -> MLP:
        """Build from PyTorch-layout ``(out, in)`` weight matrices, checking that layers chain."""
        if len(weights_out_in) != len(biases) or not weights_out_in:
            raise ValueError("need one bias per weight matrix and at least one layer")
        net = cls.__new__(cls)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        net.activation = activation
        net.weights, net.biases = [], []
        sizes = [int(weights_out_in[0].shape[1])]
        for k, (w, b) in enumerate(zip(weights_out_in, biases, strict=True)):
            w = np.asarray(w)
            b = np.asarray(b)
            if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[0]:
                raise ValueError(f"layer {k}: weight {tuple(w.shape)} and bias {tuple(b.shape)} do not fit")
            if w.shape[1] != sizes[-1]:
                raise ValueError(f"layer {k} expects {w.shape[1]} inputs but the previous layer gives {sizes[-1]}")
            net.weights.append(np.ascontiguousarray(w.T, dtype=dtype))
            net.biases.append(np.asarray(b, dtype=dtype).copy())
            sizes.append(int(w.shape[0]))
        net.sizes = sizes
        return net


class Adam:
    """Adam over a fixed list of arrays, updated in place, with optional global-norm clipping."""

    def __init__(self, params: list[np.ndarray], lr: float = 3e-4, betas=(0.9, 0.999), eps: float = 1e-8,
                 max_grad_norm: float | None = None) -> None:
        self.params = params
        self.lr = lr
        self.b1, self.b2 = betas
        self.eps = eps
        self.max_grad_norm = max_grad_norm
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> float:
        """Apply one update (descending ``grads``); returns the gradient norm before clipping."""
        norm = float(np.sqrt(sum(float(np.sum(g * g)) for g in grads)))
        scale = 1.0
        if self.max_grad_norm is not None and norm > self.max_grad_norm:
            scale = self.max_grad_norm / (norm + 1e-12)
        self.t += 1
        c1 = 1.0 - self.b1**self.t
        c2 = 1.0 - self.b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            g = g * scale
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
        return norm

    def state(self) -> dict:
        return {"t": self.t, "m": [m.copy() for m in self.m], "v": [v.copy() for v in self.v]}
