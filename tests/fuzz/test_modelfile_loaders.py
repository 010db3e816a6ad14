"""Fuzzing the model-file loaders: uploads are untrusted, so any byte string must end in a loaded
policy or a :class:`ModelFileError`, never in another exception, and never take over a second.

Inputs come from four generators: raw bytes behind the magic numbers the sniffer looks for; valid
files of every accepted format (a hand-made Stable-Baselines3 zip among them, and the seed PyTorch
checkpoint) mutated byte-wise; zip archives
assembled from the member names the zip-based formats use; and safetensors files with generated
headers. A property-based search over those spaces finds what hand-written cases miss, and every
failure Hypothesis reports is shrunk to a small input that can be pasted into a unit test.

``RESIMHUB_FUZZ_EXAMPLES`` sets the examples per generator. CI's default (3,000 x 4) keeps the module
within its budget; docs/reliability.md gives the command for the full 100,000 (25,000 x 4).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import struct
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.rl.errors import ModelFileError
from actors.rl.modelfiles import load_policy, sniff_format
from actors.rl.nn import MLP
from actors.rl.policy import MLPPolicy, TabularPolicy, save_policy
from tests.support.fixtures import SEED_DQN_MODEL

EXAMPLES = int(os.environ.get("RESIMHUB_FUZZ_EXAMPLES", "3000"))
TIME_LIMIT_S = 1.0
FIXTURE = SEED_DQN_MODEL

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


# -- seeds: one valid file of every accepted format, built here ---------------------------------

def _net(sizes=(4, 6, 2), activation="relu", seed=0) -> MLP:
    return MLP(list(sizes), activation, rng=np.random.default_rng(seed))


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _torch_zip_bytes(state: dict[str, np.ndarray]) -> bytes:
    """A ``torch.save(state_dict)`` archive written by hand (no torch here), as the upload tests do."""
    def s(text: str) -> bytes:
        raw = text.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    def i(n: int) -> bytes:
        return b"J" + struct.pack("<i", n)

    def tup(items: list[bytes]) -> bytes:
        return b"(" + b"".join(items) + b"t"

    def glob(module: str, name: str) -> bytes:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    pkl = b"\x80\x02" + glob("collections", "OrderedDict") + b")R("
    storages = {}
    for k, (name, arr) in enumerate(state.items()):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        storages[str(k)] = arr.reshape(-1)
        pid = tup([s("storage"), glob("torch", "FloatStorage"), s(str(k)), s("cpu"), i(arr.size)])
        strides = [st_ // arr.itemsize for st_ in arr.strides]
        args = tup([pid + b"Q", i(0), tup([i(d) for d in arr.shape]), tup([i(d) for d in strides]), b"\x89",
                    glob("collections", "OrderedDict") + b")R"])
        pkl += s(name) + glob("torch._utils", "_rebuild_tensor_v2") + args + b"R"
    pkl += b"u."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        for key, arr in storages.items():
            zf.writestr(f"archive/data/{key}", arr.astype("<f4").tobytes())
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def _safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    header: dict = {"__metadata__": metadata} if metadata else {}
    payload = b""
    for name, arr in arrays.items():
        raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        offsets = [len(payload), len(payload) + len(raw)]
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": offsets}
        payload += raw
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + payload


def _onnx_bytes(net: MLP) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "obs"
    for k, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{k}"),
                  numpy_helper.from_array(b.astype(np.float32), f"B{k}")]
        last = k == len(net.weights) - 1
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"B{k}"], ["q" if last else f"l{k}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"l{k}"], [f"h{k}"]))
            prev = f"h{k}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["b", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _sb3_zip_bytes(net: MLP) -> bytes:
    """A Stable-Baselines3 ``model.save()`` archive written by hand: ``data`` with the plain JSON
    fields SB3 writes (and an opaque ``:serialized:`` blob), ``policy.pth`` in torch.save's zip."""
    state = {}
    names = ["mlp_extractor.policy_net.0", "action_net"]
    for name, w, b in zip(names, net.weights, net.biases, strict=True):
        state[f"{name}.weight"], state[f"{name}.bias"] = np.ascontiguousarray(w.T), b
    state["value_net.weight"], state["value_net.bias"] = np.zeros((1, 4)), np.zeros(1)
    blob = {":type:": "<class 'gymnasium.spaces.box.Box'>", ":serialized:": "gAWVAAAAAAAAAAA="}
    data = {
        "policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": "gAWVAAAAAAAAAAA=",
                         "__module__": "stable_baselines3.common.policies",
                         "__init__": "<function ActorCriticPolicy.__init__ at 0x7f0000000000>"},
        "policy_kwargs": {"net_arch": [6]},
        "observation_space": {**blob, "dtype": "float32", "_shape": [4], "low": "[-4.8 -inf -0.41887903 -inf]",
                              "high": "[4.8 inf 0.41887903 inf]"},
        "action_space": {":type:": "<class 'gymnasium.spaces.discrete.Discrete'>", ":serialized:": "gAWV",
                         "dtype": "int64", "n": "2", "start": "0", "_shape": []},
        "use_sde": False,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("data", json.dumps(data))
        zf.writestr("policy.pth", _torch_zip_bytes(state))
        zf.writestr("_stable_baselines3_version", "2.9.2")
    return buf.getvalue()


