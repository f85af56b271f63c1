"""The worker's Celery app (`dfp worker`, or `celery -A worker.main worker`)."""

from __future__ import annotations

from celery import Celery

from dfp.queues.celery_app import create_celery
from dfp.settings import Settings, get_settings
from worker import shutdown  # noqa: F401 - its flag must exist before the pool forks
from worker.reconciler import ReconcilerStep
from worker.tasks import register_tasks


def create_worker_app(settings: Settings) -> Celery:
    """Celery with the run task registered and the reconciler started with each worker."""
    app = create_celery(settings)
    register_tasks(app)
    app.steps["worker"].add(ReconcilerStep)
    return app


celery_app = create_worker_app(get_settings())
