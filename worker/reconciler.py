"""The reconciler thread every worker starts: a periodic pass of dfp.experiments.reconciler."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any, ClassVar

from celery import bootsteps

from dfp.experiments.reconciler import reconcile
from dfp.settings import get_settings
from worker.context import holder_alive, open_database
from worker.dispatch import CeleryDispatcher

log = logging.getLogger(__name__)


class ReconcilerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the reconciler in the worker's main process while the worker runs."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(parent.app,), name="dfp-reconciler", daemon=True
        )
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self, app: Any) -> None:
        settings = get_settings()
        db = open_database(settings)
        dispatcher = CeleryDispatcher(app)
        # A first pass soon after start picks up what was lost while no worker ran; jitter keeps
        # several workers from reconciling in lockstep.
        delay = random.uniform(0.5, 2.0)
        while not self._stop.wait(delay):
            delay = settings.reconcile_seconds * random.uniform(0.8, 1.2)
            try:
                report = reconcile(db, settings, dispatcher, dispatcher, holder_alive)
                if report.requeued or report.resent:
                    log.info("reconciler: requeued %s, resent %s", report.requeued, report.resent)
            except Exception:
                log.exception("reconciler pass failed; retrying next period")
        db.dispose()
