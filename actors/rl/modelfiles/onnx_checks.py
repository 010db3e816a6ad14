"""Static checks on an uploaded ONNX model, made before any onnxruntime session exists.

An ONNX file is a program, not a table of weights, and onnxruntime does work while it *builds* a
session (it reads tensors, folds constants, allocates), so whatever would be dangerous to build is
refused here, from the parsed protobuf alone:

* **external data**, anywhere a tensor can sit (graph and sparse initialisers, the ``t`` /
  ``tensors`` / ``sparse_tensor`` / ``sparse_tensors`` attributes of any node, default attributes
  of model-local functions, the bodies of ``If``/``Loop``/``Scan`` at any depth, training info).
  onnxruntime resolves a *relative* external-data location against the process's working
  directory even when it is given the model as bytes: a graph naming
  ``.resimhub/resimhub.db`` read the hub's database into its weights. (onnxruntime 1.32 refuses
  absolute paths and ``..``, older releases check less; none refuses a path below the cwd.)
* **operators outside the standard domains** (``""``/``ai.onnx`` and ``ai.onnx.ml``), and
  model-local functions: anything else is whatever the runtime registered under that name.
* **size**: file bytes, node count (subgraphs included), subgraph depth, the declared size of all
  constant tensors, and allocations whose size is statically obvious (``ConstantOfShape``,
  ``Expand``, ``Tile``, ``Range``, ``Pad``, ``OneHot``, ``Resize``/``Upsample`` whose size inputs
  are constants): a 300-byte graph can otherwise ask for gigabytes while the session is built
  (constant folding) or on the first step.

What cannot be decided statically (a ``Loop`` whose trip count is 2**62, an allocation whose size
is computed from the input) is left to the sandbox's CPU, wall-clock and memory limits. So is the
parser's own cost: protobuf needs about 70 times a file's size in memory for a file made of empty
nodes (a 64 MiB file: ~4.5 GiB), which the sandbox's address-space cap turns into a refusal.

The caller hands onnxruntime :attr:`CheckedModel.data`, the model re-serialised from the parsed
message with unknown fields discarded, so that onnxruntime reads exactly what was checked (no field
a newer onnxruntime knows but this ``onnx`` package does not can slip through unexamined).
"""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.rl.errors import ModelFileError

MiB = 1024 * 1024

# The general upload limit (modelfiles._common.Limits.max_bytes): an ONNX policy is its weights
# plus a few hundred bytes per node, and the policies evaluated here are small.
MAX_FILE_BYTES = 64 * MiB
# SB3's MLP policies export to 6-50 nodes, a CNN policy to a few hundred; every node costs
# onnxruntime time and memory while the session is built, before any limit on acting applies.
MAX_NODES = 10_000
# Subgraphs nested inside subgraphs (If/Loop/Scan bodies). An MLP has none, an exported recurrent
# policy one or two; deep nesting only multiplies the work one node can cause.
MAX_GRAPH_DEPTH = 4
# The dense size of all constant tensors (initialisers, Constant attributes). A dense tensor cannot
# honestly declare more than the file carries; a *sparse* one can, and onnxruntime densifies
# sparse initialisers when it builds the session, so they count at their dense size.
MAX_TENSOR_BYTES = 64 * MiB
# Elements of one allocation whose size the graph fixes with constants (16 Mi elements is 64 MiB
# of float32, far more than any policy's activations).
MAX_STATIC_ELEMENTS = 2**24

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
_ONNX_DOMAINS = ("", "ai.onnx")
# Constants decoded to look at shapes; longer ones are never shapes.
_SMALL_CONSTANT = 1024


@dataclass(frozen=True)
class OnnxLimits:
    max_file_bytes: int = MAX_FILE_BYTES
    max_nodes: int = MAX_NODES
    max_graph_depth: int = MAX_GRAPH_DEPTH
    max_tensor_bytes: int = MAX_TENSOR_BYTES
    max_static_elements: int = MAX_STATIC_ELEMENTS


