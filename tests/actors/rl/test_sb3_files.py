"""Stable-Baselines3 files read exactly as trained: the hub's returns against SB3's own.

The fixtures in tests/fixtures/sb3/ were made by make_fixtures.py there (with torch and SB3 in a
side environment; neither is imported here). For each model, ``returns.json`` holds SB3's own
per-episode returns (``model.predict(obs, deterministic=True)``, episode ``i`` reset with
``seed + i``), and the hub must reproduce them from the zip and from ``policy.state_dict()``:

* Discrete actions: exactly.
* Box actions: the policy function is compared directly on SB3's own trajectory (actions within
  1e-5), and returns per episode within a relative 2e-5. An absolute 1e-5 is below what float32
  policies can promise on Pendulum (returns near -1000: 1e-5 is 1e-8 relative, under float32's
  6e-8 resolution): torch and numpy round float32 sums differently, Pendulum amplifies a 1e-7
  action difference over 200 steps, and SB3 itself moves by up to 1.1e-2 (td3) when ``predict``
  sees the same observations in batches of 32 instead of one at a time (``returns_batched``).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.evaluation import evaluate
from actors.rl.modelfiles import load_policy, sniff_format
from actors.rl.modelfiles.normalization import parse_normalization

HERE = Path(__file__).resolve().parents[2] / "fixtures" / "sb3"
REF = json.loads((HERE / "returns.json").read_text())
TRACES = json.loads((HERE / "actions.json").read_text())
MODELS = {k: v for k, v in REF.items() if not k.startswith("_")}
ACTION_ATOL = 1e-5
RETURN_RTOL = 2e-5
MARKER = "resimhub_payload_ran"

CASES = [(name, f) for name, ref in MODELS.items() for f in ref["files"]
         if name != "ppo_cartpole_relu_separate" or f.endswith(".zip")]


def _normalization(ref: dict) -> dict | None:
    return parse_normalization((HERE / ref["normalization"]).read_bytes()) if "normalization" in ref else None


def _load(name: str, filename: str, **kw):
    ref = MODELS[name]
    kw.setdefault("normalization", _normalization(ref))
    return load_policy(HERE / filename, env_id=ref["env_id"], **kw)


def _returns(policy, ref: dict, **kw) -> np.ndarray:
    return np.array(evaluate(policy, ref["env_id"], ref["episodes"], ref["seed"], mode="exact", **kw).returns)


def rewrite_sb3(src: Path, dst: Path, edit) -> Path:
    """Copy an SB3 zip with its ``data`` JSON changed by ``edit(data)``."""
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    data = json.loads(members["data"])
    edit(data)
    with zipfile.ZipFile(dst, "w") as out:
        for n, raw in members.items():
            out.writestr(n, json.dumps(data) if n == "data" else raw)
    return dst


# -- equality with the framework's own evaluation ---------------------------------------------

@pytest.mark.parametrize(("name", "filename"), CASES)
def test_returns_equal_the_frameworks_own(name, filename):
    ref = MODELS[name]
    loaded = _load(name, filename)
    assert loaded.format == ("sb3-zip" if filename.endswith(".zip") else "torch-zip")
    got = _returns(loaded.policy, ref)
    want = np.array(ref["returns"])
    assert len(set(want.tolist())) > 1  # a policy that always scores the same would prove little
    if loaded.policy.head == "discrete":
        assert got.tolist() == want.tolist()
    else:
        np.testing.assert_allclose(got, want, rtol=RETURN_RTOL, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TRACES))
@pytest.mark.parametrize("kind", ["zip", "state_dict"])
def test_box_actions_equal_sb3s_on_its_own_trajectory(name, kind):
    trace = TRACES[name]
    filename = f"{name}.zip" if kind == "zip" else f"{name}_state_dict.pth"
    policy = _load(name, filename).policy
    obs = np.array(trace["observations"], dtype=np.float32)
    want = np.array(trace["actions"], dtype=np.float32)
    np.testing.assert_allclose(policy.act(obs), want, rtol=0, atol=ACTION_ATOL)  # batched
    np.testing.assert_allclose(np.concatenate([policy.act(o) for o in obs[:20]]), want[:20],
                               rtol=0, atol=ACTION_ATOL)  # one at a time
    assert np.all(np.abs(policy.act(obs * 50)) <= 2.0)  # within Pendulum's bounds whatever the input


def test_sniffing_by_content():
    for name, ref in MODELS.items():
        zip_file, state_dict = ref["files"]
        assert sniff_format(HERE / zip_file) == "sb3-zip", name
        assert sniff_format((HERE / zip_file).read_bytes()) == "sb3-zip", name
        assert sniff_format(HERE / state_dict) == "torch-zip", name


# -- what the file states and what is assumed ------------------------------------------------

@pytest.mark.parametrize(("name", "layout", "activation", "transform"), [
    ("ppo_cartpole", "sb3-actor-critic", "tanh", "argmax"),
    ("a2c_cartpole", "sb3-actor-critic", "tanh", "argmax"),
    ("dqn_cartpole", "sb3-dqn", "relu", "argmax"),
    ("ppo_pendulum", "sb3-actor-critic", "tanh", "clip"),
    ("sac_pendulum", "sb3-sac", "relu", "tanh-rescale"),
    ("td3_pendulum", "sb3-td3", "relu", "tanh-rescale"),
    ("ppo_cartpole_relu_separate", "sb3-actor-critic", "relu", "argmax"),
])
def test_zip_manifest_states_the_acting_network_and_its_sources(name, layout, activation, transform):
    loaded = _load(name, f"{name}.zip")
    m = loaded.manifest
    assert m["acting_network"]["layout"] == layout
    assert m["activation"] == activation and m["activation_source"] == "file"
    assert loaded.policy.describe()["action_transform"] == transform
    # The activation is determined by the file (activation_fn, or its absence from policy_kwargs):
    # the only assumption is that no VecNormalize statistics were needed.
    assert [a["name"] for a in m["assumptions"]] == ["observation_normalization"]
    assert m["preprocessing"]["normalization"] is None and m["preprocessing"]["dtype"] == "float32"
    json.dumps(loaded.to_dict(), allow_nan=False)


def test_dqn_acts_with_the_online_network_never_the_target():
    for filename in ("dqn_cartpole.zip", "dqn_cartpole_state_dict.pth"):
        m = _load("dqn_cartpole", filename).manifest
        assert m["layers"] == ["q_net.q_net.0", "q_net.q_net.2", "q_net.q_net.4"]
        assert "q_net_target.q_net" in m["acting_network"]["ignored"]


def test_actor_critic_layers_and_separate_extractors():
    m = _load("ppo_cartpole_relu_separate", "ppo_cartpole_relu_separate.zip").manifest
    assert m["layers"] == ["mlp_extractor.policy_net.0", "mlp_extractor.policy_net.2", "action_net"]
    assert m["sizes"] == [4, 32, 32, 2]
    assert m["acting_network"]["ignored"] == ["mlp_extractor.value_net", "value_net"]
    assert m["policy_kwargs_state"] == "serialized-with-fields"  # activation_fn made SB3 pickle the dict


def test_state_dict_without_its_activation_carries_the_assumption_visibly():
    ref = MODELS["ppo_cartpole_relu_separate"]
    path = "ppo_cartpole_relu_separate_state_dict.pth"
    assumed = _load("ppo_cartpole_relu_separate", path)
    (a,) = [x for x in assumed.manifest["assumptions"] if x["name"] == "activation"]
    assert a["value"] == "tanh" and "ActorCriticPolicy" in a["reason"]  # SB3's default, named as such
    assert _returns(assumed.policy, ref).tolist() != ref["returns"]  # and it is wrong for this model
    stated = _load("ppo_cartpole_relu_separate", path, activation="relu")
    assert "activation" not in [x["name"] for x in stated.manifest["assumptions"]]
    assert stated.manifest["activation_source"] == "uploader"
    assert _returns(stated.policy, ref).tolist() == ref["returns"]


def test_file_activation_wins_over_the_uploaders_and_says_so():
    loaded = _load("ppo_cartpole", "ppo_cartpole.zip", activation="relu", prefix="value_net")
    assert loaded.manifest["activation"] == "tanh"
    assert loaded.manifest["ignored_options"]["options"] == {"activation": "relu", "prefix": "value_net"}


def test_pendulum_bounds_come_from_the_file_and_match_the_env():
    loaded = load_policy(HERE / "sac_pendulum.zip")  # no environment: bounds from the data's text
    assert loaded.policy.action_low.tolist() == [-2.0] and loaded.policy.action_high.tolist() == [2.0]
    assert loaded.manifest["acting_network"]["action_bounds_source"] == "file"
    assert _load("sac_pendulum", "sac_pendulum.zip").manifest["acting_network"]["action_bounds_source"] == \
        "environment"


def test_environment_mismatch_names_both_sides():
    with pytest.raises(PolicyMismatchError) as err:
        load_policy(HERE / "ppo_cartpole.zip", env_id="Acrobot-v1")
    assert "(4,)" in str(err.value) and "(6,)" in str(err.value)
    with pytest.raises(PolicyMismatchError):
        load_policy(HERE / "td3_pendulum.zip", env_id="MountainCarContinuous-v0")


# -- VecNormalize ---------------------------------------------------------------------------------

def test_vecnormalize_statistics_are_part_of_the_policy():
    name = "ppo_cartpole_vecnormalize"
    ref = MODELS[name]
    loaded = _load(name, f"{name}.zip")
    desc = loaded.policy.describe()
    assert desc["normalization"]["source"] == "uploader" and desc["normalization"]["clip_obs"] == 10.0
    assert loaded.manifest["preprocessing"]["normalization"]["shape"] == [4]
    assert "observation_normalization" not in [a["name"] for a in loaded.manifest["assumptions"]]
    bare = load_policy(HERE / f"{name}.zip", env_id=ref["env_id"])
    assert "observation_normalization" in [a["name"] for a in bare.manifest["assumptions"]]
    assert _returns(bare.policy, ref).tolist() != ref["returns"]  # the statistics matter for this model


def test_vecnormalize_as_npz_gives_the_same_returns(tmp_path):
    name = "ppo_cartpole_vecnormalize"
    stats = json.loads((HERE / MODELS[name]["normalization"]).read_text())
    buf = io.BytesIO()
    np.savez(buf, obs_mean=np.array(stats["obs_mean"]), obs_var=np.array(stats["obs_var"]),
             epsilon=np.array(stats["epsilon"]), clip_obs=np.array(stats["clip_obs"]))
    norm = parse_normalization(buf.getvalue())
    loaded = _load(name, f"{name}.zip", normalization=norm)
    assert _returns(loaded.policy, MODELS[name]).tolist() == MODELS[name]["returns"]


def test_vecnormalize_pickle_is_refused_with_the_export_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = (HERE / "ppo_cartpole_vecnormalize_vecnormalize.pkl").read_bytes()
    with pytest.raises(ModelFileError) as err:
        parse_normalization(data)
    assert err.value.code == "vecnormalize_pickle" and err.value.status == 415
    for needle in ("obs_rms.mean", "obs_rms.var", ".epsilon", ".clip_obs"):
        assert needle in str(err.value)
    assert err.value.details["snippet"].count("\n") == 2  # three lines


def test_normalization_shape_must_fit_the_policy():
    with pytest.raises(PolicyMismatchError) as err:
        _load("ppo_cartpole", "ppo_cartpole.zip", normalization={"obs_mean": [0.0] * 3, "obs_var": [1.0] * 3})
    assert "3 values" in str(err.value) and "4 inputs" in str(err.value)


# -- hostile files ------------------------------------------------------------------------------

def _payload_blobs() -> list[bytes]:
    with zipfile.ZipFile(HERE / "hostile_payload_in_data.zip") as zf:
        data = json.loads(zf.read("data"))
    return [base64.b64decode(v[":serialized:"]) for v in data.values() if isinstance(v, dict) and ":serialized:" in v]


def test_the_hostile_payload_is_real():
    # Read with pickletools (a disassembler: it executes nothing): each blob calls os.system.
    for blob in _payload_blobs():
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(blob)]
        assert ("GLOBAL", "os system") in ops and ("REDUCE", None) in ops


def test_cloudpickle_payload_in_data_is_never_touched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def forbidden(*_a, **_k):
        raise AssertionError("the loader decoded a :serialized: value")

    monkeypatch.setattr(base64, "b64decode", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    loaded = load_policy(HERE / "hostile_payload_in_data.zip", env_id="CartPole-v1")
    assert not (tmp_path / MARKER).exists()
    # policy_kwargs is only a blob here, so the activation is SB3's default, stated as an assumption.
    (a,) = [x for x in loaded.manifest["assumptions"] if x["name"] == "activation"]
    assert a["value"] == "tanh" and "cloudpickle" in a["reason"]
    assert loaded.manifest["policy_kwargs_state"] == "serialized-only"
    monkeypatch.undo()
    assert _returns(loaded.policy, MODELS["ppo_cartpole"]).tolist() == MODELS["ppo_cartpole"]["returns"]


def test_unsafe_global_in_policy_pth_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError) as err:
        load_policy(HERE / "hostile_unsafe_global_policy.zip", env_id="CartPole-v1")
    assert err.value.code == "unsafe_global" and err.value.status == 415
    assert err.value.details["global"] in ("posix.system", "os.system", "nt.system")
    assert not (tmp_path / MARKER).exists()


# -- refusals with a reason of their own ---------------------------------------------------------

def _set_class(name: str, module: str = "stable_baselines3.common.policies"):
    def edit(data):
        data["policy_class"]["__module__"] = module
        data["policy_class"]["__init__"] = f"<function {name}.__init__ at 0x7f0000000000>"
    return edit


@pytest.mark.parametrize(("edit", "needle"), [
    (_set_class("ActorCriticCnnPolicy"), "NatureCNN"),
    (_set_class("MultiInputActorCriticPolicy"), "Dict observations"),
    (_set_class("QRDQNPolicy", "sb3_contrib.qrdqn.policies"), "sb3_contrib"),
    (lambda d: d.update(use_sde=True), "gSDE"),
    (lambda d: d.update(policy_kwargs={"net_arch": [64, 64], "features_extractor_class":
                                       "<class 'my.Extractor'>"}), "features_extractor_class"),
    (lambda d: d.update(policy_kwargs={"dueling": True}), "dueling"),
])
def test_policies_the_hub_cannot_rebuild_are_refused_by_name(tmp_path, edit, needle):
    path = rewrite_sb3(HERE / "ppo_cartpole.zip", tmp_path / "m.zip", edit)
    with pytest.raises(ModelFileError) as err:
        load_policy(path, env_id="CartPole-v1")
    assert err.value.code == "unsupported_policy" and err.value.status == 422
    assert needle in str(err.value)


def test_unknown_activation_class_is_refused(tmp_path):
    edit = lambda d: d.update(policy_kwargs={"activation_fn": "<class 'torch.nn.modules.activation.ELU'>"})  # noqa: E731
    path = rewrite_sb3(HERE / "ppo_cartpole.zip", tmp_path / "m.zip", edit)
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "unsupported_activation" and "ELU" in str(err.value)


def test_net_arch_that_contradicts_the_weights_is_refused(tmp_path):
    path = rewrite_sb3(HERE / "ppo_cartpole.zip", tmp_path / "m.zip",
                       lambda d: d.update(policy_kwargs={"net_arch": [32, 32]}))
    with pytest.raises(ModelFileError) as err:
        load_policy(path)
    assert err.value.code == "bad_content" and "[32, 32]" in str(err.value) and "[64, 64]" in str(err.value)


def test_missing_policy_kwargs_is_an_assumption_or_the_uploaders_word(tmp_path):
    path = rewrite_sb3(HERE / "dqn_cartpole.zip", tmp_path / "m.zip", lambda d: d.pop("policy_kwargs"))
    m = load_policy(path, env_id="CartPole-v1").manifest
    assert [(a["name"], a["value"]) for a in m["assumptions"]][0] == ("activation", "relu")
    m = load_policy(path, env_id="CartPole-v1", activation="tanh").manifest
    assert m["activation"] == "tanh" and m["activation_source"] == "uploader"
    assert "activation" not in [a["name"] for a in m["assumptions"]]


def test_archive_without_policy_pth(tmp_path):
    with zipfile.ZipFile(HERE / "ppo_cartpole.zip") as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != "policy.pth"}
    with zipfile.ZipFile(tmp_path / "m.zip", "w") as out:
        for n, raw in members.items():
            out.writestr(n, raw)
    with pytest.raises(ModelFileError) as err:
        load_policy(tmp_path / "m.zip")
    assert err.value.code == "bad_content" and "policy.pth" in str(err.value)
