"""An actor is given its dependencies: a runtime of a stub broker and a scratch SQLite database is all
a real actor needs to run through a Dramatiq worker, with no hub, gateway or relay booted."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select

from actors import bus, consumers
from actors.rl.sandbox import SandboxPool
from actors.runtime import Runtime, declare_actors
from storage import outbox, tasks
from storage.context import open_storage
from storage.events import EnvironmentRegistered
from storage.migrate import upgrade
from storage.models import Environment, EventRecord, ProcessedEvent
from storage.settings import load_settings


@pytest.fixture
def runtime(tmp_path):
    settings = load_settings({"RESIMHUB_DATA_DIR": str(tmp_path / "data"), "RESIMHUB_QUEUE_PREFIX": "inj."})
    upgrade(settings)
    runtime = Runtime(storage=open_storage(settings), broker=StubBroker(), sandbox=SandboxPool(spare=False))
    declare_actors(runtime)
    yield runtime
    runtime.close()


def _registered(runtime: Runtime, env_name: str) -> tuple[int, str, dict]:
    """What ``POST /api/environments`` commits: the row, its task and the event (as the relay sends it)."""
    with runtime.storage.db.session() as session:
        environment = Environment(env_name=env_name)
        session.add(environment)
        session.flush()
        task = tasks.create(session, "verify_environment", subject=f"environments/{environment.id}")
        envelope = outbox.record(session, EnvironmentRegistered(environment.id, env_name, task.id))
        session.commit()
        return environment.id, task.id, envelope.to_cloudevent()


def test_an_actor_runs_on_a_stub_broker_with_the_runtime_it_was_declared_with(runtime):
    environment_id, task_id, doc = _registered(runtime, "CartPole-v1")
    runtime.actor("verify_environment").send(doc)
    worker = dramatiq.Worker(runtime.broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        runtime.broker.join("inj.environments", fail_fast=True, timeout=60_000)
        worker.join()
    finally:
        worker.stop()

    with runtime.storage.db.session() as session:
        environment = session.get(Environment, environment_id)
        assert environment.status == "verified" and environment.spec["action_space"]["n"] == 2
        task = tasks.get(session, task_id)
        assert task.status == "succeeded" and task.result["environment_id"] == environment_id
        verified = session.scalars(select(EventRecord).where(EventRecord.type == "resimhub.environment.verified"))
        assert [e.data["environment_id"] for e in verified] == [environment_id]
        assert session.scalars(select(ProcessedEvent.consumer).where(ProcessedEvent.event_id == doc["id"])).all() == [
            "verify_environment"]


def test_declared_actors_keep_their_names_queues_and_options(runtime):
    declared = runtime.actors
    assert set(declared) == {spec.name for spec in consumers.SPECS} | {bus.GIVE_UP_ACTOR}
    for spec in consumers.SPECS:
        actor = declared[spec.name]
        assert actor.actor_name == spec.name and actor.queue_name == "inj." + spec.queue
        assert actor.options["time_limit"] == spec.time_limit_ms
        assert actor.options["on_retry_exhausted"] == bus.GIVE_UP_ACTOR
    assert declared[bus.GIVE_UP_ACTOR].queue_name == "inj.failures"


def test_two_runtimes_never_share_storage(runtime, tmp_path):
    """What a module-level runtime could not give: each actor works on the storage it was bound to."""
    other_settings = load_settings({"RESIMHUB_DATA_DIR": str(tmp_path / "other")})
    upgrade(other_settings)
    other = Runtime(storage=open_storage(other_settings), broker=StubBroker(), sandbox=SandboxPool(spare=False))
    declare_actors(other)
    try:
        _, _, doc = _registered(runtime, "NoSuchEnv-v0")
        runtime.actor("verify_environment").fn(doc)  # the actor as Dramatiq calls it: the message only
        with runtime.storage.db.session() as session:
            assert session.scalar(select(Environment.status)) == "rejected"
        with other.storage.db.session() as session:
            assert session.scalars(select(ProcessedEvent)).all() == []
    finally:
        other.close()