@dataclass
class CheckedModel:
    """A model that passed the checks: the bytes to give onnxruntime, and what was seen."""

    data: bytes
    model: Any  # onnx.ModelProto
    nodes: int = 0
    depth: int = 0
    tensor_bytes: int = 0
    opsets: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        m = self.model
        producer = " ".join(p for p in (m.producer_name, m.producer_version) if p) or None
        return {"ir_version": int(m.ir_version), "opsets": dict(self.opsets), "producer": producer,
                "nodes": self.nodes, "subgraph_depth": self.depth, "tensor_bytes": self.tensor_bytes}


def _too_large(what: str, value: int, limit: int, message: str) -> ModelFileError:
    return ModelFileError("onnx_too_large", message, status=413,
                          details={"what": what, "value": int(value), "limit": int(limit)})


# -- parsing -----------------------------------------------------------------------------------

def parse_model(data: bytes, limits: OnnxLimits | None = None):
    """Deserialise a ModelProto from bytes. Nothing but ``data`` is read: no path, no external data."""
    limits = limits or OnnxLimits()
    if len(data) > limits.max_file_bytes:
        raise _too_large("file_bytes", len(data), limits.max_file_bytes,
                         f"the ONNX file is {len(data)} bytes; the limit is {limits.max_file_bytes}")
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:  # RuntimeError: upb's recursion limit
        raise ModelFileError("truncated", f"the ONNX file cannot be parsed (cut off or damaged): "
                             f"{str(exc)[:200] or type(exc).__name__}") from None
    if not model.HasField("graph"):
        raise ModelFileError("bad_content", "the ONNX file has no graph")
    model.DiscardUnknownFields()
    return model


# -- walking every tensor and graph --------------------------------------------------------------

@dataclass
class _Finding:
    where: str
    name: str
    location: str | None = None


