"""Webhook subscriptions and their delivery log.

Pings and redeliveries follow the outbox rule like everything else: the delivery row and an event are
committed together and the fan-out consumer enqueues the delivery, so the gateway never talks to
the bus and a request answered 202 is never lost.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.errors import Conflict, Invalid, NotFound
from storage import outbox
from storage.events import WebhookPinged, WebhookRedeliveryRequested, rfc3339
from storage.models import WebhookAttempt, WebhookDelivery, WebhookSubscription, utcnow
from storage.settings import Settings
from storage.webhooks import (
    UnknownEventType,
    UnsafeUrl,
    check_patterns,
    check_url,
    deliverable_types,
    generate_secret,
    new_message_id,
)

IN_FLIGHT = ("pending", "sending")


def _time(moment) -> str | None:
    return rfc3339(moment) if moment is not None else None


def delivery_public(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict:
    return {
        "id": delivery.id,
        "webhook_id": delivery.subscription_id,
        "message_id": delivery.message_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "manual": delivery.manual,
        "attempt_count": delivery.attempts,
        "next_attempt_at": _time(delivery.next_attempt_at) if delivery.status in IN_FLIGHT else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": rfc3339(delivery.created_at),
        "finished_at": _time(delivery.finished_at),
        "attempts": [
            {"number": a.number, "started_at": rfc3339(a.started_at), "status_code": a.status_code,
             "latency_ms": float(a.latency_ms), "response_body": a.response_body, "error": a.error}
            for a in sorted(attempts, key=lambda a: a.number)
        ],
    }


def _checked_url(url: str, settings: Settings) -> str:
    allow = settings.webhook_allow_private
    try:
        check_url(url, allow_private=allow, resolve_host=not allow)
    except UnsafeUrl as exc:
        raise Invalid(f"url refused: {exc.reason}", code=exc.code, details={"field": "url", "reason": exc.reason}) \
            from None
    return url


def _checked_patterns(patterns: list[str]) -> list[str]:
    try:
        return check_patterns(patterns)
    except UnknownEventType as exc:
        raise Invalid(str(exc), code="unknown_event_type",
                      details={"field": "event_types", "pattern": exc.pattern, "known": deliverable_types()}) \
            from None


def create(session: Session, settings: Settings, *, url: str, event_types: list[str], description: str | None,
           pause_after_failures: int) -> tuple[WebhookSubscription, str]:
    """A new active subscription and its secret, which is returned here and never again."""
    sub = WebhookSubscription(url=_checked_url(url, settings), event_types=_checked_patterns(event_types),
                              description=description, pause_after_failures=pause_after_failures,
                              secret=generate_secret(), status="active", consecutive_failures=0)
    session.add(sub)
    session.commit()
    return sub, sub.secret


def get(session: Session, webhook_id: int) -> WebhookSubscription:
    sub = session.get(WebhookSubscription, webhook_id)
    if sub is None:
        raise NotFound(f"webhook {webhook_id} does not exist", details={"webhook_id": webhook_id})
    return sub


def list_all(session: Session, *, limit: int = 100, offset: int = 0) -> list[WebhookSubscription]:
    query = select(WebhookSubscription).order_by(WebhookSubscription.id).limit(limit).offset(offset)
    return list(session.scalars(query))


def update(session: Session, settings: Settings, webhook_id: int, changes: dict) -> WebhookSubscription:
    sub = get(session, webhook_id)
    if changes.get("url") is not None:
        sub.url = _checked_url(changes["url"], settings)
    if changes.get("event_types") is not None:
        sub.event_types = _checked_patterns(changes["event_types"])
    if "description" in changes:
        sub.description = changes["description"]
    if changes.get("pause_after_failures") is not None:
        sub.pause_after_failures = changes["pause_after_failures"]
    status = changes.get("status")
    if status == "active" and sub.status != "active":
        sub.status, sub.status_reason, sub.consecutive_failures = "active", None, 0
    elif status == "paused" and sub.status != "paused":
        sub.status, sub.status_reason = "paused", "paused through the API"
    sub.updated_at = utcnow()
    session.commit()
    return sub


def remove(session: Session, webhook_id: int) -> None:
    """Delete the subscription with its deliveries and their attempts; queued messages then find nothing."""
    get(session, webhook_id)
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.subscription_id == webhook_id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.subscription_id == webhook_id))
    session.execute(delete(WebhookSubscription).where(WebhookSubscription.id == webhook_id))
    session.commit()


def rotate_secret(session: Session, webhook_id: int, grace_seconds: int) -> WebhookSubscription:
    """A new secret; the current one keeps signing beside it for ``grace_seconds`` (an older previous
    secret, if a grace period was still running, is dropped)."""
    sub = get(session, webhook_id)
    if grace_seconds > 0:
        sub.previous_secret = sub.secret
        sub.previous_secret_expires_at = utcnow() + timedelta(seconds=grace_seconds)
    else:
        sub.previous_secret, sub.previous_secret_expires_at = None, None
    sub.secret = generate_secret()
    sub.updated_at = utcnow()
    session.commit()
    return sub


def _attempts_of(session: Session, delivery_ids: list[int]) -> dict[int, list[WebhookAttempt]]:
    found: dict[int, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
    if delivery_ids:
        for attempt in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))):
            found[attempt.delivery_id].append(attempt)
    return found


def deliveries_page(session: Session, webhook_id: int, *, status: str | None = None, before: int | None = None,
                    limit: int = 20) -> dict:
    """Newest first; ``before`` is the cursor (the id of the last delivery seen)."""
    get(session, webhook_id)
    query = (select(WebhookDelivery).where(WebhookDelivery.subscription_id == webhook_id)
             .order_by(WebhookDelivery.id.desc()).limit(limit + 1))
    if status:
        query = query.where(WebhookDelivery.status == status)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    attempts = _attempts_of(session, [r.id for r in rows])
    return {"deliveries": [delivery_public(r, attempts[r.id]) for r in rows],
            "next_cursor": rows[-1].id if more else None}


def _delivery(session: Session, webhook_id: int, delivery_id: int) -> WebhookDelivery:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.subscription_id != webhook_id:
        raise NotFound(f"webhook {webhook_id} has no delivery {delivery_id}",
                       details={"webhook_id": webhook_id, "delivery_id": delivery_id})
    return delivery


def get_delivery(session: Session, webhook_id: int, delivery_id: int) -> dict:
    delivery = _delivery(session, webhook_id, delivery_id)
    return delivery_public(delivery, _attempts_of(session, [delivery.id])[delivery.id])


def redeliver(session: Session, webhook_id: int, delivery_id: int) -> dict:
    """Send a finished delivery again, with the same ``webhook-id`` so a receiver that already has it
    can tell; it is attempted even if the subscription is paused or disabled (once, in that case)."""
    get(session, webhook_id)
    delivery = _delivery(session, webhook_id, delivery_id)
    if delivery.status in IN_FLIGHT:
        raise Conflict(f"delivery {delivery_id} is still being attempted ({delivery.status})",
                       code="delivery_in_progress", details={"status": delivery.status})
    now = utcnow()
    delivery.status, delivery.manual, delivery.retries = "pending", True, 0
    delivery.next_attempt_at, delivery.finished_at, delivery.lease_until = now, None, None
    outbox.record(session, WebhookRedeliveryRequested(webhook_id=webhook_id, delivery_id=delivery.id))
    session.commit()
    return get_delivery(session, webhook_id, delivery_id)


def ping(session: Session, webhook_id: int) -> dict:
    """A ``resimhub.webhook.pinged`` event delivered to this subscription only, whatever its state."""
    get(session, webhook_id)
    envelope = outbox.record(session, WebhookPinged(webhook_id=webhook_id))
    delivery = WebhookDelivery(subscription_id=webhook_id, event_id=envelope.id, event_type=envelope.type,
                               message_id=new_message_id(), manual=True, status="pending", attempts=0, retries=0,
                               next_attempt_at=utcnow())
    session.add(delivery)
    session.commit()
    return delivery_public(delivery, [])
