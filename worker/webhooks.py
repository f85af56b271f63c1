"""Webhook workers: the relay that sends due deliveries to the queue, and one attempt's task body.

Both run only in workers that consume the `webhooks` queue (`dfp worker --queues webhooks`), so
delivering never takes a slot from an experiment, and a slow receiver never delays a run.
"""

from __future__ import annotations

import logging
import random
import uuid
from functools import partial
from typing import ClassVar

from dfp.queues.dispatch import CeleryDispatcher
from dfp.settings import Settings, get_settings
from dfp.storage.database import Database
from dfp.storage.types import utcnow
from dfp.webhooks import outbox
from dfp.webhooks.delivery import post_event
from dfp.webhooks.signing import owner_secret
from worker.context import WorkerContext
from worker.periodic import PeriodicStep

log = logging.getLogger(__name__)


def deliver(ctx: WorkerContext, delivery_id: uuid.UUID) -> None:
    """Claim the next attempt, POST the event (no transaction open meanwhile), record it."""
    with ctx.db.unit_of_work() as uow:
        attempt = outbox.start_attempt(uow.session, delivery_id)
    if attempt is None:
        log.info("webhook %s: nothing to do (delivered, failed, not due or taken)", delivery_id)
        return
    secret = owner_secret(ctx.settings, attempt.owner)
    if secret is None:
        outcome = outbox.Outcome(False, error="the server has no DFP_WEBHOOK_SECRET to sign with")
    else:
        outcome = post_event(
            attempt,
            secret,
            timeout=ctx.settings.webhook_timeout,
            allowed_networks=ctx.settings.webhook_allowed_networks,
        )
    with ctx.db.unit_of_work() as uow:
        status = outbox.record_outcome(uow.session, attempt, outcome, ctx.settings)
    log.info(
        "webhook %s attempt %s: %s (%s)",
        delivery_id,
        attempt.number,
        status,
        outcome.status_code or outcome.error,
    )


def relay(db: Database, dispatcher: CeleryDispatcher) -> list[uuid.UUID]:
    """One pass: send a task for every delivery that is due (after the claim commits)."""
    with db.unit_of_work() as uow:
        sent = outbox.dispatch_due(uow.session, get_settings(), utcnow())
        for delivery_id in sent:
            uow.after_commit(partial(dispatcher.send_webhook, delivery_id))
    return sent


class WebhookRelayStep(PeriodicStep):
    """Polls the outbox every DFP_WEBHOOK_POLL_SECONDS in the worker's main process."""

    thread_name: ClassVar[str] = "dfp-webhook-relay"

    def first_delay(self) -> float:
        return random.uniform(0.1, 0.5)

    def period(self, settings: Settings) -> float:
        return settings.webhook_poll_seconds

    def run_pass(self, db: Database, settings: Settings, dispatcher: CeleryDispatcher) -> None:
        sent = relay(db, dispatcher)
        if sent:
            log.info("webhook relay: sent %s deliveries", len(sent))
