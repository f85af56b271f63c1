"""The job queue adapter: queue and task names, the Celery app, the dispatcher and its protocols.

Services depend on the protocols (`dfp.queues.protocols`); the API and the workers build the
Celery app (`dfp.queues.celery_app`) and the dispatcher on it (`dfp.queues.dispatch`). Importing
this package, or the names below, does not import Celery.
"""

from dfp.queues.names import (
    CPU_QUEUE,
    DELIVER_WEBHOOK,
    EXECUTE_BLOCK,
    EXECUTE_RUN,
    GPU_QUEUE,
    WEBHOOK_QUEUE,
)

__all__ = [
    "CPU_QUEUE",
    "DELIVER_WEBHOOK",
    "EXECUTE_BLOCK",
    "EXECUTE_RUN",
    "GPU_QUEUE",
    "WEBHOOK_QUEUE",
]
