"""Request and response schemas of ``/api/webhooks`` (docs/webhooks.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ModelWrapValidatorHandler, model_validator

from api.schemas import Public, Strict, Timestamp
from storage.models import WebhookSubscription

MAX_GRACE_S = 7 * 86_400


class WebhookCreate(Strict):
    url: str = Field(min_length=1, max_length=2048, description="http or https URL of the receiver")
    event_types: list[str] = Field(min_length=1, max_length=100, description="event types; `*` matches any "
                                   "characters, e.g. resimhub.evaluation.* or * for every event")
    description: str | None = Field(default=None, max_length=500)
    pause_after_failures: int = Field(default=5, ge=1, le=10_000, description="consecutive failed deliveries "
                                      "(each after its whole retry schedule) that pause the subscription")


class WebhookUpdate(Strict):
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    status: Literal["active", "paused"] | None = Field(default=None, description="active resumes (and re-enables "
                                                       "a disabled subscription), paused stops deliveries")
    pause_after_failures: int | None = Field(default=None, ge=1, le=10_000)


class WebhookRotate(Strict):
    grace_seconds: int = Field(default=86_400, ge=0, le=MAX_GRACE_S,
                               description="how long the old secret keeps signing next to the new one")


class _SecretExpiry(Public):
    """Shows ``previous_secret_expires_at`` only while there is a previous secret that signs."""

    @model_validator(mode="wrap")
    @classmethod
    def _expiry_of_a_previous_secret(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        view = handler(data)
        if isinstance(data, WebhookSubscription) and not data.previous_secret:
            view.previous_secret_expires_at = None
        return view


class WebhookPublic(_SecretExpiry):
    id: int
    url: str
    description: str | None
    event_types: list[str]
    status: str
    status_reason: str | None
    pause_after_failures: int
    consecutive_failures: int
    previous_secret_expires_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="whsec_… signing secret; shown only in this answer")


class WebhookSecret(_SecretExpiry):
    id: int
    secret: str
    previous_secret_expires_at: Timestamp | None


class WebhookAttemptPublic(BaseModel):
    number: int
    started_at: str
    status_code: int | None
    latency_ms: float
    response_body: str | None
    error: str | None


class WebhookDeliveryPublic(BaseModel):
    id: int
    webhook_id: int
    message_id: str = Field(description="the webhook-id header of every attempt; receivers dedupe on it")
    event_id: str
    event_type: str
    status: str = Field(description="pending, sending, delivered, failed or cancelled")
    manual: bool
    attempt_count: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    finished_at: str | None
    attempts: list[WebhookAttemptPublic]


class WebhookDeliveryPage(BaseModel):
    deliveries: list[WebhookDeliveryPublic]
    next_cursor: int | None = Field(description="pass as `before` for the next (older) page")
