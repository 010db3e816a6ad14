"""Validating an uploaded model file by really reading it with the safe loader, in the sandbox.

The gateway only recognised the format; here, inside the sandbox (:mod:`actors.sandboxing`), every
tensor is read (without executing pickle code), the layers are chained into a policy and, when the
upload named an environment, the policy's input and output sizes are checked against it. What the
loader had to assume is stored with the model (``manifest["assumptions"]``) and shown with it.
A rejected model keeps its row for audit, but its file is deleted: an untrusted file that failed
validation has no further use on the shared volume.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actors.bus import transient
from actors.handling import consumer
from actors.sandboxing import loader_options, open_model
from storage import ledger, outbox, tasks
from storage.events import Envelope, ModelRejected, ModelUploaded, ModelValidated
from storage.models import Model
from storage.views import model_view

if TYPE_CHECKING:
    from actors.runtime import Runtime

log = logging.getLogger(__name__)

CONSUMER = "validate_model"


@consumer(CONSUMER)
def validate_model(runtime: Runtime, envelope: Envelope) -> None:
    """Read the uploaded file into a policy; record it as validated (shapes, manifest) or rejected."""
    event: ModelUploaded = envelope.event()  # type: ignore[assignment]
    storage, db = runtime.storage, runtime.storage.db
    with db.session() as session:
        model = session.get(Model, event.model_id)
        if model is None:
            log.warning("validate_model: model %s does not exist; nothing to do", event.model_id)
            return
        task = tasks.get(session, event.task_id)
        if task is not None and task.status == "queued":
            tasks.mark_running(session, task)
            session.commit()
        relative, options = model.path, loader_options(model)

    loaded, error = None, None
    try:
        with open_model(runtime.sandbox, storage, relative, options,
                        max_bytes=storage.settings.max_upload_bytes) as policy:
            loaded = policy.loaded
    except Exception as exc:  # noqa: BLE001 - anything the file makes the loader do is a rejection
        if transient(exc):
            raise
        error = tasks.error_document(exc, code=getattr(exc, "code", None) or "bad_content")
        if isinstance(exc, FileNotFoundError):
            error["code"] = "model_file_missing"
        if error["celery_type"] == "Exception":
            error["celery_type"] = "ValueError"  # a refused input, as a Celery client would expect it

    with db.session() as session:
        model = session.get(Model, event.model_id)
        task = tasks.get(session, event.task_id)
        if loaded is not None:
            model.status = "validated"
            model.shapes = loaded["shapes"]
            model.manifest = loaded["manifest"]
            model.reason = None
            # ``model.activation`` stays what the uploader stated: writing the loader's default back
            # would make every later evaluation read it as stated, and its assumption would vanish.
            if task is not None and task.status not in tasks.TERMINAL:
                tasks.succeed(session, task, model_view(model))
            outbox.record(session, ModelValidated(model_id=model.id, task_id=event.task_id, format=loaded["format"],
                                                  shapes=loaded["shapes"]))
        else:
            model.status = "rejected"
            model.reason = error["message"]
            if task is not None:
                tasks.fail(session, task, {**error, "retryable": False})
            outbox.record(session, ModelRejected(model_id=model.id, task_id=event.task_id, reason=error["message"]))
        ledger.mark(session, envelope.id, CONSUMER)
        session.commit()

    if loaded is None:
        # After the commit: if the commit had failed, the redelivered message still finds the file.
        storage.artifacts.delete(relative)
