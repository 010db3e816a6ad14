"""Webhook fan-out and delivery: every event becomes one delivery per matching subscription, each
attempted on the ``webhooks`` queue until it succeeds or the retry schedule runs out.

The database row is the truth about a delivery; Dramatiq messages only say "look at delivery N now".
A message carries the delivery's attempt count as a token, so a duplicate or a stale message finds the
token changed and does nothing, and at most one attempt of a delivery is in flight at a time. Short
waits between attempts are Dramatiq delayed messages; waits longer than :data:`MAX_MESSAGE_DELAY_S`,
and any message lost between a commit and its enqueue, are picked up by :func:`sweep`, which the relay
runs periodically (see ``PERIODIC`` in :mod:`actors.consumers`).
"""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import dramatiq
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from actors import signing, webhook_delivery
from actors.handling import consumer
from storage import ledger, outbox
from storage.context import Storage
from storage.db import Database
from storage.events import Envelope, WebhookDisabled, WebhookPaused
from storage.models import EventRecord, WebhookAttempt, WebhookDelivery, WebhookSubscription, utcnow
from storage.webhooks import INTERNAL_TYPES, TARGETED_TYPES, matches, new_message_id

if TYPE_CHECKING:
    from actors.runtime import Runtime

log = logging.getLogger(__name__)

FAN_OUT = "fan_out_webhooks"
DELIVER = "deliver_webhook"

#: Longer waits are left to the sweep: a worker holds delayed messages in memory, and hours-long ones
#: would fill its delay-queue prefetch and hold back the short retries queued behind them.
MAX_MESSAGE_DELAY_S = 900.0
#: How overdue a pending delivery must be before the sweep re-sends it; bounds the lateness of retries
#: longer than MAX_MESSAGE_DELAY_S and of deliveries whose message was lost.
SWEEP_GRACE_S = 60.0
SWEEP_EVERY_S = 15.0
SWEEP_BATCH = 500
#: Longer than the longest attempt (connect and read timeouts, the read deadline, three addresses).
LEASE_S = 180.0
#: A message may arrive this much before the row says the attempt is due (clock skew between hosts).
EARLY_TOLERANCE_S = 1.0
RETRY_AFTER_CAP_S = 86_400.0
JITTER = 0.1


def send_delivery(actor: dramatiq.Actor, delivery_id: int, token: int, delay_s: float = 0.0) -> None:
    """Ask ``actor`` (:data:`DELIVER`) for an attempt of the delivery, ``delay_s`` from now."""
    delay_ms = int(delay_s * 1000)
    actor.send_with_options(args=(delivery_id, token), delay=delay_ms if delay_ms > 0 else None)


def _send_all(actor: dramatiq.Actor, pending: list[tuple[int, int]]) -> None:
    for delivery_id, token in pending:
        try:
            send_delivery(actor, delivery_id, token)
        except Exception as exc:  # noqa: BLE001 - the row is committed; the sweep re-sends it
            log.warning("could not enqueue webhook delivery %s (the sweep will): %s", delivery_id, exc)


# -- fan-out --------------------------------------------------------------------------------------
@consumer(FAN_OUT)
def fan_out_webhooks(runtime: Runtime, envelope: Envelope) -> None:
    """Record a pending delivery per active subscription whose patterns match, then enqueue them.

    A ping's delivery and a redelivery were recorded by the gateway with the event; here they are
    only enqueued, because the gateway never talks to the bus.
    """
    db, deliver = runtime.storage.db, runtime.actor(DELIVER)
    if envelope.type in INTERNAL_TYPES:
        with db.session() as session:
            delivery = session.get(WebhookDelivery, envelope.data.get("delivery_id"))
            pending = [(delivery.id, delivery.attempts)] if delivery and delivery.status == "pending" else []
        _send_all(deliver, pending)
        return
    if envelope.type in TARGETED_TYPES:
        with db.session() as session:
            rows = session.execute(select(WebhookDelivery.id, WebhookDelivery.attempts).where(
                WebhookDelivery.event_id == envelope.id, WebhookDelivery.status == "pending"))
            pending = [(row.id, row.attempts) for row in rows]
        _send_all(deliver, pending)
        return

    with db.session() as session:
        active = session.execute(select(WebhookSubscription.id, WebhookSubscription.event_types)
                                 .where(WebhookSubscription.status == "active"))
        wanted = [row.id for row in active if matches(list(row.event_types), envelope.type)]
        if not wanted:
            # Nothing to record, so nothing to make idempotent: most events end here with two reads.
            return
        # The ledger row commits with the deliveries, so passing the ledger check means none exist yet.
        now = utcnow()
        created = [WebhookDelivery(subscription_id=sid, event_id=envelope.id, event_type=envelope.type,
                                   message_id=new_message_id(), next_attempt_at=now)
                   for sid in wanted]
        session.add_all(created)
        try:
            ledger.mark(session, envelope.id, FAN_OUT)  # a duplicate fails here or at the commit
            session.commit()
        except IntegrityError:
            # A concurrent duplicate of this message got there first and enqueued the deliveries.
            session.rollback()
            return
        pending = [(d.id, d.attempts) for d in created]
    _send_all(deliver, pending)


