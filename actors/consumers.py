"""The routing table: which actor consumes which event, on which queue, with which limits.

Read this file to know what happens after any event; the handlers live in modules named for what
they work on.
"""

from __future__ import annotations

from actors import environments
from actors.bus import ActorSpec

SPECS: list[ActorSpec] = [
    ActorSpec("verify_environment", environments.verify_environment, queue="environments",
              max_retries=5, time_limit_ms=120_000),
]

ROUTES: dict[str, list[str]] = {
    "resimhub.environment.registered": ["verify_environment"],
}
