from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from api.deps import SessionDep, StorageDep
from api.schemas_webhooks import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPage,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhookRotate,
    WebhookSecret,
    WebhookUpdate,
)
from api.services import webhooks

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

DeliveryStatus = Literal["pending", "sending", "delivered", "failed", "cancelled"]


@router.post("", status_code=201, response_model=WebhookCreated)
def create_webhook(body: WebhookCreate, session: SessionDep, storage: StorageDep) -> JSONResponse:
    """Subscribe a URL to event types; the answer holds the signing secret, which is never shown again."""
    sub, secret = webhooks.create(session, storage.settings, url=body.url, event_types=body.event_types,
                                  description=body.description, pause_after_failures=body.pause_after_failures)
    return JSONResponse({**WebhookPublic.dump(sub), "secret": secret}, status_code=201,
                        headers={"Location": f"/api/webhooks/{sub.id}"})


@router.get("")
def list_webhooks(session: SessionDep, limit: int = Query(100, ge=1, le=1000),
                  offset: int = Query(0, ge=0)) -> list[WebhookPublic]:
    return [WebhookPublic.model_validate(s) for s in webhooks.list_all(session, limit=limit, offset=offset)]


@router.get("/{webhook_id}")
def get_webhook(webhook_id: int, session: SessionDep) -> WebhookPublic:
    return WebhookPublic.model_validate(webhooks.get(session, webhook_id))


@router.patch("/{webhook_id}")
def update_webhook(webhook_id: int, body: WebhookUpdate, session: SessionDep, storage: StorageDep) -> WebhookPublic:
    """Change the URL, types or description, or pause and resume (resuming also re-enables after a 410)."""
    changes = body.model_dump(exclude_unset=True)
    return WebhookPublic.model_validate(webhooks.update(session, storage.settings, webhook_id, changes))


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(webhook_id: int, session: SessionDep) -> Response:
    webhooks.remove(session, webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret")
def rotate_secret(webhook_id: int, session: SessionDep, body: WebhookRotate | None = None) -> WebhookSecret:
    """A new secret; the old one signs alongside it for ``grace_seconds`` (default a day)."""
    sub = webhooks.rotate_secret(session, webhook_id, (body or WebhookRotate()).grace_seconds)
    return WebhookSecret.model_validate(sub)


@router.get("/{webhook_id}/deliveries")
def list_deliveries(webhook_id: int, session: SessionDep, status: DeliveryStatus | None = None,
                    before: int | None = Query(None, ge=1, description="cursor: next_cursor of the previous page"),
                    limit: int = Query(20, ge=1, le=200)) -> WebhookDeliveryPage:
    return webhooks.deliveries_page(session, webhook_id, status=status, before=before, limit=limit)


@router.get("/{webhook_id}/deliveries/{delivery_id}")
def get_delivery(webhook_id: int, delivery_id: int, session: SessionDep) -> WebhookDeliveryPublic:
    return webhooks.get_delivery(session, webhook_id, delivery_id)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202)
def redeliver(webhook_id: int, delivery_id: int, session: SessionDep) -> WebhookDeliveryPublic:
    return webhooks.redeliver(session, webhook_id, delivery_id)


@router.post("/{webhook_id}/test", status_code=202)
def send_test(webhook_id: int, session: SessionDep) -> WebhookDeliveryPublic:
    """Deliver a ``resimhub.webhook.pinged`` event to this subscription only."""
    return webhooks.ping(session, webhook_id)
