"""The reconciler thread every worker starts: a periodic pass of dfp.experiments.reconciler."""

from __future__ import annotations

import logging
import random
from typing import ClassVar

from dfp.experiments.reconciler import reconcile
from dfp.queues.dispatch import CeleryDispatcher
from dfp.settings import Settings
from dfp.storage.database import Database
from worker.context import holder_alive
from worker.periodic import PeriodicStep

log = logging.getLogger(__name__)


class ReconcilerStep(PeriodicStep):
    """Runs the reconciler in the worker's main process while the worker runs."""

    thread_name: ClassVar[str] = "dfp-reconciler"

    def first_delay(self) -> float:
        # A first pass soon after start picks up what was lost while no worker ran.
        return random.uniform(0.5, 2.0)

    def period(self, settings: Settings) -> float:
        # Jitter keeps several workers from reconciling in lockstep.
        return settings.reconcile_seconds * random.uniform(0.8, 1.2)

    def run_pass(self, db: Database, settings: Settings, dispatcher: CeleryDispatcher) -> None:
        report = reconcile(db, settings, dispatcher, dispatcher, holder_alive)
        if report.requeued or report.resent:
            log.info("reconciler: requeued %s, resent %s", report.requeued, report.resent)
