"""The sandbox an uploaded policy runs in, observed from outside: the child's environment, working
directory, descriptors and limits as the kernel reports them, and the scores it helps compute."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import pytest

from actors.rl.evaluation import evaluate
from actors.rl.modelfiles import load_policy
from actors.rl.sandbox import SandboxError, SandboxLimits, open_policy
from tests.support.fixtures import SEED_DQN_MODEL

ENV = "CartPole-v1"


def _pid(policy) -> int:
    return policy._child.proc.pid


def test_a_sandboxed_policy_scores_exactly_as_the_same_file_in_process():
    with open_policy(SEED_DQN_MODEL, env_id=ENV) as policy:
        sandboxed = evaluate(policy, ENV, 20, 7)
    direct = evaluate(load_policy(SEED_DQN_MODEL, env_id=ENV).policy, ENV, 20, 7)
    assert sandboxed.returns == direct.returns
    assert sandboxed.lengths == direct.lengths
    assert policy.loaded["format"] == "torch-zip"


def test_the_child_holds_no_settings_secrets_files_or_connections(monkeypatch, tmp_path):
    monkeypatch.setenv("RESIMHUB_DATABASE_URL", "postgresql+psycopg2://secret@127.0.0.1/db")
    monkeypatch.setenv("RESIMHUB_WEBHOOK_SECRET_FOR_TEST", "whsec_do_not_leak")
    keep_open = open(tmp_path / "parent-only.txt", "w")  # noqa: SIM115 - a descriptor the child must not get
    try:
        with open_policy(SEED_DQN_MODEL, env_id=ENV) as policy:
            pid = _pid(policy)
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            names = {e.split(b"=", 1)[0].decode() for e in environ if e}
            assert not any(n.startswith("RESIMHUB") for n in names)
            assert "PATH" not in names and "HOME" not in names
            cwd = os.readlink(f"/proc/{pid}/cwd")
            assert os.listdir(cwd) == []
            targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            # stdin (/dev/null), stdout+stderr (its own log file) and the one socket to the worker; the
            # model file is closed once loaded, and nothing of the parent's is inherited.
            assert not any("parent-only" in t or "seed_dqn_model" in t for t in targets), targets
            assert sum(t.startswith("socket:") for t in targets) == 1, targets
            assert len(targets) == 4, targets
            limits = Path(f"/proc/{pid}/limits").read_text()
            line = next(row for row in limits.splitlines() if row.startswith("Max address space"))
            assert str(SandboxLimits().memory_bytes) in line
            line = next(row for row in limits.splitlines() if row.startswith("Max cpu time"))
            assert str(SandboxLimits().cpu_seconds) in line
        assert not os.path.exists(cwd), "the working directory is removed with the child"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        keep_open.close()


def test_a_refused_file_keeps_the_loaders_code(tmp_path):
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(SandboxError) as info:
        open_policy(bad, env_id=ENV)
    assert info.value.code == "pickle_refused"
    assert info.value.status == 415


def test_a_policy_that_does_not_fit_the_environment_is_refused_with_both_shapes():
    with pytest.raises(SandboxError) as info:
        open_policy(SEED_DQN_MODEL, env_id="Acrobot-v1")
    assert info.value.code == "shape_mismatch"
    assert "Acrobot-v1" in str(info.value)


def test_a_tiny_memory_limit_fails_cleanly_and_the_parent_is_unaffected():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SandboxError) as info:
        open_policy(SEED_DQN_MODEL, env_id=ENV, limits=SandboxLimits(memory_bytes=64 * 1024 * 1024))
    assert info.value.code in ("policy_memory", "policy_crashed")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_cancelling_before_the_load_stops_the_child():
    with pytest.raises(SandboxError) as info:
        open_policy(SEED_DQN_MODEL, env_id=ENV, cancelled=lambda: True)
    assert info.value.code == "evaluation_cancelled"


# -- hostile graphs that only show themselves when run (tests/fixtures/onnx/make_fixtures.py) ------

HOSTILE = Path(__file__).resolve().parents[2] / "fixtures" / "onnx" / "hostile"
QUICK = SandboxLimits(load_timeout_s=5.0, step_timeout_s=1.0, evaluation_timeout_s=30.0)


def _load_and_act(path, limits=QUICK, cancelled=None):
    """Load and take one batched step; returns the policy (already closed by the failure)."""
    policy = open_policy(path, env_id=ENV, limits=limits, cancelled=cancelled)
    policy.act(np.zeros((3, 4), dtype=np.float32))
    return policy


def _assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                out.add(int(entry))
    return out


def _cold_start_s() -> float:
    """How long starting a child and loading a small model takes on this machine right now."""
    start = time.monotonic()
    open_policy(SEED_DQN_MODEL, env_id=ENV).close()
    return time.monotonic() - start


def test_a_loop_that_never_ends_fails_with_policy_timeout_and_leaves_no_process():
    before = _children()
    baseline = _cold_start_s()
    start = time.monotonic()
    with pytest.raises(SandboxError) as info:
        _load_and_act(HOSTILE / "loop_bomb.onnx")
    assert info.value.code == "policy_timeout"
    # Start-up is not counted against the deadlines; the deadlines themselves hold.
    assert time.monotonic() - start < 2 * baseline + QUICK.load_timeout_s + QUICK.step_timeout_s + 2
    assert _children() <= before
    # The worker goes on: the next policy loads and acts as usual.
    with open_policy(SEED_DQN_MODEL, env_id=ENV, limits=QUICK) as policy:
        assert evaluate(policy, ENV, 3, 0).episodes == 3


def test_a_cancel_kills_a_busy_policy_within_a_second():
    cancel_at = time.monotonic() + _cold_start_s() + 1.0  # after the load, inside the first forward pass
    with pytest.raises(SandboxError) as info:
        _load_and_act(HOSTILE / "loop_bomb.onnx", limits=SandboxLimits(load_timeout_s=60, step_timeout_s=60),
                      cancelled=lambda: time.monotonic() >= cancel_at)
    assert info.value.code == "evaluation_cancelled"
    assert time.monotonic() - cancel_at < 1.0


def test_a_graph_that_asks_for_gigabytes_fails_with_policy_memory_and_the_worker_stays_small():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SandboxError) as info:
        _load_and_act(HOSTILE / "constant_of_shape_runtime.onnx")
    assert info.value.code == "policy_memory"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_the_cpu_time_cap_ends_a_policy_that_spins(tmp_path):
    # One CPU second and a generous wall clock: the kernel's SIGXCPU is what stops it.
    limits = SandboxLimits(cpu_seconds=1, load_timeout_s=30, step_timeout_s=30, evaluation_timeout_s=30)
    with pytest.raises(SandboxError) as info:
        _load_and_act(HOSTILE / "loop_bomb.onnx", limits=limits)
    assert info.value.code == "policy_cpu_time"
