"""The gateway's analytics child process (api/analytics_reads.py), on real snapshot folders."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from analytics import reports
from analytics.errors import NotEnoughData
from api import analytics_reads
from api.analytics_reads import AnalyticsReads, RemoteTraceback
from api.app import create_app
from api.errors import Unavailable
from storage.context import open_storage
from storage.migrate import upgrade
from tests.analytics import synthetic
from tests.support.hubs import settings_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def snapshots(tmp_path):
    folder = tmp_path / "snapshots"
    for i, agent in enumerate(["CEM", "PPO", "CEM", "PPO"], start=1):
        synthetic.experiment(folder, i, agent, train_returns={0: [10.0 * i, 20.0 * i], 1: [11.0 * i, 21.0 * i]})
    return folder


@pytest.fixture
def reads(snapshots):
    pool = AnalyticsReads(snapshots, cache_bytes=32 * 1_048_576, recycle_ratio=1e6)
    yield pool
    pool.close()


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie still answers kill(0); it has exited all the same.
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_answers_equal_reads_in_this_process_and_errors_keep_their_type(reads, snapshots):
    assert reads.call("recent", limit=3) == reports.recent(snapshots, limit=3)
    assert reads.call("leaderboards", env="CartPole-v1") == reports.leaderboards(snapshots, env="CartPole-v1")
    assert reads.call("experiment", experiment_id=2) == reports.experiment(snapshots, 2)
    assert reads.call("experiment", experiment_id=99) is None
    with pytest.raises(NotEnoughData) as caught:
        reads.call("compare", env="CartPole-v1", agents=["CEM"])
    assert isinstance(caught.value.__cause__, RemoteTraceback) and "compare_agents" in str(caught.value.__cause__)
    stats = reads.stats()
    assert stats["pid"] not in (None, os.getpid()) and stats["decoded_files"] > 0 and stats["rss_bytes"] > 0


def test_a_killed_child_is_replaced_and_the_read_retried(reads):
    first = reads.call("recent")
    pid = reads.stats()["pid"]
    os.kill(pid, signal.SIGKILL)
    assert _gone(pid)
    assert reads.call("recent") == first
    assert reads.stats()["pid"] != pid and reads.stats()["replaced_after_failure"] == 1


def test_a_read_over_the_time_limit_is_a_503_and_the_next_read_gets_a_fresh_child(reads):
    reads.call("datasets")
    pid = reads.stats()["pid"]
    reads.timeout_s = 0.0001
    with pytest.raises(Unavailable) as caught:
        reads.call("leaderboards", env="CartPole-v1", ci_resamples=5000)
    assert caught.value.code == "analytics_timeout" and caught.value.headers["Retry-After"]
    assert _gone(pid)
    reads.timeout_s = 60
    assert len(reads.call("recent")["experiments"]) == 4


def test_a_drifted_child_is_replaced_without_failing_reads_in_flight(snapshots):
    # Every answer after the first counts as drift here, so the child is replaced again and again.
    pool = AnalyticsReads(snapshots, cache_bytes=32 * 1_048_576, recycle_ratio=-1.0, warm_reads=1)
    try:
        expected = reports.recent(snapshots)
        first_pid = None
        answers, failures = [], []

        def reader():
            for _ in range(15):
                try:
                    answers.append(pool.call("recent"))
                except Exception as exc:  # noqa: BLE001 - collected and asserted on below
                    failures.append(exc)

        pool.call("recent")
        first_pid = pool.stats()["pid"]
        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        deadline = time.monotonic() + 60  # a fresh child takes a second or two to import its libraries
        while pool.recycled == 0 and time.monotonic() < deadline:
            answers.append(pool.call("recent"))
        assert failures == [] and len(answers) >= 45 and all(a == expected for a in answers)
        assert pool.recycled >= 1 and pool.stats()["pid"] != first_pid
        assert _gone(first_pid)  # the old child exits once its reads are done
        assert pool.call("recent") == expected
    finally:
        pool.close()


def test_a_waiting_read_gets_the_next_free_slot_even_against_busy_loops(reads):
    """Two threads reading back to back hold both slots; a third read must get the next slot one
    of them hands back. With a plain queue the returning thread took its slot straight again and
    the third read waited until the loops stopped (seen for 120 s under load)."""
    reads.call("datasets")
    stop = time.monotonic() + 6
    loops: list[int] = [0, 0]

    def busy(i):
        while time.monotonic() < stop:
            reads.call("datasets")
            loops[i] += 1

    threads = [threading.Thread(target=busy, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(1)
    started = time.monotonic()
    reads.call("recent")
    waited = time.monotonic() - started
    left = stop - time.monotonic()
    for t in threads:
        t.join(30)
    assert min(loops) > 10 and left > 2 and waited < 1.5, (loops, waited, left)


def test_close_stops_the_child_and_later_reads_are_refused_at_once(reads):
    reads.call("datasets")
    pid = reads.stats()["pid"]
    reads.close()
    assert _gone(pid)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        reads.call("datasets")
    assert time.monotonic() - started < 1


def test_the_child_exits_when_the_gateway_process_dies(snapshots):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from api.analytics_reads import AnalyticsReads
        if __name__ == "__main__":
            pool = AnalyticsReads({str(snapshots)!r}, cache_bytes=0, recycle_ratio=1e6)
            pool.call("datasets")
            print(pool.stats()["pid"], flush=True)
            os._exit(0)  # no cleanup at all, as after kill -9
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert _gone(int(out.stdout.strip()))


def test_a_gateway_answers_the_same_with_and_without_its_child(tmp_path):
    settings = settings_for(tmp_path)
    upgrade(settings)
    storage = open_storage(settings)
    for i, agent in enumerate(["CEM", "PPO", "PPO"], start=1):
        synthetic.experiment(settings.snapshots_dir, i, agent)
    paths = ["/api/analytics/recent", "/api/analytics/leaderboard?env=CartPole-v1", "/api/analytics/experiments/2",
             "/api/analytics/compare?env=CartPole-v1", "/api/analytics/datasets", "/api/v1/analytics/recent",
             "/api/analytics/experiments/7", "/api/analytics/compare?env=CartPole-v1&agents=PPO"]
    try:
        answers = {}
        for child in (True, False):
            app = create_app(replace(storage, settings=settings.with_overrides(analytics_child=child)))
            with TestClient(app) as client:
                assert (analytics_reads.for_dir(settings.snapshots_dir) is not None) == child
                answers[child] = [(r.status_code, r.json()) for r in map(client.get, paths)]
        assert answers[True] == answers[False]
        assert [status for status, _ in answers[True]] == [200] * 6 + [404, 422]
        assert analytics_reads.for_dir(settings.snapshots_dir) is None  # the app's shutdown stopped its child
    finally:
        storage.close()


class _NeedsTwo(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def test_an_exception_that_cannot_travel_becomes_a_runtime_error_naming_it():
    assert isinstance(analytics_reads.portable(NotEnoughData("few")), NotEnoughData)
    converted = analytics_reads.portable(_NeedsTwo(1, 2))
    assert type(converted) is RuntimeError and "_NeedsTwo: 1 and 2" in str(converted)


def test_reaping_a_child_from_several_threads_closes_its_pipe_once():
    """The last slot's reaper thread and close() both reap; a second close of the pipe's descriptor
    failed with EBADF in CI (and could have closed another file that took its number)."""
    process = multiprocessing.get_context("fork").Process(target=int)
    process.start()
    closes = []

    class SlowPipe:
        def close(self):
            closes.append(1)
            time.sleep(0.05)

    child = analytics_reads._Child(process, [], SlowPipe())
    threads = [threading.Thread(target=child.reap) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert closes == [1] and not process.is_alive()
