"""Response helpers shared by the FastAPI and Flask layers."""

from __future__ import annotations

from typing import Any

RETRY_AFTER_S = 1


def accepted(task_id: str, **resource: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers of a ``202 Accepted`` for long work the client should poll."""
    location = f"/api/tasks/{task_id}"
    body = {"task_id": task_id, "status": "queued", "location": location, **resource}
    return body, {"Location": location, "Retry-After": str(RETRY_AFTER_S)}
