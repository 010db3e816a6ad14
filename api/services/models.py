"""Accepting model uploads and reading them back.

An upload is untrusted (docs/models.md, "The sandbox"). What can be decided from the bytes alone without running
anything (size, format by magic bytes and zip member names) is decided in the request, so that a
pickle or a random file is refused at once and leaves nothing behind: no file, no row, no event.
Reading the weights and checking them against the environment is real work and goes to the
``validate_model`` actor through a ``ModelUploaded`` event.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from actors.rl.errors import ModelFileError
from actors.rl.modelfiles import (
    ACTION_SCALINGS,
    NATIVE,
    NPZ_STATE_DICT,
    ONNX,
    SAFETENSORS,
    SB3_ZIP,
    TORCH_ZIP,
    Limits,
    parse_normalization,
    sniff_format,
)
from api.errors import ApiError, Invalid, NotFound, TooLarge, Unsupported
from api.schemas_benchmark import ACTIVATIONS
from api.services.catalog import require_known_env
from storage import outbox, tasks
from storage.artifacts import ArtifactStore, ArtifactTooLarge
from storage.events import ModelUploaded
from storage.models import Model

#: Download names get an extension a user's tools recognise; the stored file is always ``.bin``
#: because the uploader's file name proves nothing about the content.
EXTENSIONS = {NATIVE: ".npz", NPZ_STATE_DICT: ".npz", TORCH_ZIP: ".pt", SB3_ZIP: ".zip", SAFETENSORS: ".safetensors",
              ONNX: ".onnx"}


class Gone(ApiError):
    status, code = 410, "gone"


def refusal(exc: ModelFileError) -> ApiError:
    """The API error for a model file the engine refused, keeping the engine's code and status."""
    kind = {415: Unsupported, 413: TooLarge}.get(exc.status, Invalid)
    return kind(str(exc), code=exc.code, details=exc.details or None)


_PREFIX_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,199}$")
MAX_NORMALIZATION_BYTES = 4 * 1024 * 1024


def _field_error(field: str, message: str, kind: str = "value_error") -> Invalid:
    return Invalid(f"{field}: {message}", code="validation_error",
                   details=[{"field": field, "message": message, "type": kind}])


def _loader_options(prefix: str | None, action_scaling: str | None, normalization: BinaryIO | None) -> dict:
    """What the uploader stated about how to read the file, checked; stored on the model row."""
    options: dict = {}
    prefix = (prefix or "").strip() or None
    if prefix is not None:
        if not _PREFIX_RE.match(prefix):
            raise _field_error("prefix", "a layer-stack prefix is a dotted name like 'actor' or "
                               "'mlp_extractor.policy_net' (letters, digits, '_' and '.')")
        options["prefix"] = prefix
    action_scaling = (action_scaling or "").strip().lower() or None
    if action_scaling is not None:
        if action_scaling not in ACTION_SCALINGS:
            raise _field_error("action_scaling", f"must be one of {', '.join(ACTION_SCALINGS)}", "enum")
        options["action_scaling"] = action_scaling
    if normalization is not None:
        data = normalization.read(MAX_NORMALIZATION_BYTES + 1)
        if len(data) > MAX_NORMALIZATION_BYTES:
            raise TooLarge(f"the normalization file is larger than {MAX_NORMALIZATION_BYTES} bytes",
                           details={"field": "normalization", "limit_bytes": MAX_NORMALIZATION_BYTES})
        if data:
            try:
                options["normalization"] = parse_normalization(data)
            except ModelFileError as exc:
                raise refusal(exc) from None
    return options


def _check_options(env_name: str | None, activation: str | None, name: str | None) -> tuple:
    env_name = (env_name or "").strip() or None
    if env_name is not None:
        env_name = require_known_env(env_name)
    activation = (activation or "").strip().lower() or None
    if activation is not None and activation not in ACTIVATIONS:
        raise Invalid(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}",
                      code="validation_error", details=[{"field": "activation", "message": "unknown activation",
                                                         "type": "enum"}])
    name = (name or "").strip() or None
    if name is not None and len(name) > 200:
        raise Invalid("name is longer than 200 characters", details=[{"field": "name", "message": "too long",
                                                                      "type": "string_too_long"}])
    return env_name, activation, name


def upload(session: Session, artifacts: ArtifactStore, stream: BinaryIO, *, max_bytes: int,
           env_name: str | None = None, activation: str | None = None, name: str | None = None,
           prefix: str | None = None, action_scaling: str | None = None,
           normalization: BinaryIO | None = None) -> Model:
    """Store the uploaded file, recognise its format and queue its validation; returns the new row.

    ``activation`` matters only for files that do not record it; left out, the loader's default
    for the recognised layout is used and named in the model's ``assumptions``. ``prefix`` picks the
    acting layer stack of a state dict that holds several; ``action_scaling`` says how a continuous
    ONNX output maps to the action bounds; ``normalization`` is a JSON or .npz of observation
    statistics (VecNormalize's), applied before the policy. Any refusal deletes the stored file
    before raising, so a refused upload leaves no trace.
    """
    env_name, activation, name = _check_options(env_name, activation, name)
    options = _loader_options(prefix, action_scaling, normalization)
    model_id = str(uuid.uuid4())
    relative = artifacts.model_path(model_id)
    try:
        sha256, size = artifacts.write_stream(relative, stream, max_bytes)
    except ArtifactTooLarge as exc:
        raise TooLarge(f"the model file is larger than {exc.limit} bytes",
                       details={"limit_bytes": exc.limit}) from None
    try:
        fmt = sniff_format(artifacts.path(relative), Limits(max_bytes=max_bytes))
        model = Model(id=model_id, name=name, source="upload", status="uploaded", format=fmt, sha256=sha256,
                      size_bytes=size, path=relative, env_name=env_name, activation=activation,
                      options=options or None)
        session.add(model)
        task = tasks.create(session, "validate_model", subject=f"models/{model_id}")
        model.task_id = task.id
        outbox.record(session, ModelUploaded(model_id=model_id, task_id=task.id, format=fmt, sha256=sha256,
                                             env_name=env_name, activation=activation))
        session.commit()
    except ModelFileError as exc:
        artifacts.delete(relative)
        raise refusal(exc) from None
    except BaseException:
        artifacts.delete(relative)
        raise
    return model


def get(session: Session, model_id: str) -> Model:
    model = session.get(Model, model_id)
    if model is None:
        raise NotFound(f"model {model_id} does not exist", details={"model_id": model_id})
    return model


def file_of(session: Session, artifacts: ArtifactStore, model_id: str) -> tuple[Path, str]:
    """The stored file and the name to download it under."""
    model = get(session, model_id)
    path = artifacts.path(model.path)
    if model.status == "rejected" or not path.is_file():
        raise Gone(f"the file of model {model_id} is not kept ({model.reason or 'it was removed'})",
                   details={"model_id": model_id, "status": model.status})
    return path, f"model-{model.id}{EXTENSIONS.get(model.format, '.bin')}"
