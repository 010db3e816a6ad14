"""ONNX uploads: the export recipes people use are accepted and score as the framework does;
hostile graphs are refused before any onnxruntime session exists.

The fixtures in tests/fixtures/onnx/ were made by make_fixtures.py there (torch and SB3 in a side
environment: never imported here); returns.json holds SB3's own deterministic returns.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.evaluation import evaluate
from actors.rl.modelfiles import load_policy, sniff_format
from actors.rl.modelfiles.onnx_checks import MAX_STATIC_ELEMENTS, OnnxLimits, check_onnx_bytes
from actors.rl.modelfiles.onnx_file import load_onnx

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "onnx"
HOSTILE = FIXTURES / "hostile"
RETURNS = json.loads((FIXTURES / "returns.json").read_text())
PPO, SAC = RETURNS["models"]["ppo_cartpole"], RETURNS["models"]["sac_pendulum"]
ACCEPTED = ("sb3", "dynbatch", "dynamo")


def _spaces(env_id: str):
    from actors.rl.envspec import env_spaces

    return env_spaces(env_id)


# -- building graphs -------------------------------------------------------------------------------

def _external(name: str, location: str, dims=(4, 2)) -> TensorProto:
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.FLOAT
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * int(np.prod(dims))))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def _weights(name="W", rows=4, cols=2, seed=0) -> TensorProto:
    w = np.random.default_rng(seed).normal(size=(rows, cols)).astype(np.float32)
    return numpy_helper.from_array(w, name)


def _model(nodes, inits=(), *, inp=("batch", 4), out=("batch", 2), out_type=TensorProto.FLOAT,
           opsets=(("", 17),), functions=(), sparse=()) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, list(inp))],
                              [helper.make_tensor_value_info("q", out_type, list(out) if out is not None else None)],
                              list(inits), sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                              functions=list(functions))
    model.ir_version = 8
    return model


def _write(tmp_path: Path, model: onnx.ModelProto | bytes, name: str = "upload.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _matmul(**kwargs) -> onnx.ModelProto:
    return _model([helper.make_node("MatMul", ["obs", "W"], ["q"])], [_weights()], **kwargs)


def _sparse_external(location: str) -> onnx.SparseTensorProto:
    values = _external("S_values", location, dims=(2,))
    indices = numpy_helper.from_array(np.array([0, 5], dtype=np.int64), "S_indices")
    return helper.make_sparse_tensor(values, indices, [4, 2])


# -- the framework's own returns, reproduced ---------------------------------------------------------

@pytest.mark.parametrize("recipe", ACCEPTED)
def test_ppo_cartpole_returns_equal_sb3_exactly(recipe):
    path = FIXTURES / PPO["files"][recipe]
    assert sniff_format(path) == "onnx"
    loaded = load_policy(path, env_id="CartPole-v1")
    result = evaluate(loaded.policy, "CartPole-v1", RETURNS["episodes"], RETURNS["seed"], mode="exact")
    assert result.returns == PPO["returns"]
    assert result.lengths == PPO["lengths"]
    assert len(set(PPO["returns"])) > 5  # a policy that is not simply perfect: the equality means something
    m = loaded.manifest
    assert m["output_kind"] == "index" and m["outputs"][0] == m["output"] and len(m["outputs"]) == 3
    names = {a["name"]: a for a in m["assumptions"]}
    assert names["output"]["value"] == m["output"] and "actions, values, log_prob" in names["output"]["reason"]
    assert names["batch"]["value"] == ("row by row" if recipe == "sb3" else "dynamic")
    assert m["preprocessing"]["action"].startswith("the output itself")


@pytest.mark.parametrize("recipe", ACCEPTED)
def test_sac_pendulum_returns_match_sb3(recipe):
    path = FIXTURES / SAC["files"][recipe]
    loaded = load_policy(path, env_id="Pendulum-v1", action_scaling="tanh")
    result = evaluate(loaded.policy, "Pendulum-v1", RETURNS["episodes"], RETURNS["seed"], mode="exact")
    assert result.lengths == SAC["lengths"]
    # torch and onnxruntime sum float32 products in different orders (torch alone differs between a
    # batch of 1 and a batch of 32 by up to 7e-7 per action): 1e-5 per episode, plus 1e-7 relative.
    np.testing.assert_allclose(result.returns, SAC["returns"], rtol=1e-7, atol=1e-5)
    assert loaded.manifest["action_scaling"] == "squashed" and loaded.manifest["action_scaling_given"]
    assert "unscale_action" in loaded.manifest["preprocessing"]["action"]


def test_sb3_squashed_output_needs_action_scaling():
    with pytest.raises(ModelFileError) as err:
        load_policy(FIXTURES / SAC["files"]["sb3"], env_id="Pendulum-v1")
    assert err.value.code == "onnx_action_scaling" and err.value.status == 422
    message = str(err.value)
    assert "action_scaling" in message and "'squashed'" in message and "'clip'" in message and "Tanh" in message
    assert err.value.details["options"] == ["clip", "squashed"]


def test_squashed_is_an_alias_of_tanh_for_onnx():
    spaces = _spaces("Pendulum-v1")
    obs = np.random.default_rng(1).uniform(-1, 1, size=(16, 3)).astype(np.float32) * [1, 1, 8]
    a, _, _ = load_onnx(FIXTURES / SAC["files"]["dynbatch"], spaces, "Pendulum-v1", "squashed")
    b, _, _ = load_onnx(FIXTURES / SAC["files"]["dynbatch"], spaces, "Pendulum-v1", "tanh")
    np.testing.assert_array_equal(a.act(obs), b.act(obs))
    assert np.abs(a.act(obs)).max() > 1.0  # rescaled to [-2, 2]


def test_clip_reads_the_output_in_env_units():
    loaded = load_policy(FIXTURES / SAC["files"]["sb3"], env_id="Pendulum-v1", action_scaling="clip")
    acts = loaded.policy.act(np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32) * 4)
    assert np.abs(acts).max() <= 1.0  # tanh output, clipped to [-2, 2]: never rescaled
    given = {"name": "action_scaling", "value": "clip", "reason": "given by the uploader"}
    assert given in loaded.manifest["assumptions"]


def test_tanh_scaling_refused_when_output_is_not_squashed(tmp_path):
    # q = obs @ W + 5: 5 on the probe observation, so not in [-1, 1].
    bias = numpy_helper.from_array(np.full(1, 5.0, np.float32), "b")
    path = _write(tmp_path, _model([helper.make_node("MatMul", ["obs", "W"], ["h"]),
                                    helper.make_node("Add", ["h", "b"], ["q"])],
                                   [_weights(rows=3, cols=1), bias], inp=("batch", 3), out=("batch", 1)))
    with pytest.raises(ModelFileError) as err:
        load_policy(path, env_id="Pendulum-v1", action_scaling="tanh")
    assert err.value.code == "onnx_action_scaling"
    loaded = load_policy(path, env_id="Pendulum-v1")  # no Tanh: clip, stated
    assert [a["value"] for a in loaded.manifest["assumptions"] if a["name"] == "action_scaling"] == ["clip"]


def test_action_scaling_on_a_discrete_env_is_refused():
    with pytest.raises(ModelFileError) as err:
        load_policy(FIXTURES / PPO["files"]["sb3"], env_id="CartPole-v1", action_scaling="clip")
    assert err.value.code == "bad_option"


@pytest.mark.parametrize("model", ["ppo_cartpole", "sac_pendulum"])
def test_weights_left_in_a_side_file_are_refused_with_the_fix(model):
    entry = RETURNS["models"][model]
    with pytest.raises(ModelFileError) as err:
        load_policy(FIXTURES / entry["files"]["dynamo_side_file"], env_id=entry["env_id"])
    assert err.value.code == "onnx_external_data"
    assert "external_data=False" in str(err.value)
    assert err.value.details["location"].endswith(".onnx.data")


# -- shapes, symbolic dims and the probe -------------------------------------------------------------

def test_symbolic_dims_everywhere_are_resolved_from_the_env(tmp_path):
    path = _write(tmp_path, _matmul(inp=("b", "n"), out=("b", "k")))
    loaded = load_policy(path, env_id="CartPole-v1")
    obs = np.random.default_rng(3).normal(size=(7, 4)).astype(np.float32)
    w = numpy_helper.to_array(_weights())
    np.testing.assert_array_equal(loaded.policy.act(obs), (obs @ w).argmax(axis=1))
    names = {a["name"]: a["value"] for a in loaded.manifest["assumptions"]}
    assert names["input_dims"] == [4] and names["batch"] == "dynamic" and names["output_kind"] == "action values"


def test_an_unbatched_graph_runs_row_by_row(tmp_path):
    path = _write(tmp_path, _model([helper.make_node("MatMul", ["obs", "W"], ["q"])], [_weights()],
                                   inp=(4,), out=(2,)))
    loaded = load_policy(path, env_id="CartPole-v1")
    assert loaded.policy.layout == "unbatched"
    obs = np.random.default_rng(4).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.policy.act(obs), (obs @ numpy_helper.to_array(_weights())).argmax(axis=1))


def test_a_batch_axis_symbolic_in_name_only_falls_back_to_row_by_row(tmp_path):
    # dynamic_axes at export, but a reshape to a batch of 1 inside (as a traced .view(1, -1) leaves).
    nodes = [helper.make_node("Reshape", ["obs", "fixed"], ["flat"]), helper.make_node("MatMul", ["flat", "W"], ["q"])]
    path = _write(tmp_path, _model(nodes, [_i64("fixed", [1, 4]), _weights()]))
    loaded = load_policy(path, env_id="CartPole-v1")
    assert loaded.policy.layout == "rows"
    reason = next(a["reason"] for a in loaded.manifest["assumptions"] if a["name"] == "batch")
    assert "a batch of 2 observations failed" in reason
    obs = np.random.default_rng(5).normal(size=(6, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.policy.act(obs), (obs @ numpy_helper.to_array(_weights())).argmax(axis=1))


def test_the_probe_is_the_observation_nearest_zero():
    # The sandbox's delayed bomb behaves on the all-zero observation: a load must not run anything else.
    seen = []

    class Recording:
        def __init__(self, session):
            self.session = session

        def __getattr__(self, name):
            return getattr(self.session, name)

        def run(self, names, feeds):
            seen.append(next(iter(feeds.values())).copy())
            return self.session.run(names, feeds)

    import actors.rl.modelfiles.onnx_file as onnx_file

    real = onnx_file.new_session
    try:
        onnx_file.new_session = lambda data: Recording(real(data))
        load_policy(FIXTURES / PPO["files"]["dynbatch"], env_id="CartPole-v1")
    finally:
        onnx_file.new_session = real
    assert seen and all(not x.any() for x in seen)


def test_a_graph_that_does_not_run_fails_the_probe_cleanly(tmp_path):
    # Declares a symbolic feature axis but multiplies by a (5, 2) matrix: fails on 4 features.
    path = _write(tmp_path, _model([helper.make_node("MatMul", ["obs", "W"], ["q"])], [_weights(rows=5)],
                                   inp=("b", "n")))
    with pytest.raises(ModelFileError) as err:
        load_policy(path, env_id="CartPole-v1")
    assert err.value.code == "onnx_probe_failed" and 400 <= err.value.status < 500
    assert "CartPole-v1" in str(err.value)


def test_a_huge_declared_input_is_not_allocated(tmp_path):
    model = _model([helper.make_node("Identity", ["obs"], ["q"])], inp=(1, 10**12, 10**12), out=None)
    with pytest.raises(ModelFileError) as err:
        load_policy(_write(tmp_path, model))  # no environment: the probe would be sized from the graph
    assert err.value.code == "onnx_too_large" and err.value.details["what"] == "input_elements"


def test_a_fixed_batch_other_than_one_is_refused(tmp_path):
    with pytest.raises(ModelFileError) as err:
        load_policy(_write(tmp_path, _matmul(inp=(8, 4), out=(8, 2))), env_id="CartPole-v1")
    assert err.value.code == "bad_content" and "dynamic_axes" in str(err.value)


def test_an_integer_action_outside_the_space_is_refused(tmp_path):
    nodes = [helper.make_node("Constant", [], ["q"], value=numpy_helper.from_array(np.array([7], np.int64), "c"))]
    path = _write(tmp_path, _model(nodes, out=(1,), out_type=TensorProto.INT64))
    with pytest.raises(ModelFileError) as err:
        load_policy(path, env_id="CartPole-v1")
    assert err.value.code == "onnx_bad_output"


def test_mismatches_name_both_sides(tmp_path):
    with pytest.raises(PolicyMismatchError) as err:
        load_policy(_write(tmp_path, _matmul()), env_id="Acrobot-v1")
    assert "4 inputs" in str(err.value) and "(6,)" in str(err.value)
    box = _model([helper.make_node("MatMul", ["obs", "W"], ["q"])], [_weights(rows=3)], inp=("batch", 3))
    with pytest.raises(PolicyMismatchError) as err:
        load_policy(_write(tmp_path, box), env_id="Pendulum-v1")
    assert str(err.value) == "model outputs actions of size 2 but Pendulum-v1 actions have shape (1,)"


def test_refusal_details_are_json_even_for_names_that_are_not_utf8():
    data = _model([helper.make_node("MatMul", ["obs", "W"], ["q"])], [_external("W", "ab.db")]).SerializeToString()
    with pytest.raises(ModelFileError) as err:
        check_onnx_bytes(data.replace(b"ab.db", b"\xff\xfe.db"))  # same length: still a valid message
    assert err.value.code == "onnx_external_data"
    json.dumps(err.value.to_dict()).encode("utf-8")


# -- hostile graphs: refused before a session exists, reading nothing but the upload ------------------

STATIC_REFUSALS = {
    "external_absolute.onnx": "onnx_external_data",
    "external_relative.onnx": "onnx_external_data",
    "external_below_cwd.onnx": "onnx_external_data",
    "external_in_if.onnx": "onnx_external_data",
    "external_in_loop.onnx": "onnx_external_data",
    "external_in_constant.onnx": "onnx_external_data",
    "custom_domain.onnx": "onnx_custom_domain",
    "constant_of_shape_bomb.onnx": "onnx_too_large",
}


class _NoSession:
    """Stands in for onnxruntime.InferenceSession: building one is a test failure."""

    calls = 0

    def __init__(self, *args, **kwargs):
        type(self).calls += 1
        raise AssertionError("an onnxruntime session was built for a graph the checks must refuse")


@pytest.fixture
def guarded(tmp_path, monkeypatch):
    """A working directory holding a canary at every path the fixtures point at, no session
    constructor, and a record of every file Python opens."""
    cwd = tmp_path / "work" / "dir"
    cwd.mkdir(parents=True)
    canary = np.arange(8, dtype=np.float32).tobytes()
    for place in (tmp_path / ".resimhub", cwd / ".resimhub"):
        place.mkdir(exist_ok=True)
        (place / "resimhub.db").write_bytes(canary)
    monkeypatch.chdir(cwd)
    _NoSession.calls = 0
    monkeypatch.setattr(onnxruntime, "InferenceSession", _NoSession)
    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, Path)):
            opened.append(str(Path(file).resolve()))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    return {"cwd": cwd, "opened": opened, "upload": tmp_path / "upload.onnx"}


@pytest.mark.parametrize("name", sorted(STATIC_REFUSALS))
def test_hostile_fixture_refused_before_any_session(guarded, name):
    upload = guarded["upload"]
    upload.write_bytes((HOSTILE / name).read_bytes())
    with pytest.raises(ModelFileError) as err:
        load_policy(upload, env_id="CartPole-v1")
    assert err.value.code == STATIC_REFUSALS[name], str(err.value)
    assert _NoSession.calls == 0
    assert str(upload.resolve()) in guarded["opened"]  # the spy sees opens
    assert set(guarded["opened"]) <= {str(upload.resolve())}, guarded["opened"]


def test_the_canary_would_be_read_without_the_checks(guarded, monkeypatch):
    """The threat is real: handed the bytes, onnxruntime reads a file below the working directory."""
    monkeypatch.undo()  # the real session constructor, open() and cwd
    monkeypatch.chdir(guarded["cwd"])
    data = (HOSTILE / "external_below_cwd.onnx").read_bytes()
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        session = onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception:  # a stricter onnxruntime release: the checks remain the defence that counts
        pytest.skip("this onnxruntime refuses external data below the working directory")
    leaked = session.run(None, {"obs": np.eye(4, dtype=np.float32)})[0]
    np.testing.assert_array_equal(leaked.reshape(-1), np.arange(8, dtype=np.float32))  # the canary's bytes


@pytest.mark.parametrize("name", ["loop_bomb.onnx", "constant_of_shape_runtime.onnx"])
def test_sandbox_fixtures_pass_the_static_checks(name):
    # Not decidable statically; the sandbox's limits stop them at run time. Never run them here.
    checked = check_onnx_bytes((HOSTILE / name).read_bytes())
    assert checked.nodes >= 5 and checked.data


def _check(model: onnx.ModelProto, limits: OnnxLimits | None = None):
    return check_onnx_bytes(model.SerializeToString(), limits)


def _code(model: onnx.ModelProto, limits: OnnxLimits | None = None) -> str:
    with pytest.raises(ModelFileError) as err:
        _check(model, limits)
    return err.value.code


def _loop(body_nodes, body_inits=(), outer=("trips", "cond", "W")) -> onnx.NodeProto:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), *body_nodes], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [4, 2])], list(body_inits))
    return helper.make_node("Loop", list(outer), ["w_final"], body=body)


def _if(then_nodes, then_inits=(), name="w_sel") -> onnx.NodeProto:
    out = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2])
    then_branch = helper.make_graph(list(then_nodes), "then", [], [out], list(then_inits))
    else_branch = helper.make_graph([helper.make_node("Identity", ["W"], ["w"])], "else", [], [out])
    return helper.make_node("If", ["flag"], [name], then_branch=then_branch, else_branch=else_branch)


LOC = "../../.resimhub/resimhub.db"
_FLAG = numpy_helper.from_array(np.array(True), "flag")
_TRIPS = numpy_helper.from_array(np.array(1, np.int64), "trips")


def _external_variants() -> dict[str, onnx.ModelProto]:
    ext = _external("E", LOC)
    no_location_flag = _external("E", LOC)
    no_location_flag.data_location = TensorProto.DEFAULT  # external_data entries alone also count
    mm = helper.make_node("MatMul", ["obs", "W"], ["q"])
    fn = helper.make_function("local.fns", "Weights", [], ["w"],
                              [helper.make_node("Constant", [], ["w"], value=_external("Fw", LOC))],
                              [helper.make_opsetid("", 17)])
    nested = _if([_loop([helper.make_node("Constant", [], ["k"], value=_external("K", LOC)),
                         helper.make_node("Add", ["w_in", "k"], ["w_out"])], outer=("trips", "flag", "W")),
                  helper.make_node("Identity", ["w_final"], ["w"])])
    training = _matmul()
    info = training.training_info.add()
    info.initialization.CopyFrom(helper.make_graph([], "init", [], [], [_external("T", LOC)]))
    return {
        "initializer": _model([mm], [_weights(), ext]),
        "external_data_entries_only": _model([mm], [_weights(), no_location_flag]),
        "sparse_initializer": _model([mm], [_weights()], sparse=[_sparse_external(LOC)]),
        "constant_sparse_value": _model([helper.make_node("Constant", [], ["S"], sparse_value=_sparse_external(LOC)),
                                         mm], [_weights()]),
        "tensors_attribute_on_any_node": _model([helper.make_node("MatMul", ["obs", "W"], ["q"],
                                                                  junk=[_external("J", LOC)])], [_weights()]),
        "tensor_attribute_on_any_node": _model([helper.make_node("MatMul", ["obs", "W"], ["q"],
                                                                 junk=_external("J", LOC))], [_weights()]),
        "if_then_initializer": _model([_if([helper.make_node("Identity", ["Wx"], ["w"])], [_external("Wx", LOC)]),
                                       helper.make_node("MatMul", ["obs", "w_sel"], ["q"])], [_FLAG, _weights()]),
        "loop_body_initializer": _model([_loop([helper.make_node("Add", ["w_in", "Lx"], ["w_out"])],
                                               [_external("Lx", LOC)]),
                                         helper.make_node("MatMul", ["obs", "w_final"], ["q"])],
                                        [_TRIPS, _FLAG, _weights(), numpy_helper.from_array(np.array(True), "cond")]),
        "loop_inside_if": _model([nested, helper.make_node("MatMul", ["obs", "w_sel"], ["q"])],
                                 [_FLAG, _TRIPS, _weights()]),
        "local_function_body": _model([helper.make_node("Weights", [], ["W"], domain="local.fns"), mm],
                                      opsets=(("", 17), ("local.fns", 1)), functions=[fn]),
        "training_info": training,
    }


@pytest.mark.parametrize("variant", sorted(_external_variants()))
def test_external_data_is_refused_wherever_it_hides(guarded, variant):
    model = _external_variants()[variant]
    assert _code(model) == "onnx_external_data"
    upload = guarded["upload"]
    upload.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError) as err:
        load_policy(upload, env_id="CartPole-v1")
    assert err.value.code == "onnx_external_data" and _NoSession.calls == 0
    assert set(guarded["opened"]) <= {str(upload.resolve())}


def test_custom_domains_and_local_functions_are_refused():
    mm = helper.make_node("MatMul", ["obs", "W"], ["q"])
    contrib = helper.make_node("FusedMatMul", ["obs", "W"], ["q"], domain="com.microsoft")
    assert _code(_model([contrib], [_weights()], opsets=(("", 17), ("com.microsoft", 1)))) == "onnx_custom_domain"
    fn = helper.make_function("local.fns", "Double", ["x"], ["y"], [helper.make_node("Add", ["x", "x"], ["y"])],
                              [helper.make_opsetid("", 17)])
    local = _model([helper.make_node("MatMul", ["obs", "W"], ["h"]),
                    helper.make_node("Double", ["h"], ["q"], domain="local.fns")], [_weights()],
                   opsets=(("", 17), ("local.fns", 1)), functions=[fn])
    assert _code(local) == "onnx_local_function"
    inner = _if([helper.make_node("Hidden", ["W"], ["w"], domain="evil")])  # custom op inside a subgraph
    assert _code(_model([inner, helper.make_node("MatMul", ["obs", "w_sel"], ["q"])], [_FLAG, _weights()],
                        opsets=(("", 17), ("evil", 1)))) == "onnx_custom_domain"
    ml = helper.make_node("Normalizer", ["obs"], ["q"], domain="ai.onnx.ml", norm="MAX")
    _check(_model([ml], opsets=(("", 17), ("ai.onnx.ml", 3)), out=("batch", 4)))  # standard: accepted
    _check(_model([mm], [_weights()], opsets=(("ai.onnx", 17),)))


def test_size_limits():
    small = OnnxLimits(max_nodes=3, max_graph_depth=1, max_tensor_bytes=1000, max_file_bytes=10_000)
    chain = [helper.make_node("Relu", ["obs" if i == 0 else f"r{i - 1}"], [f"r{i}"]) for i in range(4)]
    many = _model([*chain, helper.make_node("MatMul", ["r3", "W"], ["q"])], [_weights()])
    with pytest.raises(ModelFileError) as err:
        _check(many, small)
    assert (err.value.code, err.value.status, err.value.details["what"]) == ("onnx_too_large", 413, "nodes")
    deep = _if([_if([helper.make_node("Identity", ["W"], ["w"])], name="w")])
    with pytest.raises(ModelFileError) as err:
        _check(_model([deep, helper.make_node("MatMul", ["obs", "w_sel"], ["q"])], [_FLAG, _weights()]), small)
    assert err.value.details["what"] == "subgraph_depth"
    big = numpy_helper.from_array(np.zeros((4, 64), np.float32), "W")
    with pytest.raises(ModelFileError) as err:
        _check(_model([helper.make_node("MatMul", ["obs", "W"], ["q"])], [big], out=("batch", 64)), small)
    assert err.value.details["what"] == "tensor_bytes"
    # A sparse initialiser counts at its dense size: onnxruntime densifies it.
    values = numpy_helper.from_array(np.ones(1, np.float32), "S")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0], np.int64), "i"), [2**20, 2**20])
    with pytest.raises(ModelFileError) as err:
        _check(_matmul(sparse=[sparse]))
    assert err.value.details["what"] == "tensor_bytes"
    with pytest.raises(ModelFileError) as err:
        check_onnx_bytes(b"\x08\x08" + b"\x00" * 20_000, small)
    assert err.value.details["what"] == "file_bytes"


def _bomb(node: onnx.NodeProto, *inits) -> onnx.ModelProto:
    return _model([node, helper.make_node("ReduceSum", [node.output[0]], ["t"], keepdims=0),
                   helper.make_node("MatMul", ["obs", "W"], ["l"]), helper.make_node("Add", ["l", "t"], ["q"])],
                  [*inits, _weights()])


@pytest.mark.parametrize("case", ["constant_of_shape", "constant_node_shape", "expand", "tile", "range", "pad",
                                  "onehot", "resize_sizes", "inside_subgraph"])
def test_statically_sized_memory_bombs_are_refused(case):
    huge = [2**16, 2**16]
    if case == "constant_of_shape":
        model = _bomb(helper.make_node("ConstantOfShape", ["s"], ["big"]), _i64("s", huge))
    elif case == "constant_node_shape":
        model = _model([helper.make_node("Constant", [], ["s"], value_ints=huge),
                        helper.make_node("ConstantOfShape", ["s"], ["big"]),
                        helper.make_node("ReduceSum", ["big"], ["t"], keepdims=0),
                        helper.make_node("MatMul", ["obs", "W"], ["l"]), helper.make_node("Add", ["l", "t"], ["q"])],
                       [_weights()])
    elif case == "expand":
        model = _bomb(helper.make_node("Expand", ["one", "s"], ["big"]),
                      numpy_helper.from_array(np.ones(1, np.float32), "one"), _i64("s", huge))
    elif case == "tile":
        model = _bomb(helper.make_node("Tile", ["one", "r"], ["big"]),
                      numpy_helper.from_array(np.ones((1, 1), np.float32), "one"), _i64("r", huge))
    elif case == "range":
        bounds = (("a", 0), ("b", 2**33), ("c", 1))
        model = _bomb(helper.make_node("Range", ["a", "b", "c"], ["big"]),
                      *(numpy_helper.from_array(np.array(v, np.float32), n) for n, v in bounds))
    elif case == "pad":
        model = _bomb(helper.make_node("Pad", ["one", "p"], ["big"]),
                      numpy_helper.from_array(np.ones((1, 1), np.float32), "one"), _i64("p", [2**16, 2**16, 0, 0]))
    elif case == "onehot":
        model = _bomb(helper.make_node("OneHot", ["idx", "d", "v"], ["big"]), _i64("idx", [0]), _i64("d", [2**40]),
                      numpy_helper.from_array(np.array([0, 1], np.float32), "v"))
    elif case == "resize_sizes":
        model = _bomb(helper.make_node("Resize", ["one", "", "", "sz"], ["big"]),
                      numpy_helper.from_array(np.ones((1, 1), np.float32), "one"), _i64("sz", huge))
    else:
        inner = helper.make_graph([helper.make_node("ConstantOfShape", ["s"], ["big"]),
                                   helper.make_node("ReduceSum", ["big"], ["w"], keepdims=0)], "then", [],
                                  [helper.make_tensor_value_info("w", TensorProto.FLOAT, [])])
        other = helper.make_graph([helper.make_node("Constant", [], ["w"], value_float=0.0)], "else", [],
                                  [helper.make_tensor_value_info("w", TensorProto.FLOAT, [])])
        model = _model([helper.make_node("If", ["flag"], ["t"], then_branch=inner, else_branch=other),
                        helper.make_node("MatMul", ["obs", "W"], ["l"]), helper.make_node("Add", ["l", "t"], ["q"])],
                       [_FLAG, _i64("s", huge), _weights()])
    with pytest.raises(ModelFileError) as err:
        _check(model)
    assert err.value.code == "onnx_too_large" and err.value.details["what"] == "static_allocation"
    assert err.value.details["value"] > MAX_STATIC_ELEMENTS


def test_small_static_allocations_pass():
    _check(_bomb(helper.make_node("ConstantOfShape", ["s"], ["big"]), _i64("s", [64, 64])))


def test_the_session_gets_the_checked_bytes_without_unknown_fields():
    model = _matmul()
    tag = 999 << 3  # field 999, wire type 0 (varint): unknown to the ModelProto schema
    data = model.SerializeToString() + bytes([0x80 | (tag & 0x7F), tag >> 7, 1])
    checked = check_onnx_bytes(data)
    assert checked.data == model.SerializeToString()