def _text(value: Any) -> str:
    """A name from the file as printable text: proto2 hands back bytes for invalid UTF-8."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:200]


def _is_external(t) -> bool:
    from onnx import TensorProto

    return t.data_location == TensorProto.EXTERNAL or len(t.external_data) > 0


def _location(t) -> str | None:
    for entry in t.external_data:
        if entry.key == "location":
            return _text(entry.value)
    return None


def _itemsize(data_type: int) -> int:
    from onnx import helper

    try:
        return max(1, int(np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize))
    except Exception:  # strings, sub-byte and exotic float types: count a generous 8 bytes
        return 8


def _dims_product(dims, where: str) -> int:
    n = 1
    for d in dims:
        if d < 0:
            raise ModelFileError("bad_content", f"{where} declares a negative dimension {d}")
        n *= int(d)
    return n


def _tensor_bytes(t, where: str) -> int:
    declared = _dims_product(t.dims, where) * _itemsize(t.data_type)
    return max(declared, len(t.raw_data), sum(len(s) for s in t.string_data))


def _attribute_tensors(attr) -> Iterator[tuple[Any, bool]]:
    """(tensor, is_sparse) for every tensor an attribute holds, whatever its declared type."""
    if attr.HasField("t"):
        yield attr.t, False
    for t in attr.tensors:
        yield t, False
    if attr.HasField("sparse_tensor"):
        yield attr.sparse_tensor, True
    for t in attr.sparse_tensors:
        yield t, True


def _attribute_graphs(attr) -> Iterator[Any]:
    if attr.HasField("g"):
        yield attr.g
    yield from attr.graphs


class _Walker:
    def __init__(self, limits: OnnxLimits) -> None:
        self.limits = limits
        self.nodes = 0
        self.depth = 0
        self.tensor_bytes = 0
        self.external: list[_Finding] = []
        self.foreign: list[_Finding] = []  # operators outside the standard domains
        self.allocations: list[tuple[str, int]] = []

    # tensors -------------------------------------------------------------------------------------
    def tensor(self, t, where: str, sparse: bool = False) -> None:
        if sparse:
            for part, label in ((t.values, "values"), (t.indices, "indices")):
                if _is_external(part):
                    self.external.append(_Finding(f"{where} ({label})", _text(part.name or t.values.name),
                                                  _location(part)))
            dense = _dims_product(t.dims, where) * _itemsize(t.values.data_type)
            self.add_bytes(max(dense, _tensor_bytes(t.values, where)), where)
            return
        if _is_external(t):
            self.external.append(_Finding(where, _text(t.name), _location(t)))
        self.add_bytes(_tensor_bytes(t, where), where)

    def add_bytes(self, n: int, where: str) -> None:
        self.tensor_bytes += n
        if self.tensor_bytes > self.limits.max_tensor_bytes:
            raise _too_large("tensor_bytes", self.tensor_bytes, self.limits.max_tensor_bytes,
                             f"the ONNX model's constant tensors declare more than "
                             f"{self.limits.max_tensor_bytes} bytes (reached at {where})")

    # graphs ----------------------------------------------------------------------------------------
    def graph(self, g, where: str, depth: int, outer: Mapping[str, np.ndarray]) -> None:
        if depth > self.depth:
            self.depth = depth
        if depth > self.limits.max_graph_depth:
            raise _too_large("subgraph_depth", depth, self.limits.max_graph_depth,
                             f"the ONNX graph nests subgraphs {depth} deep ({where}); the limit is "
                             f"{self.limits.max_graph_depth}")
        consts: MutableMapping[str, np.ndarray] = ChainMap({}, outer)  # outer names stay visible
        for t in g.initializer:
            self.tensor(t, f"initializer {t.name!r} of {where}")
            arr = _small_array(t)
            if arr is not None:
                consts[t.name] = arr
        for st in g.sparse_initializer:
            self.tensor(st, f"sparse initializer {st.values.name!r} of {where}", sparse=True)
        self.nodes_of(g.node, where, depth, consts)

    def nodes_of(self, nodes, where: str, depth: int, consts: MutableMapping[str, np.ndarray]) -> None:
        for i, node in enumerate(nodes):
            self.nodes += 1
            if self.nodes > self.limits.max_nodes:
                raise _too_large("nodes", self.nodes, self.limits.max_nodes,
                                 f"the ONNX model has more than {self.limits.max_nodes} nodes "
                                 "(subgraphs included)")
            label = f"node {_text(node.name) or i!r} ({_text(node.op_type)}) of {where}"
            if node.domain not in STANDARD_DOMAINS:
                self.foreign.append(_Finding(label, f"{_text(node.domain)}::{_text(node.op_type)}"))
            for attr in node.attribute:
                for t, sparse in _attribute_tensors(attr):
                    self.tensor(t, f"attribute {attr.name!r} of {label}", sparse=sparse)
            if node.domain in _ONNX_DOMAINS:
                if node.op_type == "Constant":
                    arr = _constant_node_value(node)
                    if arr is not None and node.output:
                        consts[node.output[0]] = arr
                else:
                    elements = _static_allocation(node, consts)
                    if elements is not None and elements > self.limits.max_static_elements:
                        raise _too_large(
                            "static_allocation", elements, self.limits.max_static_elements,
                            f"{label} asks for a tensor of {elements} elements (fixed by constants); the "
                            f"limit is {self.limits.max_static_elements}")
            for attr in node.attribute:
                for sub in _attribute_graphs(attr):
                    self.graph(sub, f"subgraph {attr.name!r} of {label}", depth + 1, consts)

    def function(self, fn, index: int) -> None:
        where = f"local function {_text(fn.domain)}::{_text(fn.name)}"
        for attr in fn.attribute_proto:
            for t, sparse in _attribute_tensors(attr):
                self.tensor(t, f"default attribute {attr.name!r} of {where}", sparse=sparse)
            for sub in _attribute_graphs(attr):
                self.graph(sub, f"default attribute {attr.name!r} of {where}", 1, {})
        self.nodes_of(fn.node, where, 0, {})


# -- constants and statically sized allocations --------------------------------------------------

def _small_array(t) -> np.ndarray | None:
    """A short numeric constant, decoded from the message itself (never from external data)."""
    from onnx import TensorProto

    if _is_external(t):
        return None
    try:
        n = _dims_product(t.dims, "a constant")
    except ModelFileError:
        return None
    if n > _SMALL_CONSTANT:
        return None
    kinds = {TensorProto.INT64: ("<i8", "int64_data"), TensorProto.INT32: ("<i4", "int32_data"),
             TensorProto.FLOAT: ("<f4", "float_data"), TensorProto.DOUBLE: ("<f8", "double_data")}
    if t.data_type not in kinds:
        return None
    dtype, fieldname = kinds[t.data_type]
    if t.raw_data:
        if len(t.raw_data) != n * np.dtype(dtype).itemsize:
            return None
        arr = np.frombuffer(t.raw_data, dtype=dtype)
    else:
        values = getattr(t, fieldname)
        if len(values) != n:
            return None
        arr = np.array(values, dtype=dtype)
    return arr.reshape(tuple(int(d) for d in t.dims))


def _constant_node_value(node) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            return _small_array(attr.t)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints" and len(attr.ints) <= _SMALL_CONSTANT:
            return np.array(attr.ints, dtype=np.int64)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats" and len(attr.floats) <= _SMALL_CONSTANT:
            return np.array(attr.floats, dtype=np.float32)
    return None


def _ints(consts: Mapping[str, np.ndarray], node, index: int) -> list[int] | None:
    if len(node.input) <= index or not node.input[index]:
        return None
    arr = consts.get(node.input[index])
    if arr is None or arr.dtype.kind not in "iu":
        return None
    return [int(v) for v in arr.reshape(-1)]


def _floats(consts: Mapping[str, np.ndarray], node, index: int) -> list[float] | None:
    if len(node.input) <= index or not node.input[index]:
        return None
    arr = consts.get(node.input[index])
    if arr is None or arr.dtype.kind not in "iuf":
        return None
    return [float(v) for v in arr.reshape(-1)]


def _product(values: list[int]) -> int | None:
    if any(v < 0 for v in values):
        return None  # invalid; onnxruntime refuses it
    return math.prod(values)


def _static_allocation(node, consts: Mapping[str, np.ndarray]) -> int | None:
    """A lower bound on the elements ``node`` will allocate, when constants fix it; else None."""
    op = node.op_type
    if op == "ConstantOfShape":
        shape = _ints(consts, node, 0)
        return None if shape is None else _product(shape)
    if op == "Expand":  # output dims are max(input dim, shape dim) under broadcasting
        shape = _ints(consts, node, 1)
        return None if shape is None else _product(shape)
    if op == "Tile":
        repeats = _ints(consts, node, 1)
        if repeats is None:
            return None
        base = consts.get(node.input[0])
        n = _product(repeats)
        return None if n is None else n * (int(base.size) if base is not None else 1)
    if op == "Range":
        start, limit, delta = (_floats(consts, node, i) for i in range(3))
        if not (start and limit and delta) or delta[0] == 0 or not all(
                math.isfinite(v[0]) for v in (start, limit, delta)):
            return None
        return max(math.ceil((limit[0] - start[0]) / delta[0]), 0)
    if op == "Pad":
        pads = _ints(consts, node, 1)
        if not pads or len(pads) % 2:
            return None
        half = len(pads) // 2
        return math.prod(max(pads[i] + pads[i + half] + 1, 0) for i in range(half))
    if op == "OneHot":
        depth = _floats(consts, node, 1)
        return None if not depth or not math.isfinite(depth[0]) else max(int(depth[0]), 0)
    if op in ("Resize", "Upsample"):
        sizes = _ints(consts, node, 3) if op == "Resize" else None
        if sizes:
            return _product(sizes)
        scales = _floats(consts, node, 2 if op == "Resize" else 1)
        if scales and all(math.isfinite(s) and s >= 0 for s in scales):
            return int(math.prod(scales))
    return None


# -- the whole check ---------------------------------------------------------------------------

def _advice_external() -> str:
    return ("Save the model with its weights inside the one file: torch.onnx.export(..., external_data=False) "
            "(since torch 2.9 the default exporter writes weights to a side file '<name>.onnx.data'), or "
            "onnx.save_model(onnx.load('model.onnx'), 'single.onnx', save_as_external_data=False).")


def check_model(model, data_len: int = 0, limits: OnnxLimits | None = None) -> CheckedModel:
    """Refuse ``model`` (a parsed ModelProto) if it is unsafe to hand to onnxruntime.

    Raises :class:`ModelFileError` with code ``onnx_external_data``, ``onnx_custom_domain``,
    ``onnx_local_function`` or ``onnx_too_large`` (HTTP 413). When a model breaks several rules,
    external data is reported first: it is the one that reads files.
    """
    limits = limits or OnnxLimits()
    if data_len > limits.max_file_bytes:
        raise _too_large("file_bytes", data_len, limits.max_file_bytes,
                         f"the ONNX file is {data_len} bytes; the limit is {limits.max_file_bytes}")
    walker = _Walker(limits)
    walker.graph(model.graph, "the main graph", 0, {})
    for i, fn in enumerate(model.functions):
        walker.function(fn, i)
    for i, info in enumerate(model.training_info):
        for part in ("initialization", "algorithm"):
            if info.HasField(part):
                walker.graph(getattr(info, part), f"training_info[{i}].{part}", 0, {})
    if walker.external:
        first = walker.external[0]
        where = f" at {first.location!r}" if first.location else ""
        raise ModelFileError(
            "onnx_external_data",
            f"the ONNX model keeps tensor {first.name!r} ({first.where}) in another file{where}; uploads must be "
            f"one self-contained file and the hub never reads any other. {_advice_external()}",
            details={"tensor": first.name, "where": first.where, "location": first.location,
                     "count": len(walker.external)})
    # A call to a model-local function is a node in the function's domain: report it as such.
    local = {f"{_text(fn.domain)}::{_text(fn.name)}" for fn in model.functions}
    foreign = [f for f in walker.foreign if f.name not in local]
    if foreign or len(model.functions):
        if foreign:
            first = foreign[0]
            domains = sorted({f.name.split("::", 1)[0] for f in foreign})
            raise ModelFileError(
                "onnx_custom_domain",
                f"{first.where} is operator {first.name!r}, outside the standard ONNX domains "
                f"('', 'ai.onnx', 'ai.onnx.ml'); custom and runtime-specific operators (e.g. onnxruntime's "
                f"'com.microsoft' contrib ops) are refused. Export with standard operators only.",
                details={"domains": domains, "node": first.where, "count": len(foreign)})
        names = [f"{_text(fn.domain)}::{_text(fn.name)}" for fn in model.functions][:10]
        raise ModelFileError(
            "onnx_local_function",
            f"the ONNX model defines local functions ({', '.join(names)}); they are refused like custom "
            "operators. Inline them first: onnx.save(onnx.inliner.inline_local_functions(onnx.load(path)), path).",
            details={"functions": names})
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    return CheckedModel(data=b"", model=model, nodes=walker.nodes, depth=walker.depth,
                        tensor_bytes=walker.tensor_bytes, opsets=opsets)


def check_onnx_bytes(data: bytes, limits: OnnxLimits | None = None) -> CheckedModel:
    """Parse and check an uploaded ONNX file; the result's ``data`` is what onnxruntime may load."""
    limits = limits or OnnxLimits()
    model = parse_model(data, limits)
    checked = check_model(model, len(data), limits)
    checked.data = model.SerializeToString()
    return checked