def _native_bytes(policy) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.npz"
        save_policy(policy, path, {"env_id": "CartPole-v1"})
        return path.read_bytes()


def _state_dict(net: MLP, prefix: str = "net") -> dict[str, np.ndarray]:
    out = {}
    for k, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        # nn.Linear stores weight as (out, in); our MLP keeps (in, out).
        out[f"{prefix}.{2 * k}.weight"] = np.ascontiguousarray(w.T)
        out[f"{prefix}.{2 * k}.bias"] = b
    return out


_SEEDS: dict[str, bytes] | None = None


def seeds() -> dict[str, bytes]:
    global _SEEDS
    if _SEEDS is None:
        net = _net()
        seeds_ = {
            "native-mlp": _native_bytes(MLPPolicy(net, "discrete", (4,))),
            "native-tabular": _native_bytes(TabularPolicy(np.arange(12, dtype=np.float64).reshape(4, 3))),
            "npz-state-dict": _npz_bytes(_state_dict(net)),
            "torch-zip": _torch_zip_bytes(_state_dict(net)),
            "sb3-zip": _sb3_zip_bytes(net),
            "safetensors": _safetensors_bytes(_state_dict(net), {"activation": "tanh"}),
            "onnx": _onnx_bytes(net),
        }
        if FIXTURE.exists():
            seeds_["seed-fixture"] = FIXTURE.read_bytes()
        for name, data in seeds_.items():
            # Untimed first loads: imports (onnxruntime) and the CartPole spec lookup happen once, here.
            path = _WORKDIR / "seed.bin"
            path.write_bytes(data)
            with contextlib.suppress(ModelFileError):  # the tabular seed does not fit CartPole
                load_policy(path, env_id="CartPole-v1")
            # The seeds themselves must load, or the fuzzing proves little.
            assert _attempt(data, None) == "loaded", name
        _SEEDS = seeds_
    return _SEEDS


# -- the property ---------------------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.inputs = 0
        self.loaded = 0
        self.codes: dict[str, int] = {}
        self.slowest = 0.0
        self.slowest_input = ""


TALLY = Tally()
_WORKDIR = Path(tempfile.mkdtemp(prefix="resimhub-fuzz-"))
atexit.register(shutil.rmtree, _WORKDIR, True)


def _attempt(data: bytes, env_id: str | None) -> str:
    """Load ``data`` as an uploaded file; returns "loaded" or the refusal code. Anything else fails."""
    path = _WORKDIR / "upload.bin"
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        loaded = load_policy(path, env_id=env_id)
        if env_id == "CartPole-v1":
            # A policy that loaded for CartPole must act on CartPole observations.
            actions = np.asarray(loaded.policy.act(np.zeros((3, 4), dtype=np.float32)))
            assert actions.shape[0] == 3 and np.all((actions >= 0) & (actions < 2)), actions
        outcome = "loaded"
    except ModelFileError as exc:
        assert exc.code and isinstance(exc.status, int) and 400 <= exc.status < 500, (exc.code, exc.status)
        outcome = exc.code
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT_S, f"one input took {elapsed:.2f}s: {data[:64]!r}… ({len(data)} bytes)"
    # The sniffer alone, on the bytes rather than the file, must agree to refuse or accept the same way.
    try:
        sniff_format(data)
    except ModelFileError:
        pass
    TALLY.inputs += 1
    if elapsed > TALLY.slowest:
        TALLY.slowest, TALLY.slowest_input = elapsed, f"{data[:16]!r}… ({len(data)} bytes, env {env_id})"
    if outcome == "loaded":
        TALLY.loaded += 1
    else:
        TALLY.codes[outcome] = TALLY.codes.get(outcome, 0) + 1
    return outcome


