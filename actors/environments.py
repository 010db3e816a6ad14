"""Verifying a registered Gymnasium id by really building and stepping the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.handling import consumer
from storage import ledger, outbox, tasks
from storage.events import Envelope, EnvironmentRegistered, EnvironmentRejected, EnvironmentVerified
from storage.models import Environment, utcnow

if TYPE_CHECKING:
    from actors.runtime import Runtime

CONSUMER = "verify_environment"


@consumer(CONSUMER)
def verify_environment(runtime: Runtime, envelope: Envelope) -> None:
    """Build the env, reset and step it with a seed, and record what it is (or why it is not usable)."""
    from actors.rl.envspec import describe_env
    from actors.rl.errors import RLError

    event: EnvironmentRegistered = envelope.event()  # type: ignore[assignment]
    db = runtime.storage.db
    with db.session() as session:
        task = tasks.get(session, event.task_id)
        if task is not None and task.status == "queued":
            tasks.mark_running(session, task)
            session.commit()

    spec, reason = None, None
    try:
        spec = describe_env(event.env_name, seed=0)
    except RLError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - a broken third-party env is a rejection, not a crash
        reason = f"{type(exc).__name__}: {exc}"

    with db.session() as session:
        environment = session.get(Environment, event.environment_id)
        task = tasks.get(session, event.task_id)
        if spec is not None:
            environment.status, environment.spec, environment.verified_at = "verified", spec, utcnow()
            tasks.succeed(session, task, {"environment_id": environment.id, "env_name": event.env_name,
                                          "status": "verified", "spec": spec})
            outbox.record(session, EnvironmentVerified(event.environment_id, event.env_name, event.task_id, spec))
        else:
            environment.status, environment.reason = "rejected", reason
            tasks.fail(session, task, {"type": "EnvironmentRejected", "code": "environment_rejected",
                                       "message": reason, "retryable": False, "celery_type": "ValueError"})
            outbox.record(session, EnvironmentRejected(event.environment_id, event.env_name, event.task_id, reason))
        ledger.mark(session, envelope.id, CONSUMER)
        session.commit()
