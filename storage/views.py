"""JSON views of stored rows that both the API and the actors hand out.

A model's description is both the validation task's result (written by a worker) and the body of
``GET /benchmark/models/{id}`` (written by the gateway); keeping it here keeps them the same.
"""

from __future__ import annotations

from storage.events import rfc3339
from storage.models import Model


def model_view(model: Model) -> dict:
    return {
        "model_id": model.id,
        "id": model.id,
        "name": model.name,
        "source": model.source,
        "status": model.status,
        "format": model.format,
        "sha256": model.sha256,
        "size_bytes": int(model.size_bytes),
        "env_name": model.env_name,
        # The activation the network runs with: the uploader's, else what the file (or the
        # loader's default, then listed in "assumptions") says.
        "activation": model.activation or (model.manifest or {}).get("activation"),
        "options": model.options or {},
        "assumptions": (model.manifest or {}).get("assumptions", []),
        "shapes": model.shapes,
        "manifest": model.manifest,
        "reason": model.reason,
        "task_id": model.task_id,
        "experiment_id": model.experiment_id,
        "run_id": model.run_id,
        "created_at": rfc3339(model.created_at),
        # A later training of the experiment replaced this model (storage/supersession.py).
        "superseded": model.superseded_at is not None,
        "superseded_at": rfc3339(model.superseded_at) if model.superseded_at else None,
        "superseded_by_task_id": model.superseded_by_task_id,
    }
