"""A worker bootstep that runs one pass of some housekeeping periodically in a thread."""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar

from celery import bootsteps

from dfp.queues.dispatch import CeleryDispatcher
from dfp.settings import Settings, get_settings
from dfp.storage.database import Database
from worker.context import open_database

log = logging.getLogger(__name__)


class PeriodicStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Calls `run_pass` in the worker's main process, after `first_delay` and then every
    `period`, until the worker stops; a failed pass is logged and the next one tries again."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}
    thread_name: ClassVar[str]

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def first_delay(self) -> float:
        raise NotImplementedError

    def period(self, settings: Settings) -> float:
        raise NotImplementedError

    def run_pass(self, db: Database, settings: Settings, dispatcher: CeleryDispatcher) -> None:
        raise NotImplementedError

    def start(self, parent: Any) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(parent.app,), name=self.thread_name, daemon=True
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
        delay = self.first_delay()
        while not self._stop.wait(delay):
            delay = self.period(settings)
            try:
                self.run_pass(db, settings, dispatcher)
            except Exception:
                log.exception("%s: pass failed; retrying next period", self.thread_name)
        db.dispose()