# -- delivery -------------------------------------------------------------------------------------
def _claim(session: Session, delivery_id: int, token: int, now: datetime):
    """Take the delivery for one attempt, or say why not (``None`` → nothing to do)."""
    # One round trip for the delivery (row-locked on PostgreSQL), its subscription and its event.
    row = session.execute(
        select(WebhookDelivery, WebhookSubscription, EventRecord)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .outerjoin(EventRecord, EventRecord.event_id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id == delivery_id)
        .with_for_update(of=WebhookDelivery)
    ).first()
    if row is None:
        return None
    delivery, subscription, event = row
    if delivery.attempts != token:
        return None
    if delivery.status == "sending":
        if delivery.lease_until and delivery.lease_until > now:
            return None
    elif delivery.status != "pending":
        return None
    due = delivery.next_attempt_at
    if due is not None and due > now + timedelta(seconds=EARLY_TOLERANCE_S):
        return ("early", (due - now).total_seconds())
    if subscription.status != "active" and not delivery.manual:
        delivery.status, delivery.finished_at = "cancelled", now
        delivery.last_error = f"not attempted: the subscription is {subscription.status}"
        delivery.next_attempt_at = None
        return ("cancelled", None)
    if event is None:
        delivery.status, delivery.finished_at, delivery.next_attempt_at = "failed", now, None
        delivery.last_error = "the event no longer exists"
        return ("cancelled", None)
    secrets = [subscription.secret]
    expires = subscription.previous_secret_expires_at
    if subscription.previous_secret and expires is not None and expires > now:
        secrets.append(subscription.previous_secret)
    delivery.status, delivery.lease_until = "sending", now + timedelta(seconds=LEASE_S)
    delivery.attempts += 1
    body = json.dumps(envelope_doc(event), separators=(",", ":"), ensure_ascii=False).encode()
    return ("attempt", {"number": delivery.attempts, "url": subscription.url, "secrets": secrets, "body": body,
                        "message_id": delivery.message_id, "had_failures": subscription.consecutive_failures > 0})


def envelope_doc(event: EventRecord) -> dict:
    return outbox.envelope_of(event).to_cloudevent()


def deliver_webhook(runtime: Runtime, delivery_id: int, token: int) -> None:
    """Make one attempt of a delivery and record it; schedule the next attempt or finish."""
    settings = runtime.settings
    db, deliver = runtime.storage.db, runtime.actor(DELIVER)
    with db.session() as session:
        claim = _claim(session, delivery_id, token, utcnow())
        if claim is None:
            session.rollback()
            return
        kind, detail = claim
        if kind == "early":
            session.rollback()
            if detail <= MAX_MESSAGE_DELAY_S:
                send_delivery(deliver, delivery_id, token, detail)
            return
        session.commit()
        if kind == "cancelled":
            return
    attempt = detail
    started_at = utcnow()
    timestamp = int(started_at.timestamp())
    headers = signing.headers(attempt["secrets"], attempt["message_id"], timestamp, attempt["body"])
    outcome = webhook_delivery.post(attempt["url"], attempt["body"], headers,
                                    allow_private=settings.webhook_allow_private)
    if outcome.ok:
        record_success(db, delivery_id, attempt["number"], started_at, outcome, attempt["had_failures"])
        return
    retry_in = record_outcome(db, delivery_id, attempt["number"], started_at, outcome,
                              settings.webhook_retry_schedule)
    if retry_in is not None and retry_in <= MAX_MESSAGE_DELAY_S:
        _send_later(deliver, delivery_id, attempt["number"], retry_in)


