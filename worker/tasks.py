"""The one task: execute one run of an experiment."""

from __future__ import annotations

import logging

from celery import Celery, Task

from worker.app import EXECUTE_RUN

log = logging.getLogger(__name__)


def register_tasks(app: Celery) -> None:
    @app.task(name=EXECUTE_RUN, bind=True, acks_late=True, reject_on_worker_lost=True)
    def execute_run(task: Task, run_id: int) -> None:  # type: ignore[type-arg]
        """Claim the run, train and analyse it with the engine, store the outcome."""
        from worker.context import worker_context
        from worker.execution import execute

        execute(worker_context(task.app), run_id)
