"""kill -9 of the embedded hub (``resimhub up``: SQLite, in-process broker, worker and relay threads),
then a restart on the same data directory: everything that was unfinished must finish.

The in-process broker loses every message it held, so these tests show that the outbox keeps an
event until its consumers are done and the restarted relay sends it again; that a training resumes
from its checkpoint; that a webhook delivery whose retry lived in memory is attempted again; and
that an upload cut off mid-copy leaves nothing behind.
"""

import sqlite3
import threading
import time

import pytest

from tests.chaos.common import CARTPOLE
from tests.support.embedded_process import EmbeddedHub
from tests.support.fixtures import SEED_DQN_MODEL
from tests.support.receiver import Receiver, Reply

pytestmark = [pytest.mark.slow]

#: DQN on one environment copy counts every step, so a run ends on exactly its budget, resumed or not.
BUDGET = 10_000
HYPERPARAMS = {"num_envs": 1, "gradient_steps": 32}


def _db(hub: EmbeddedHub, query: str, *args) -> list[tuple]:
    with sqlite3.connect(f"file:{hub.db_path}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(query, args).fetchall()


def _checkpoints(hub: EmbeddedHub) -> list[str]:
    return sorted(p.name for p in (hub.data_dir / "artifacts" / "checkpoints").glob("run-*.npz"))


class ProgressWatch:
    """Polls a task and keeps every (status, fraction) it reads, across the hub's lives."""

    def __init__(self, hub: EmbeddedHub, task_id: str) -> None:
        self.hub, self.task_id = hub, task_id
        self.seen: list[tuple[str, float]] = []

    def look(self) -> dict | None:
        try:
            body = self.hub.client.get(f"/api/tasks/{self.task_id}", timeout=5).json()
        except Exception:  # noqa: BLE001 - the hub is down between lives
            return None
        self.seen.append((body["status"], (body.get("progress") or {}).get("fraction") or 0.0))
        return body


def test_kill_9_mid_training_with_work_queued_then_restart_finishes_everything(tmp_path):
    hub = EmbeddedHub(tmp_path, RESIMHUB_WEBHOOK_ALLOW_PRIVATE="1", RESIMHUB_WEBHOOK_RETRY_SCHEDULE="4,1,1",
                      RESIMHUB_WORKER_THREADS="2")
    receiver = Receiver().up()
    try:
        hub.start()
        client = hub.client
        r = client.post("/api/environments", json={"env_name": CARTPOLE})
        assert hub.wait_task(r.json()["task_id"], timeout=60)["status"] == "succeeded"
        # A webhook whose first attempt fails: its retry (in about 4 s, when both worker threads are
        # training) is a delayed message in the hub's memory.
        receiver.script = [Reply(status=503)]
        hook = client.post("/api/webhooks", json={"url": receiver.url, "event_types": ["resimhub.experiment.created"]})
        assert hook.status_code == 201, hook.text
        exp = client.post("/api/experiments", json={
            "name": "restart", "env_name": CARTPOLE, "agent": "DQN", "total_timesteps": BUDGET, "seeds": [0, 1],
            "eval_episodes": 5, "hyperparams": HYPERPARAMS})
        assert exp.status_code == 201, exp.text
        receiver.wait_for(1)  # the 503
        train = client.post(f"/api/experiments/{exp.json()['id']}/train")
        assert train.status_code == 202
        watch = ProgressWatch(hub, train.json()["task_id"])

        # Both worker threads train (one seed each); everything submitted now waits behind them.
        deadline = time.monotonic() + 30
        while _db(hub, "SELECT count(*) FROM training_runs WHERE status = 'running'")[0][0] < 2:
            assert time.monotonic() < deadline, "the two runs did not start"
            time.sleep(0.05)
        verify = client.post("/api/environments", json={"env_name": "Acrobot-v1"})
        assert verify.status_code == 202, verify.text
        with open(SEED_DQN_MODEL, "rb") as fh:
            upload = client.post("/benchmark/upload_model", files={"file": ("m.pt", fh)}, data={"env_name": CARTPOLE})
        assert upload.status_code == 202, upload.text
        model_id = upload.json()["model_id"]
        run = client.post("/benchmark/run", json={"model_id": model_id, "env_name": CARTPOLE, "episodes": 5})
        assert run.status_code == 202, run.text
        queued = {"verification": verify.json()["task_id"], "validation": upload.json()["task_id"],
                  "evaluation": run.json()["task_id"]}

        # Kill once both runs are well into training and have checkpointed, before either is done.
        deadline = time.monotonic() + 60
        while True:
            body = watch.look()
            fraction = (body.get("progress") or {}).get("fraction") or 0.0
            if len(_checkpoints(hub)) == 2 and fraction >= 0.3:
                break
            assert body["status"] == "running" and time.monotonic() < deadline, body
            time.sleep(0.1)
        states = {name: client.get(f"/api/tasks/{t}").json()["status"] for name, t in queued.items()}
        assert states == {"verification": "queued", "validation": "queued", "evaluation": "queued"}, states
        before = _db(hub, "SELECT id, timesteps FROM training_runs ORDER BY id")
        assert all(0 < ts < BUDGET for _, ts in before), before
        hub.kill9()
        killed_at = time.monotonic()
        assert _db(hub, "SELECT status FROM webhook_deliveries") == [("pending",)]

        hub.start()
        restarted_in = time.monotonic() - killed_at
        deadline = time.monotonic() + 120
        while (body := watch.look()) is None or body["status"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        assert body["status"] == "succeeded", body

        # The runs resumed from their checkpoints and ended on exactly their budget.
        results = client.get(f"/api/experiments/{exp.json()['id']}").json()["results"]
        for entry in results["runs"]:
            assert entry["timesteps"] == BUDGET, entry
            assert entry["attempts"] == 2 and entry["resumed_from"] and 0 < entry["resumed_from"] < BUDGET, entry
        assert "resumes from its checkpoint" in hub.log(2)
        started = [e["data"] for e in client.get("/api/events", params={"type": "resimhub.training.started",
                                                                        "limit": 10}).json()["events"]]
        assert sorted(e["resumed_from"] is not None for e in started) == [False, False, True, True]
        # Progress never went back and read 1.0 only once the task had succeeded.
        fractions = [f for _, f in watch.seen]
        assert fractions == sorted(fractions), watch.seen
        assert all(f < 1.0 for status, f in watch.seen if status != "succeeded"), watch.seen

        # Everything queued at the kill ran after the restart.
        for name, task_id in queued.items():
            assert hub.wait_task(task_id, timeout=120)["status"] == "succeeded", name
        again = client.post("/api/environments", json={"env_name": "Acrobot-v1"})
        assert again.status_code == 200 and again.json()["status"] == "verified", again.text
        assert client.get(f"/benchmark/models/{model_id}").json()["status"] == "validated"
        deadline = time.monotonic() + 30
        while _db(hub, "SELECT status FROM webhook_deliveries") != [("delivered",)]:
            assert time.monotonic() < deadline, _db(hub, "SELECT * FROM webhook_deliveries")
            time.sleep(0.1)
        assert [r.headers["webhook-id"] for r in receiver.received][1:] == [receiver.received[0].headers[
            "webhook-id"]]  # the same delivery, attempted again

        # Nothing is left queued, running or waiting to be handled.
        deadline = time.monotonic() + 15
        while (left := _db(hub, "SELECT count(*) FROM events WHERE published_at IS NULL")[0][0]) != 0:
            assert time.monotonic() < deadline, f"{left} events never handled"
            time.sleep(0.1)
        assert _db(hub, "SELECT kind, status FROM tasks WHERE status IN ('queued', 'running')") == []
        # Every step of the chain happened once per run.
        assert _db(hub, "SELECT count(*) FROM events WHERE type = 'resimhub.training.completed'") == [(2,)]
        assert _db(hub, "SELECT count(*) FROM models WHERE source = 'training'") == [(2,)]
        assert _db(hub, "SELECT count(*) FROM events WHERE type = 'resimhub.snapshot.written'") == [(1,)]
        recovery = [line for line in hub.log(2).splitlines() if "embedded restart" in line]
        print(f"\nkilled at fraction {fraction} (runs at {[ts for _, ts in before]} of {BUDGET} steps), up again "
              f"in {restarted_in:.1f}s; resumed from {[e['resumed_from'] for e in results['runs']]}; "
              f"{recovery[0].split('embedded restart: ')[-1] if recovery else 'no recovery line'}")
    finally:
        receiver.down()
        hub.close()


def test_kill_9_mid_upload_leaves_no_partial_file_after_restart(tmp_path):
    """The gateway copies an upload into the artifact store through a ``.incoming-*`` file; a kill
    during that copy used to leave it there for good. The restarted hub removes it, and a second hub
    is refused the data directory while the first holds it."""
    hub = EmbeddedHub(tmp_path, RESIMHUB_MAX_UPLOAD_BYTES=str(64 * 1_048_576))
    models = hub.data_dir / "artifacts" / "models"
    payload = b"\x00" * (60 * 1_048_576)  # not a model: it would be refused, but only after the copy
    try:
        hub.start()
        cut = False
        for _attempt in range(5):
            def send():
                try:
                    hub.client.post("/benchmark/upload_model", files={"file": ("big.bin", payload)}, timeout=60)
                except Exception:  # noqa: BLE001, S110 - the hub dies under it
                    pass

            sender = threading.Thread(target=send)
            sender.start()
            deadline = time.monotonic() + 30
            while sender.is_alive() and time.monotonic() < deadline:
                partial = list(models.glob(".incoming-*")) if models.is_dir() else []
                if partial and partial[0].stat().st_size > 0:
                    hub.kill9()
                    cut = True
                    break
                time.sleep(0.0005)
            sender.join(timeout=60)
            if cut:
                break
        assert cut, "no kill landed during the copy in 5 uploads"
        left = list(models.glob(".incoming-*"))
        assert left and left[0].stat().st_size > 0, "the kill left no partial file: the test proved nothing"

        hub.start()
        assert list(models.glob(".incoming-*")) == []
        assert "left by an interrupted write" in hub.log(2)
        assert _db(hub, "SELECT count(*) FROM models") == [(0,)]
        # The hub takes uploads again.
        with open(SEED_DQN_MODEL, "rb") as fh:
            r = hub.client.post("/benchmark/upload_model", files={"file": ("m.pt", fh)}, data={"env_name": CARTPOLE})
        assert r.status_code == 202, r.text
        assert hub.wait_task(r.json()["task_id"], timeout=60)["status"] == "succeeded"
        # The restart's cleanup is sound only because no other embedded hub works on this data directory.
        second = EmbeddedHub(tmp_path)
        try:
            with pytest.raises(AssertionError, match="another `resimhub up`"):
                second.start(timeout=30)
        finally:
            second.close()
    finally:
        hub.close()