# -- generators -----------------------------------------------------------------------------------

MAGICS = [b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY\x01\x00", b"\x80\x02", b"\x80\x04\x95", b"\x80\x05",
          b"\x08\x08\x12", b"\x08\x07", b"\x89HDF\r\n\x1a\n", b"{", b"\x00" * 8 + b"{",
          b"\x10\x00\x00\x00\x00\x00\x00\x00{"]
ENV_IDS = st.sampled_from([None, None, "CartPole-v1"])


def _edit(draw, data: bytearray) -> bytearray:
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "flip", "overwrite", "overwrite", "truncate", "insert", "duplicate",
                                   "zero"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos:pos + len(chunk)] = chunk
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "duplicate":
            end = draw(st.integers(pos, min(len(data), pos + 256)))
            data[pos:pos] = data[pos:end]
        elif op == "zero":
            end = draw(st.integers(pos, min(len(data), pos + 64)))
            data[pos:end] = bytes(end - pos)
    return data


@st.composite
def mutated_seed(draw) -> bytes:
    """A valid file with a few random edits: flips, overwrites, truncation, insertion, duplication.

    Half of the zip-based seeds are edited inside one member and re-zipped, so that the CRC still
    holds and the edit reaches the member's parser (pickle, npy) instead of the zip checks.
    """
    name = draw(st.sampled_from(sorted(seeds())))
    data = seeds()[name]
    if data[:2] == b"PK" and draw(st.booleans()):
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
            names = src.namelist()
            target = draw(st.sampled_from(names))
            for member in names:
                content = src.read(member)
                if member == target:
                    content = bytes(_edit(draw, bytearray(content)))
                dst.writestr(member, content)
        return out.getvalue()
    return bytes(_edit(draw, bytearray(data)))


MEMBER_NAMES = ["archive/data.pkl", "archive/byteorder", "archive/version", "archive/data/0", "archive/data/1",
                "archive/constants.pkl", "archive/code/__torch__.py", "model/data.pkl", "__manifest__.npy",
                "q_table.npy", "net.0.weight.npy", "net.0.bias.npy", "net.2.weight.npy", "net.2.bias.npy",
                "actor.0.weight.npy", "log_std.npy", "data.pkl", "x.npy", "../escape.npy", "a/b/c/d.npy",
                "data", "policy.pth", "_stable_baselines3_version", "pytorch_variables.pth"]


@st.composite
def npy_member(draw) -> bytes:
    """An ``.npy`` payload with a generated header (dtype, shape, order) and too little or too much data."""
    descr = draw(st.sampled_from(["<f4", "<f8", "<i8", "|O", "<U4", "|b1", ">f4", "<c16", "|V8", "<f2", "bogus"]))
    shape = draw(st.lists(st.integers(-2, 2**33), max_size=4).map(tuple) | st.lists(st.integers(0, 8), max_size=3)
                 .map(tuple))
    header = repr({"descr": descr, "fortran_order": draw(st.booleans()), "shape": shape}).encode()
    if draw(st.booleans()):
        header = draw(st.binary(max_size=80))
    version = draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]))
    size_field = struct.pack("<H", len(header)) if version == b"\x01\x00" else struct.pack("<I", len(header))
    if draw(st.booleans()):
        size_field = draw(st.binary(min_size=len(size_field), max_size=len(size_field)))
    return b"\x93NUMPY" + version + size_field + header + draw(st.binary(max_size=128))


