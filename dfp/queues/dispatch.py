"""Sending run tasks and reading queue depths through Celery's broker connection."""

from __future__ import annotations

import uuid

from celery import Celery
from kombu.exceptions import ChannelError

from dfp.queues.names import DELIVER_WEBHOOK, EXECUTE_BLOCK, EXECUTE_RUN, WEBHOOK_QUEUE


class CeleryDispatcher:
    """RunDispatcher and QueueProbe on Celery: one `dfp.execute_run(run_id)` message per run."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send_run(self, run_id: int, queue: str) -> None:
        self.app.send_task(EXECUTE_RUN, args=[run_id], queue=queue, routing_key=queue)

    def send_block(self, block_id: int, queue: str) -> None:
        """One row block of a fanned-out analysis, for any worker of the run's queue."""
        self.app.send_task(EXECUTE_BLOCK, args=[block_id], queue=queue, routing_key=queue)

    def send_webhook(self, delivery_id: uuid.UUID) -> None:
        """One attempt at a webhook delivery, on the webhook workers' own queue."""
        self.app.send_task(
            DELIVER_WEBHOOK, args=[str(delivery_id)], queue=WEBHOOK_QUEUE, routing_key=WEBHOOK_QUEUE
        )

    def depth(self, queue: str) -> int:
        """Messages waiting in `queue` (not counting ones a worker has taken)."""
        with self.app.connection_for_read() as connection:
            channel = connection.default_channel
            try:
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            except ChannelError:
                return 0  # never declared: nothing waiting

    def ping(self) -> None:
        """Raise unless the broker accepts a connection now."""
        with self.app.connection_for_read() as connection:
            connection.ensure_connection(
                max_retries=1, timeout=self.app.conf.broker_connection_timeout
            )
            connection.default_channel  # noqa: B018 - opening a channel proves the broker answers
