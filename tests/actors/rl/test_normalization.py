"""VecNormalize statistics: accepted as JSON or .npz, refused as a pickle, applied as SB3 applies them."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest

from actors.rl.errors import ModelFileError, PolicyMismatchError
from actors.rl.modelfiles.normalization import check_normalization, parse_normalization
from actors.rl.nn import MLP
from actors.rl.policy import MLPPolicy, NormalizedPolicy, TabularPolicy

STATS = {"obs_mean": [0.1, -0.2, 0.0, 1.0], "obs_var": [0.5, 2.0, 1e-3, 4.0], "epsilon": 1e-8, "clip_obs": 5.0}


def test_json_and_npz_read_the_same():
    from_json = parse_normalization(json.dumps(STATS).encode())
    buf = io.BytesIO()
    np.savez(buf, **{k: np.array(v) for k, v in STATS.items()})
    from_npz = parse_normalization(buf.getvalue())
    assert from_json == from_npz
    assert from_json["shape"] == [4] and from_json["assumed"] == []


def test_missing_epsilon_and_clip_are_vecnormalize_defaults_and_reported():
    stats = parse_normalization(json.dumps({"obs_mean": [0.0], "obs_var": [1.0]}).encode())
    assert stats["epsilon"] == 1e-8 and stats["clip_obs"] == 10.0
    assert stats["assumed"] == ["epsilon", "clip_obs"]


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_any_pickle_is_refused(protocol):
    with pytest.raises(ModelFileError) as err:
        parse_normalization(pickle.dumps({"obs_mean": [0.0]}, protocol=protocol))
    assert err.value.code == "vecnormalize_pickle"
    assert "vn.obs_rms.mean" in err.value.details["snippet"]


@pytest.mark.parametrize("bad", [
    {"obs_mean": [0.0, 1.0], "obs_var": [1.0]},
    {"obs_mean": [0.0], "obs_var": [-1.0]},
    {"obs_mean": [float("nan")], "obs_var": [1.0]},
    {"obs_mean": [0.0], "obs_var": [1.0], "clip_obs": 0},
    {"obs_mean": [0.0], "obs_var": [1.0], "epsilon": "x"},
    {"obs_mean": [0.0]},
    {"obs_mean": [0.0], "obs_var": [1.0], "gamma": 0.99},
    [1, 2],
])
def test_malformed_statistics_are_refused(bad):
    with pytest.raises(ModelFileError) as err:
        check_normalization(bad)
    assert err.value.code == "bad_normalization"


def test_not_json():
    with pytest.raises(ModelFileError) as err:
        parse_normalization(b"\xff\xfe garbage")
    assert err.value.code == "bad_normalization"


def test_the_normalised_policy_computes_like_vecnormalize():
    net = MLP([4, 8, 2], "tanh", rng=np.random.default_rng(0), dtype=np.float32)
    inner = MLPPolicy(net, "discrete", (4,))
    stats = check_normalization(STATS)
    policy = NormalizedPolicy(inner, stats["obs_mean"], stats["obs_var"], stats["epsilon"], stats["clip_obs"])
    obs = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32) * 3
    mean, var = np.array(STATS["obs_mean"]), np.array(STATS["obs_var"])
    expected = np.clip((obs - mean) / np.sqrt(var + 1e-8), -5.0, 5.0).astype(np.float32)  # VecNormalize's formula
    np.testing.assert_array_equal(policy.normalize(obs), expected)
    np.testing.assert_array_equal(policy.act(obs), inner.act(expected))
    assert policy.describe()["normalization"]["clip_obs"] == 5.0
    assert (policy.head, policy.n_inputs, policy.n_outputs) == ("discrete", 4, 2)


def test_normalisation_must_fit_the_policy():
    inner = MLPPolicy(MLP([4, 8, 2], "tanh"), "discrete", (4,))
    with pytest.raises(PolicyMismatchError):
        NormalizedPolicy(inner, np.zeros(3), np.ones(3), 1e-8, 10.0)
    with pytest.raises(PolicyMismatchError):
        NormalizedPolicy(TabularPolicy(np.zeros((4, 2))), np.zeros(4), np.ones(4), 1e-8, 10.0)
