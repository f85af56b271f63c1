"""Webhook deliveries in the database: recorded with the terminal transition, sent by the relay,
attempted by a task, retried with exponential backoff. Services never commit.

Every step is a conditional update, so a duplicated task message, two relays racing, or a
worker that died mid-attempt never sends one attempt twice or loses a delivery: a delivery
sent to the queue that never reports back is sent again once `redispatch_after` passes.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy.orm import Session

from dfp.settings import Settings
from dfp.storage.models import Job, JobTag, WebhookDelivery
from dfp.storage.types import utcnow
from dfp.webhooks.events import event_body, event_type

MAX_RETRY_DELAY = 3600.0
RELAY_BATCH = 100


@dataclass(frozen=True)
class Attempt:
    """One claimed delivery attempt: what to send and the attempt number that owns it."""

    delivery_id: uuid.UUID
    number: int
    owner: str
    url: str
    event_type: str
    body: str


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: delivered, or failed (to retry later or not)."""

    delivered: bool
    retry: bool = False
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None  # a receiver's Retry-After, in seconds


def record_terminal_event(session: Session, job_id: uuid.UUID) -> uuid.UUID | None:
    """Queue the terminal event of a job that has a callback_url (in the same transaction)."""
    columns = (
        Job.id,
        Job.kind,
        Job.owner,
        Job.name,
        Job.status,
        Job.callback_url,
        Job.error_code,
        Job.error_message,
        Job.created_at,
        Job.finished_at,
    )
    row = session.execute(select(*columns).where(Job.id == job_id)).mappings().one_or_none()
    if row is None or row["callback_url"] is None:
        return None
    tags = list(session.scalars(select(JobTag.tag).where(JobTag.job_id == job_id)))
    now = utcnow()
    event_id = uuid.uuid4()
    job = dict(row)
    job["finished_at"] = job["finished_at"] or now
    session.execute(
        insert(WebhookDelivery).values(
            id=event_id,
            job_id=job_id,
            owner=row["owner"],
            url=row["callback_url"],
            event_type=event_type(row["status"], row["kind"]),
            body=event_body(event_id, job, sorted(tags), now),
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return event_id


def _sendable(now: datetime, settings: Settings) -> tuple[ColumnElement[bool], ...]:
    lost = now - timedelta(seconds=redispatch_after(settings))
    return (
        WebhookDelivery.status == "pending",
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.dispatched_at.is_(None), WebhookDelivery.dispatched_at < lost),
    )


def redispatch_after(settings: Settings) -> float:
    """A delivery sent this long ago without an outcome was lost on its way (or its worker)."""
    return 3 * settings.webhook_timeout + 60


def dispatch_due(session: Session, settings: Settings, now: datetime) -> list[uuid.UUID]:
    """Mark the deliveries that are due as sent and return them (their tasks go out after
    commit). Of several relays racing, each delivery goes to exactly one."""
    due = (
        select(WebhookDelivery.id)
        .where(*_sendable(now, settings))
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(RELAY_BATCH)
    )
    candidates: Sequence[uuid.UUID] = session.scalars(due).all()
    if not candidates:
        return []
    # The conditions are repeated: a row another relay took meanwhile no longer matches them.
    claimed = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(list(candidates)), *_sendable(now, settings))
        .values(dispatched_at=now)
        .returning(WebhookDelivery.id)
        .execution_options(synchronize_session=False)
    )
    return list(claimed.scalars())


def start_attempt(session: Session, delivery_id: uuid.UUID) -> Attempt | None:
    """Claim the next attempt of a due delivery; None if it is done, not due, or taken."""
    delivery = session.get(WebhookDelivery, delivery_id)
    now = utcnow()
    if delivery is None or delivery.status != "pending" or delivery.next_attempt_at > now:
        return None
    number = delivery.attempts + 1
    claimed = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.attempts == delivery.attempts,
        )
        .values(attempts=number, dispatched_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return Attempt(
        delivery_id=delivery_id,
        number=number,
        owner=delivery.owner,
        url=delivery.url,
        event_type=delivery.event_type,
        body=delivery.body,
    )


def retry_delay(settings: Settings, attempt: int, retry_after: float | None = None) -> float:
    """Seconds before attempt `attempt + 1`: doubling from DFP_WEBHOOK_RETRY_SECONDS, with
    jitter so that many deliveries to one receiver do not return in lockstep, at most 1 h."""
    delay = settings.webhook_retry_seconds * 2.0 ** (attempt - 1) * random.uniform(0.8, 1.2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return float(min(delay, MAX_RETRY_DELAY))


def record_outcome(session: Session, attempt: Attempt, outcome: Outcome, settings: Settings) -> str:
    """Store what the attempt came to; returns the delivery's status afterwards."""
    now = utcnow()
    values: dict[str, object] = {
        "last_status_code": outcome.status_code,
        "last_error": None if outcome.delivered else (outcome.error or "failed")[:2000],
    }
    if outcome.delivered:
        values.update(status="delivered", finished_at=now)
    elif outcome.retry and attempt.number < settings.webhook_max_attempts:
        delay = retry_delay(settings, attempt.number, outcome.retry_after)
        values.update(next_attempt_at=now + timedelta(seconds=delay), dispatched_at=None)
    else:
        values.update(status="failed", finished_at=now)
    session.execute(
        update(WebhookDelivery)
        .where(
            and_(
                WebhookDelivery.id == attempt.delivery_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.attempts == attempt.number,
            )
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return str(values.get("status", "pending"))