def _send_later(actor: dramatiq.Actor, delivery_id: int, token: int, delay_s: float) -> None:
    try:
        send_delivery(actor, delivery_id, token, delay_s)
    except Exception as exc:  # noqa: BLE001 - the retry is in the row; the sweep re-sends it
        log.warning("could not schedule webhook delivery %s (the sweep will): %s", delivery_id, exc)


def next_delay(schedule: tuple[float, ...], retries: int, retry_after_s: float | None) -> float | None:
    """Seconds until the next attempt, or ``None`` when the schedule is used up."""
    if retries >= len(schedule):
        return None
    delay = schedule[retries] * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not secrecy
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_CAP_S))
    return delay


def record_success(db: Database, delivery_id: int, number: int, started_at: datetime,
                   outcome: webhook_delivery.Outcome, had_failures: bool) -> None:
    """The common case in two statements: no row is read, and the subscription is written only if
    it had failures to forget (every delivery of a subscription would otherwise queue on its row)."""
    with db.session() as session:
        done = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == number,
                   WebhookDelivery.status == "sending")
            .values(status="delivered", finished_at=utcnow(), next_attempt_at=None, lease_until=None,
                    last_status_code=outcome.status_code, last_error=None)
            .returning(WebhookDelivery.subscription_id)
        ).first()
        if done is None:
            # Deleted meanwhile, or the sweep judged this attempt lost and handed the delivery on.
            session.rollback()
            return
        session.add(WebhookAttempt(delivery_id=delivery_id, number=number, started_at=started_at,
                                   status_code=outcome.status_code, latency_ms=outcome.latency_ms,
                                   response_body=outcome.body))
        if had_failures:
            session.execute(update(WebhookSubscription).where(WebhookSubscription.id == done.subscription_id)
                            .values(consecutive_failures=0))
        session.commit()


def record_outcome(db: Database, delivery_id: int, number: int, started_at: datetime,
                   outcome: webhook_delivery.Outcome, schedule: tuple[float, ...]) -> float | None:
    """Log a failed attempt and move the delivery on; returns the delay before the next attempt, if any."""
    with db.session() as session:
        delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.attempts != number or delivery.status != "sending":
            # Deleted meanwhile, or the sweep judged this attempt lost and handed the delivery on.
            session.rollback()
            return None
        session.add(WebhookAttempt(delivery_id=delivery.id, number=number, started_at=started_at,
                                   status_code=outcome.status_code, latency_ms=outcome.latency_ms,
                                   response_body=outcome.body, error=outcome.error))
        now = utcnow()
        delivery.last_status_code, delivery.last_error = outcome.status_code, outcome.error
        delivery.lease_until = None
        retry_in = None
        # Failures change the subscription (a count, a pause, a disable): take its row lock.
        subscription = session.get(WebhookSubscription, delivery.subscription_id, with_for_update=True)
        if outcome.status_code == 410:
            delivery.status, delivery.finished_at, delivery.next_attempt_at = "failed", now, None
            if subscription.status != "disabled":
                subscription.status = "disabled"
                subscription.status_reason = "the receiver answered 410 Gone"
                outbox.record(session, WebhookDisabled(webhook_id=subscription.id, url=subscription.url,
                                                       reason=subscription.status_reason, status_code=410))
        else:
            if subscription.status == "active":
                retry_in = next_delay(schedule, delivery.retries, outcome.retry_after_s)
            if retry_in is not None:
                delivery.status, delivery.retries = "pending", delivery.retries + 1
                delivery.next_attempt_at = now + timedelta(seconds=retry_in)
            else:
                delivery.status, delivery.finished_at, delivery.next_attempt_at = "failed", now, None
                if not delivery.manual and subscription.status == "active":
                    _count_failure(session, subscription)
        session.commit()
        return retry_in


