"""The Celery application, configured from the same settings as the API."""

from __future__ import annotations

from celery import Celery
from kombu.entity import Exchange, Queue

from dfp.queues.names import CPU_QUEUE, GPU_QUEUE, WEBHOOK_QUEUE
from dfp.settings import Settings


def create_celery(settings: Settings) -> Celery:
    """Celery for this deployment: JSON only, late acks, one task at a time per process.

    The job rows are the record of every job's state, so there is no result backend; a lost
    worker's run is redelivered (reject_on_worker_lost) or re-sent by the reconciler."""
    if settings.is_embedded_broker:
        settings.broker_dir().mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "broker-control").mkdir(parents=True, exist_ok=True)
    app = Celery("dfp", broker=settings.resolved_broker_url(), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A new pool process imports torch before it reports alive; Celery's default 4 s is
        # too short on a busy machine, and a process that misses it never takes a task.
        worker_proc_alive_timeout=60.0,
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
        task_default_queue=CPU_QUEUE,
        # Each queue on its own exchange and key, so a message can only ever land in one.
        task_queues=tuple(
            Queue(q, Exchange(q), routing_key=q) for q in (CPU_QUEUE, GPU_QUEUE, WEBHOOK_QUEUE)
        ),
        task_create_missing_queues=False,
        broker_transport_options=settings.broker_transport_options(),
        broker_connection_timeout=settings.broker_connect_timeout,
        broker_connection_retry_on_startup=True,
        # An unattended worker waits out a broker outage of any length (retrying at most every
        # 30 s) rather than exiting after Celery's default of 100 attempts.
        broker_connection_max_retries=None,
        # A submission must not hang on a dead broker: the row is committed, the reconciler
        # re-sends what did not go out.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.0,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=not settings.is_embedded_broker,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app
