"""Model files are untrusted: these tests feed the loader hostile, broken and foreign files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.modelfiles import LoadedModel, load_policy, sniff_format
from actors.rl.nn import MLP
from actors.rl.policy import MLPPolicy, TabularPolicy, save_policy
from tests.support.fixtures import SEED_DQN_MODEL

FIXTURE = SEED_DQN_MODEL


# -- building files by hand ----------------------------------------------------------------------

class _RunsCommand:
    """Unpickling this runs a shell command: exactly what a loader must never do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _pickle_str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _pickle_int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _pickle_tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


_STORAGE = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
            np.dtype("int64"): "LongStorage"}


def torch_state_dict_pickle(tensors: dict[str, tuple[str, np.ndarray, int, tuple, tuple]]) -> bytes:
    """The data.pkl ``torch.save(state_dict)`` writes, assembled opcode by opcode (no torch here).

    ``tensors`` maps name -> (storage key, storage array, offset, size, stride).
    """
    out = b"\x80\x02" + _pickle_global("collections", "OrderedDict") + b")R" + b"("
    for name, (key, storage, offset, size, stride) in tensors.items():
        pid = _pickle_tuple([_pickle_str("storage"), _pickle_global("torch", _STORAGE[storage.dtype]),
                             _pickle_str(key), _pickle_str("cpu"), _pickle_int(storage.size)])
        args = _pickle_tuple([pid + b"Q", _pickle_int(offset), _pickle_tuple([_pickle_int(s) for s in size]),
                              _pickle_tuple([_pickle_int(s) for s in stride]), b"\x89",
                              _pickle_global("collections", "OrderedDict") + b")R"])
        out += _pickle_str(name) + _pickle_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
    return out + b"u."


