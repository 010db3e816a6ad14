"""The routing table: which actor consumes which event, on which queue, with which limits.

Read this file to know what happens after any event; the handlers live in modules named for what
they work on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from actors import aggregation, environments, evaluations, housekeeping, models, training, webhooks
from actors.bus import ActorSpec

SPECS: list[ActorSpec] = [
    ActorSpec("verify_environment", environments.verify_environment, queue="environments",
              time_limit_ms=120_000),
    # Training can take hours; a retry (transient errors only) resumes from the run's checkpoint.
    # The run's own limit (RESIMHUB_TRAINING_TIME_LIMIT) stops it cleanly; this is only a backstop.
    ActorSpec("train", training.train, queue="training", time_limit_ms=training.ACTOR_TIME_LIMIT_MS),
    ActorSpec("aggregate", aggregation.aggregate, queue="aggregation", time_limit_ms=300_000),
    ActorSpec("validate_model", models.validate_model, queue="models", time_limit_ms=120_000),
    # 10 000 episodes of a 500-step env at the engine's pace take minutes; the limit leaves room for slow envs.
    ActorSpec("evaluate", evaluations.evaluate, queue="evaluation", time_limit_ms=3600_000),
    ActorSpec("fan_out_webhooks", webhooks.fan_out_webhooks, queue="webhooks", time_limit_ms=60_000),
    # HTTP failures are retried on the webhook schedule by the actor itself, never by Dramatiq.
    ActorSpec("deliver_webhook", webhooks.deliver_webhook, queue="webhooks", time_limit_ms=120_000),
]

# Keys are event types; "*" names consumers of every event.
ROUTES: dict[str, list[str]] = {
    "resimhub.environment.registered": ["verify_environment"],
    "resimhub.training.requested": ["train"],
    "resimhub.model.uploaded": ["validate_model"],
    "resimhub.evaluation.requested": ["evaluate"],
    "resimhub.evaluation.completed": ["aggregate"],
    "resimhub.evaluation.failed": ["aggregate"],
    "*": ["fan_out_webhooks"],
}


class Periodic(NamedTuple):
    name: str
    every_s: float
    fn: Callable[..., object]  # fn(storage, actors)


# Housekeeping every relay runs between passes.
PERIODIC: list[Periodic] = [
    Periodic("webhook_sweep", webhooks.SWEEP_EVERY_S, webhooks.sweep),
    Periodic("snapshot_compaction", housekeeping.COMPACT_EVERY_S, housekeeping.compact_snapshots),
    Periodic("leaderboard_statistics", housekeeping.LEADERBOARD_EVERY_S, housekeeping.refresh_leaderboards),
    Periodic("temporary_files", housekeeping.TEMP_SWEEP_EVERY_S, housekeeping.remove_stale_temporaries),
]
