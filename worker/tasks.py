"""The tasks: execute one run of an experiment; compute one row block of a fanned-out analysis;
attempt one webhook delivery."""

from __future__ import annotations

import logging
import uuid

from celery import Celery, Task

from dfp.queues.names import DELIVER_WEBHOOK, EXECUTE_BLOCK, EXECUTE_RUN

log = logging.getLogger(__name__)


def register_tasks(app: Celery) -> None:
    @app.task(name=EXECUTE_RUN, bind=True, acks_late=True, reject_on_worker_lost=True)
    def execute_run(task: Task, run_id: int) -> None:  # type: ignore[type-arg]
        """Claim the run, train and analyse it with the engine, store the outcome."""
        from worker.context import worker_context
        from worker.runs import execute

        execute(worker_context(task.app), run_id)

    @app.task(name=EXECUTE_BLOCK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def execute_block(task: Task, block_id: int) -> None:  # type: ignore[type-arg]
        """Claim one row block of a fanned-out analysis, compute it, store its partial sums."""
        from worker.blocks import execute_block as run_block
        from worker.context import worker_context

        run_block(worker_context(task.app), block_id)

    @app.task(name=DELIVER_WEBHOOK, bind=True, acks_late=False)
    def deliver_webhook(task: Task, delivery_id: str) -> None:  # type: ignore[type-arg]
        """Attempt one webhook delivery and record its outcome (retries are scheduled, not
        raised: the outbox row says when the next attempt is due)."""
        from worker.context import worker_context
        from worker.webhooks import deliver

        deliver(worker_context(task.app), uuid.UUID(delivery_id))