def write_torch_zip(path: Path, data_pkl: bytes, storages: dict[str, np.ndarray], prefix: str = "archive",
                    extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", data_pkl)
        zf.writestr(f"{prefix}/byteorder", "little")
        for key, arr in storages.items():
            zf.writestr(f"{prefix}/data/{key}", np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{prefix}/version", "3\n")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def torch_checkpoint(path: Path, state: dict[str, np.ndarray]) -> Path:
    tensors, storages = {}, {}
    for i, (name, arr) in enumerate(state.items()):
        arr = np.ascontiguousarray(arr)
        key = str(i)
        storages[key] = arr.reshape(-1)
        strides = tuple(s // arr.itemsize for s in arr.strides)
        tensors[name] = (key, storages[key], 0, arr.shape, strides)
    return write_torch_zip(path, torch_state_dict_pickle(tensors), storages)


def small_net(sizes=(4, 8, 2), activation="relu", seed=0) -> MLP:
    return MLP(list(sizes), activation, rng=np.random.default_rng(seed))


def cartpole_obs(n=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.2, 0.2, size=(n, 4)).astype(np.float32)


# -- the fixture ---------------------------------------------------------------------------------

def test_seed_fixture_is_a_torch_zip_despite_its_name():
    assert sniff_format(FIXTURE) == "torch-zip"
    assert sniff_format(FIXTURE.read_bytes()) == "torch-zip"


def test_seed_fixture_loads_and_acts_on_cartpole():
    loaded = load_policy(FIXTURE, env_id="CartPole-v1")
    assert isinstance(loaded, LoadedModel)
    assert loaded.format == "torch-zip"
    assert loaded.sha256 == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert loaded.shapes == {"net.0.weight": [64, 4], "net.0.bias": [64], "net.2.weight": [64, 64],
                             "net.2.bias": [64], "net.4.weight": [2, 64], "net.4.bias": [2]}
    policy = loaded.policy
    assert policy.describe()["sizes"] == [4, 64, 64, 2]
    assert policy.describe()["activation"] == "relu"  # the documented state-dict default
    actions = policy.act(cartpole_obs())
    assert actions.shape == (64,) and actions.dtype == np.int64
    assert set(actions.tolist()) <= {0, 1}
    json.dumps(loaded.to_dict(), allow_nan=False)


def test_fixture_weights_match_an_independent_reading_of_the_zip():
    loaded = load_policy(FIXTURE)
    with zipfile.ZipFile(FIXTURE) as zf:
        raw = np.frombuffer(zf.read("dqn_model/data/4"), dtype="<f4")
    np.testing.assert_array_equal(loaded.policy.net.weights[2].T, raw.reshape(2, 64))


def test_activation_option_is_applied():
    assert load_policy(FIXTURE, activation="tanh").policy.describe()["activation"] == "tanh"
    with pytest.raises(ModelFileError):
        load_policy(FIXTURE, activation="sigmoid")


# -- hostile pickles -----------------------------------------------------------------------------

def test_plain_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps(_RunsCommand(marker), protocol=4))
    with pytest.raises(ModelFileError) as err:
        load_policy(evil, env_id="CartPole-v1")
    assert err.value.code == "pickle_refused"
    assert err.value.status == 415
    assert "arbitrary code" in str(err.value)
    assert "safetensors" in str(err.value) and "ONNX" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_every_pickle_protocol_is_recognised(tmp_path, protocol):
    marker = tmp_path / "pwned"
    data = pickle.dumps(_RunsCommand(marker), protocol=protocol)
    with pytest.raises(ModelFileError) as err:
        sniff_format(data)
    assert err.value.code == "pickle_refused"
    assert not marker.exists()


def test_torch_checkpoint_with_code_in_data_pkl_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write_torch_zip(tmp_path / "evil.pt", pickle.dumps(_RunsCommand(marker), protocol=2), {})
    assert sniff_format(path) == "torch-zip"
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "unsafe_global"
    assert err.value.status == 415
    assert "system" in str(err.value)  # the refused global is named
    assert not marker.exists()


def test_torch_checkpoint_pickling_a_whole_module_is_refused(tmp_path):
    data = b"\x80\x02" + _pickle_global("torch.nn.modules.linear", "Linear") + b")R."
    path = write_torch_zip(tmp_path / "module.pt", data, {})
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "unsafe_global"
    assert "torch.nn.modules.linear.Linear" in str(err.value)


def test_pickle_build_cannot_tamper_with_the_stand_ins(tmp_path):
    # BUILD on the storage-type stand-in tries to change the dtype it maps to.
    data = (b"\x80\x02" + _pickle_global("torch", "FloatStorage") + b"}" + _pickle_str("dtype")
            + _pickle_str("O") + b"sb.")
    path = write_torch_zip(tmp_path / "build.pt", data, {})
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "bad_content"
    assert load_policy(FIXTURE).policy.net.weights[0].dtype == np.float32  # still reads fine


def test_npz_with_object_array_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, **{"net.0.weight": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "pickle_refused"


# -- round trips and foreign state dicts ---------------------------------------------------------

def test_native_round_trip_keeps_actions_and_manifest(tmp_path):
    policy = MLPPolicy(small_net((4, 16, 16, 2), "tanh"), "discrete", (4,))
    path = tmp_path / "m.npz"
    save_policy(policy, path, {"env_id": "CartPole-v1", "training": {"agent": "ppo", "lr": 3e-4}})
    with np.load(path, allow_pickle=False) as z:
        manifest = json.loads(str(z["__manifest__"][()]))
        assert "net.0.weight" in z.files
    assert manifest["format"] == "resimhub-policy" and manifest["format_version"] == 1
    assert manifest["architecture"]["sizes"] == [4, 16, 16, 2]
    assert manifest["activation"] == "tanh" and manifest["head"] == "discrete"
    assert manifest["observation_space"]["shape"] == [4] and manifest["action_space"]["n"] == 2
    assert set(manifest["versions"]) >= {"numpy", "gymnasium", "resimhub"}
    assert manifest["training"] == {"agent": "ppo", "lr": 3e-4}
    loaded = load_policy(path, env_id="CartPole-v1", activation="relu")  # the manifest wins
    assert loaded.format == "resimhub-npz"
    assert loaded.policy.describe()["activation"] == "tanh"
    obs = cartpole_obs()
    np.testing.assert_array_equal(loaded.policy.act(obs), policy.act(obs))


def test_native_box_policy_round_trip(tmp_path):
    policy = MLPPolicy(small_net((3, 8, 1), "tanh"), "box", (3,), np.array([-2.0]), np.array([2.0]),
                       log_std=np.array([-0.5]))
    path = tmp_path / "pendulum.npz"
    save_policy(policy, path, {"env_id": "Pendulum-v1"})
    loaded = load_policy(path, env_id="Pendulum-v1")
    obs = np.random.default_rng(1).normal(size=(10, 3)) * 5
    np.testing.assert_allclose(loaded.policy.act(obs), policy.act(obs))
    assert loaded.policy.act(obs).max() <= 2.0
    np.testing.assert_array_equal(loaded.policy.log_std, [-0.5])


def test_native_tabular_round_trip(tmp_path):
    q = np.arange(16 * 4, dtype=np.float64).reshape(16, 4) % 5
    path = tmp_path / "q.npz"
    save_policy(TabularPolicy(q), path, {"env_id": "FrozenLake-v1"})
    loaded = load_policy(path, env_id="FrozenLake-v1")
    np.testing.assert_array_equal(loaded.policy.act(np.arange(16)), q.argmax(axis=1))
    with pytest.raises(PolicyMismatchError):
        load_policy(path, env_id="CartPole-v1")


def test_manifest_that_contradicts_the_arrays_is_refused(tmp_path):
    policy = MLPPolicy(small_net(), "discrete", (4,))
    path = tmp_path / "m.npz"
    save_policy(policy, path, {})
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    manifest = json.loads(str(arrays["__manifest__"][()]))
    manifest["architecture"]["sizes"] = [4, 9, 2]
    arrays["__manifest__"] = np.array(json.dumps(manifest))
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "bad_manifest"
    arrays["__manifest__"] = np.array("{not json")
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "bad_manifest"


def test_plain_npz_state_dict_with_actor_and_critic_picks_the_actor(tmp_path):
    actor, critic = small_net((4, 8, 2), "tanh", 1), small_net((4, 8, 1), "tanh", 2)
    state = {**actor.state_dict("actor"), **critic.state_dict("critic")}
    path = tmp_path / "ac.npz"
    np.savez(path, **state)
    loaded = load_policy(path, env_id="CartPole-v1", activation="tanh")
    assert loaded.format == "npz-state-dict"
    assert loaded.manifest["layers"] == ["actor.0", "actor.2"]
    obs = cartpole_obs()
    np.testing.assert_array_equal(loaded.policy.act(obs), actor.forward(obs).argmax(axis=1))
    assert load_policy(path, prefix="critic").policy.n_outputs == 1


def test_layers_are_ordered_by_index_not_by_name(tmp_path):
    net = MLP([4, 8, 8, 8, 8, 8, 8, 2], "relu", rng=np.random.default_rng(3))
    state = net.state_dict("q")  # q.0 … q.12: "q.10" sorts before "q.2" as text
    path = tmp_path / "deep.npz"
    np.savez(path, **state)
    loaded = load_policy(path)
    assert loaded.policy.describe()["sizes"] == net.sizes
    obs = cartpole_obs()
    np.testing.assert_allclose(loaded.policy.forward(obs.astype(np.float64)), net.forward(obs))


def test_non_linear_parameters_are_refused_not_ignored(tmp_path):
    state = small_net((4, 8, 2)).state_dict()
    state["net.1.weight"] = np.ones(8)  # a LayerNorm between the Linear layers
    state["net.1.bias"] = np.zeros(8)
    path = tmp_path / "ln.npz"
    np.savez(path, **state)
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "unsupported_format"
    assert "net.1.weight" in str(err.value)


def test_crafted_torch_checkpoint_with_views_and_doubles(tmp_path):
    net = small_net((4, 8, 3), "relu", 5)
    state = {k: v.astype(np.float32) for k, v in net.state_dict("model.net").items()}
    path = torch_checkpoint(tmp_path / "ckpt.pt", state)
    loaded = load_policy(path)
    np.testing.assert_allclose(loaded.policy.net.weights[0], state["model.net.0.weight"].T)
    # A transposed view into a shared storage (stride (1, 4)) with an offset.
    base = np.arange(40, dtype=np.float64)
    data = torch_state_dict_pickle({"w.0.weight": ("0", base, 8, (4, 4), (1, 4)),
                                    "w.0.bias": ("0", base, 0, (4,), (1,))})
    view_path = write_torch_zip(tmp_path / "view.pt", data, {"0": base})
    w = load_policy(view_path).policy.net.weights[0]  # stored (in, out) = transpose of (out, in)
    expected = np.lib.stride_tricks.as_strided(base[8:], shape=(4, 4), strides=(8, 32))
    np.testing.assert_array_equal(w.T, expected)


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    base = np.zeros(10, dtype=np.float32)
    data = torch_state_dict_pickle({"net.0.weight": ("0", base, 4, (2, 4), (4, 1))})
    path = write_torch_zip(tmp_path / "oob.pt", data, {"0": base})
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "bad_content"


def test_torch_storage_shorter_than_declared_is_truncated(tmp_path):
    base = np.zeros(64, dtype=np.float32)
    data = torch_state_dict_pickle({"net.0.weight": ("0", base, 0, (8, 8), (8, 1))})
    path = write_torch_zip(tmp_path / "short.pt", data, {"0": base[:10]})
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "truncated"


def test_torchscript_archive_is_reported_as_such(tmp_path):
    path = write_torch_zip(tmp_path / "script.pt", b"\x80\x02}.", {},
                           extra={"archive/constants.pkl": b"\x80\x02).", "archive/code/__torch__/m.py": b""})
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "unsupported_format"
    assert "TorchScript" in str(err.value)


def test_safetensors_state_dict(tmp_path):
    from safetensors.numpy import save_file

    net = small_net((4, 8, 2), "tanh", 7)
    path = tmp_path / "m.safetensors"
    save_file({k: v.astype(np.float32) for k, v in net.state_dict().items()}, str(path),
              metadata={"activation": "tanh"})
    loaded = load_policy(path, env_id="CartPole-v1")
    assert loaded.format == "safetensors"
    assert loaded.policy.describe()["activation"] == "tanh"  # stated in the file's metadata
    obs = cartpole_obs()
    np.testing.assert_array_equal(loaded.policy.act(obs), net.forward(obs.astype(np.float32)).argmax(axis=1))


def test_safetensors_header_limits(tmp_path):
    path = tmp_path / "big.safetensors"
    header = json.dumps({"x": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 4 << 30]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "too_large"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{" + b"\0" * 16)
    with pytest.raises(ModelFileError):
        load_policy(path)


# -- ONNX ----------------------------------------------------------------------------------------

def _onnx_mlp(path: Path, net: MLP, batch: str | int = "batch") -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    prev = "obs"
    for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"B{i}")]
        out = f"h{i}" if i < len(net.weights) - 1 else "q"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [out + "_lin" if out != "q" else "q"]))
        if out != "q":
            nodes.append(helper.make_node("Relu", [out + "_lin"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [batch, net.sizes[0]])],
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, [batch, net.sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_policy_matches_the_numpy_network(tmp_path):
    net = small_net((4, 16, 2), "relu", 11)
    path = _onnx_mlp(tmp_path / "m.onnx", net)
    assert sniff_format(path) == "onnx"
    loaded = load_policy(path, env_id="CartPole-v1")
    obs = cartpole_obs(200)
    np.testing.assert_array_equal(loaded.policy.act(obs), net.forward(obs).argmax(axis=1))
    assert loaded.shapes == {"input": [-1, 4], "output": [-1, 2]}


def test_onnx_fixed_batch_and_box_head(tmp_path):
    net = small_net((3, 8, 1), "relu", 12)
    path = _onnx_mlp(tmp_path / "p.onnx", net, batch=1)
    loaded = load_policy(path, env_id="Pendulum-v1")
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32) * 10
    acts = loaded.policy.act(obs)
    assert acts.shape == (5, 1)
    np.testing.assert_allclose(acts, np.clip(net.forward(obs), -2, 2), rtol=1e-5, atol=1e-5)


def test_onnx_shape_mismatch_names_both_shapes(tmp_path):
    path = _onnx_mlp(tmp_path / "m.onnx", small_net((5, 8, 2)))
    with pytest.raises(PolicyMismatchError) as err:
        load_policy(path, env_id="CartPole-v1")
    assert "5 inputs" in str(err.value) and "(4,)" in str(err.value)


def test_truncated_onnx_is_refused(tmp_path):
    path = _onnx_mlp(tmp_path / "m.onnx", small_net((4, 64, 2)))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code in ("truncated", "bad_content")


# -- broken, foreign and oversized files ---------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.97])
def test_truncated_files(tmp_path, fraction):
    data = FIXTURE.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "truncated"
    native = tmp_path / "m.npz"
    save_policy(MLPPolicy(small_net(), "discrete", (4,)), native, {})
    native.write_bytes(native.read_bytes()[: int(native.stat().st_size * fraction)])
    with pytest.raises(ModelFileError) as err:
        load_policy(native)
    assert err.value.code == "truncated"


def test_corrupted_member_is_refused(tmp_path):
    data = bytearray(FIXTURE.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        offset = zf.getinfo("dqn_model/data/2").header_offset
    data[offset + 200: offset + 260] = b"\xff" * 60  # inside the member's bytes: CRC mismatch
    path = tmp_path / "bad.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "truncated"


@pytest.mark.parametrize("content", [
    b"",
    b"hello",
    np.random.default_rng(0).bytes(4096),
    b"\x93NUMPY\x01\x00" + b" " * 100,
    b"\x89HDF\r\n\x1a\n" + b"\0" * 100,
    b"PK\x03\x04" + b"\0" * 100,
])
def test_garbage_is_refused_with_a_clear_error(tmp_path, content):
    path = tmp_path / "model.onnx"  # the name says ONNX; the content decides
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code in ("truncated", "unsupported_format")
    assert 400 <= err.value.status < 500


def test_state_dict_shape_mismatch_names_both_shapes():
    with pytest.raises(PolicyMismatchError) as err:
        load_policy(FIXTURE, env_id="Acrobot-v1")
    assert str(err.value) == "model expects 4 inputs but Acrobot-v1 observations have shape (6,)"
    assert err.value.status == 422 and err.value.code == "shape_mismatch"


def test_layers_that_do_not_chain(tmp_path):
    state = small_net((4, 8, 2)).state_dict()
    state["net.2.weight"] = np.zeros((2, 9))
    path = tmp_path / "chain.npz"
    np.savez(path, **state)
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "shape_mismatch"


def test_zip_bomb_by_compression_ratio(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        buf = io.BytesIO()
        np.save(buf, np.zeros(2_000_000, dtype=np.float32))  # 8 MB of zeros, a few KB compressed
        zf.writestr("net.0.weight.npy", buf.getvalue())
    assert path.stat().st_size < 100_000
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "too_large" and err.value.status == 413


def test_npy_header_declaring_a_huge_array_is_refused_before_allocation(tmp_path):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("net.0.weight.npy", npy)
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "too_large"


def test_too_many_tensors(tmp_path):
    path = tmp_path / "many.npz"
    np.savez(path, **{f"t{i}": np.zeros(1) for i in range(300)})
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "too_many_tensors" and err.value.status == 413
    state = small_net().state_dict()
    np.savez(path, **state)
    with pytest.raises(ModelFileError) as err:
        load_policy(path, max_tensors=2)
    assert err.value.code == "too_many_tensors"


def test_file_size_cap(tmp_path):
    with pytest.raises(ModelFileError) as err:
        load_policy(FIXTURE, max_bytes=1000)
    assert err.value.code == "too_large" and err.value.status == 413


def test_per_tensor_cap_in_torch_checkpoint():
    with pytest.raises(ModelFileError) as err:
        load_policy(FIXTURE, max_tensor_bytes=4096)
    assert err.value.code == "too_large"


def test_networks_run_in_the_precision_they_were_stored_in(tmp_path):
    assert load_policy(FIXTURE).policy.net.weights[0].dtype == np.float32
    path = tmp_path / "m.npz"
    save_policy(MLPPolicy(small_net(), "discrete", (4,)), path, {})
    assert load_policy(path).policy.net.weights[0].dtype == np.float64


def test_bfloat16_safetensors_are_widened(tmp_path):
    net = small_net((4, 8, 2), "relu", 9)
    state = {k: v.astype(np.float32) for k, v in net.state_dict().items()}
    header, blobs, offset = {}, [], 0
    for name, arr in state.items():
        raw = (arr.view(np.uint32) >> 16).astype("<u2").tobytes()  # bfloat16 = top half of float32
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    loaded = load_policy(path)
    truncated = (state["net.0.weight"].view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(loaded.policy.net.weights[0].T, truncated)


def test_safetensors_whose_header_length_starts_like_a_pickle(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    state = {k: v.astype(np.float32) for k, v in small_net().state_dict().items()}
    save_file(state, str(path), metadata={"pad": "x" * 400})
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    pad = 0x0280 - n  # make the header 640 bytes long: its length field starts 0x80 0x02
    state_path = tmp_path / "p.safetensors"
    save_file(state, str(state_path), metadata={"pad": "x" * (400 + pad)})
    assert state_path.read_bytes()[:2] == b"\x80\x02"
    assert sniff_format(state_path) == "safetensors"
    assert load_policy(state_path).format == "safetensors"


def test_a_zip_needing_a_newer_zip_version_is_refused_cleanly(tmp_path):
    """Found by fuzzing: zipfile raises NotImplementedError for an 'extract version' above 6.3."""
    import io
    import struct
    import zipfile

    import pytest

    from actors.rl.errors import ModelFileError
    from actors.rl.modelfiles import load_policy

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    raw = bytearray(buf.getvalue())
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<H", raw, central + 6, 64)  # "version needed to extract": 6.4
    path = tmp_path / "future.zip"
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "unsupported_format" and "6.4" in str(err.value)