def _count_failure(session: Session, subscription: WebhookSubscription) -> None:
    subscription.consecutive_failures += 1
    if subscription.consecutive_failures >= subscription.pause_after_failures:
        subscription.status = "paused"
        subscription.status_reason = (f"paused after {subscription.consecutive_failures} consecutive failed "
                                      "deliveries")
        outbox.record(session, WebhookPaused(webhook_id=subscription.id, url=subscription.url,
                                             reason=subscription.status_reason,
                                             consecutive_failures=subscription.consecutive_failures))


# -- the backstop ---------------------------------------------------------------------------------
def sweep(storage: Storage, actors: dict, *, grace_s: float = SWEEP_GRACE_S, now: datetime | None = None) -> int:
    """Re-send deliveries that are overdue by more than ``grace_s`` and attempts whose worker vanished.

    Run by every relay; re-sending is harmless because of the token, and a re-sent row is moved to
    "due now" so it is not re-sent again before another ``grace_s`` has passed.
    """
    actor = actors.get(DELIVER)
    if actor is None:
        return 0
    now = now or utcnow()
    overdue = now - timedelta(seconds=grace_s)
    with storage.db.session() as session:
        query = (select(WebhookDelivery)
                 .where(or_(and_(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= overdue),
                            and_(WebhookDelivery.status == "sending", WebhookDelivery.lease_until < now)))
                 .order_by(WebhookDelivery.next_attempt_at)
                 .limit(SWEEP_BATCH))
        if storage.db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = session.scalars(query).all()
        if not rows:
            session.rollback()
            return 0
        schedule = storage.settings.webhook_retry_schedule
        for row in rows:
            row.next_attempt_at = now
            if row.status == "sending":
                _interrupted(session, row, now, schedule)
        pending = [(row.id, row.attempts) for row in rows if row.status == "pending"]
        session.commit()
    for delivery_id, token in pending:
        try:
            actor.send(delivery_id, token)
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            log.warning("sweep could not enqueue webhook delivery %s: %s", delivery_id, exc)
            break
    log.info("webhook sweep re-sent %d deliveries", len(pending))
    return len(pending)


def _interrupted(session: Session, row: WebhookDelivery, now: datetime, schedule: tuple[float, ...]) -> None:
    """Record the attempt a vanished worker was making as interrupted. A lost attempt uses up a retry
    like a failed one, so a delivery that keeps killing its worker still ends."""
    session.add(WebhookAttempt(delivery_id=row.id, number=row.attempts, started_at=now, latency_ms=0.0,
                               error="interrupted: the worker stopped before recording a result"))
    row.lease_until, row.last_status_code, row.last_error = None, None, "interrupted"
    if row.retries < len(schedule):
        row.status, row.retries = "pending", row.retries + 1
        row.next_attempt_at = now
    else:
        row.status, row.finished_at, row.next_attempt_at = "failed", now, None


def recover(storage: Storage, actors: dict, *, now: datetime | None = None) -> int:
    """At the start of a hub whose broker lived in its own memory (``resimhub up``), before its worker
    runs: every message about a delivery died with the previous process. An attempt in flight
    (``sending``, whatever its lease says) is recorded as interrupted; every pending delivery gets its
    message again, delayed until its attempt is due (waits beyond :data:`MAX_MESSAGE_DELAY_S` stay
    with the sweep). Returns the number of deliveries sent again."""
    actor = actors.get(DELIVER)
    if actor is None:
        return 0
    now = now or utcnow()
    schedule = storage.settings.webhook_retry_schedule
    with storage.db.session() as session:
        rows = session.scalars(select(WebhookDelivery)
                               .where(WebhookDelivery.status.in_(("pending", "sending")))
                               .order_by(WebhookDelivery.next_attempt_at)).all()
        for row in rows:
            if row.status == "sending":
                _interrupted(session, row, now, schedule)
        pending = [(row.id, row.attempts, row.next_attempt_at) for row in rows if row.status == "pending"]
        session.commit()
    sent = 0
    for delivery_id, token, due in pending:
        delay = max(0.0, (due - now).total_seconds()) if due is not None else 0.0
        if delay > MAX_MESSAGE_DELAY_S:
            continue
        send_delivery(actor, delivery_id, token, delay)
        sent += 1
    return sent