@st.composite
def assembled_zip(draw) -> bytes:
    """A zip built from the member names the zip formats look for, with generated or borrowed contents."""
    buf = io.BytesIO()
    borrowed = [data for data in seeds().values() if data[:2] == b"PK"]
    with zipfile.ZipFile(buf, "w") as zf:
        for _ in range(draw(st.integers(0, 6))):
            name = draw(st.sampled_from(MEMBER_NAMES) | st.text(min_size=1, max_size=20))
            kind = draw(st.sampled_from(["npy", "bytes", "borrowed", "pickle"]))
            if kind == "npy":
                content = draw(npy_member())
            elif kind == "borrowed":
                with zipfile.ZipFile(io.BytesIO(draw(st.sampled_from(borrowed)))) as src:
                    content = src.read(draw(st.sampled_from(src.namelist())))
            elif kind == "pickle":
                content = b"\x80\x02" + draw(st.binary(max_size=200)) + b"."
            else:
                content = draw(st.binary(max_size=200))
            method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
            try:
                with warnings.catch_warnings():  # duplicate member names are part of the point
                    warnings.simplefilter("ignore")
                    zf.writestr(zipfile.ZipInfo(name), content, compress_type=method)
            except (ValueError, UnicodeEncodeError):
                continue
    return buf.getvalue()


@st.composite
def generated_safetensors(draw) -> bytes:
    """A safetensors file whose JSON header is generated: dtypes, shapes and offsets that may lie."""
    tensors = {}
    for k in range(draw(st.integers(0, 4))):
        lo = draw(st.integers(-8, 200))
        tensors[draw(st.sampled_from([f"net.{2 * k}.weight", f"net.{2 * k}.bias", "x", "__metadata__"]))] = {
            "dtype": draw(st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "BOOL", "U8", "F8_E4M3", "Q4", 7])),
            "shape": draw(st.lists(st.integers(-1, 2**40), max_size=3) | st.lists(st.integers(0, 6), max_size=2)),
            "data_offsets": [lo, lo + draw(st.integers(-4, 200))],
        }
    if draw(st.booleans()):
        tensors["__metadata__"] = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(),
                                                       max_size=3))
    head = json.dumps(tensors).encode()
    if draw(st.booleans()):
        head = head[:draw(st.integers(0, len(head)))]
    length = len(head) if draw(st.integers(0, 4)) else draw(st.integers(0, 2**64 - 1))
    return struct.pack("<Q", length) + head + draw(st.binary(max_size=300))


# -- the tests --------------------------------------------------------------------------------------

@FUZZ
@given(prefix=st.sampled_from(MAGICS), tail=st.binary(max_size=512), env_id=ENV_IDS)
def _raw_bytes(prefix, tail, env_id):
    _attempt(prefix + tail, env_id)


@FUZZ
@given(data=mutated_seed(), env_id=ENV_IDS)
def _mutated(data, env_id):
    _attempt(data, env_id)


@FUZZ
@given(data=assembled_zip(), env_id=ENV_IDS)
def _zips(data, env_id):
    _attempt(data, env_id)


@FUZZ
@given(data=generated_safetensors(), env_id=ENV_IDS)
def _safetensors(data, env_id):
    _attempt(data, env_id)


def _run(fuzz) -> Tally:
    """Run one generator and check the harness itself: every example reached the loader."""
    global TALLY
    seeds()
    TALLY = Tally()
    fuzz()
    tally = TALLY
    print(f"\n{fuzz.__name__.strip('_')}: {tally.inputs} inputs, {tally.loaded} loaded, slowest "
          f"{tally.slowest * 1000:.0f} ms ({tally.slowest_input}), refusals {dict(sorted(tally.codes.items()))}")
    assert tally.inputs >= EXAMPLES, tally.inputs
    return tally


def test_raw_bytes_behind_every_magic_number():
    tally = _run(_raw_bytes)
    assert {"unsupported_format", "truncated", "pickle_refused"} <= set(tally.codes)


def test_mutated_valid_files():
    tally = _run(_mutated)
    # Both outcomes: mild edits (e.g. inside a weight) still load, the rest are refused by the
    # parsers behind the sniffer, not only by the sniffer.
    assert tally.loaded > 0
    assert len(set(tally.codes) - {"unsupported_format", "truncated"}) >= 2, tally.codes


def test_assembled_zip_archives():
    tally = _run(_zips)
    assert len(tally.codes) >= 3, tally.codes


def test_generated_safetensors_headers():
    tally = _run(_safetensors)
    assert len(tally.codes) >= 2, tally.codes
