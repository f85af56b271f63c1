"""The reconciler: finds runs that lost their worker or their message and sets them going again.

Safe to run in every worker at once: each change is a conditional update under the job's row
lock, so of several reconcilers racing for one run exactly one acts, and only it re-sends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

from dfp.experiments import lifecycle, stale_runs
from dfp.queues.protocols import QueueProbe, RunDispatcher
from dfp.settings import Settings
from dfp.storage.database import Database
from dfp.storage.types import utcnow

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    requeued: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)


def reconcile(
    db: Database,
    settings: Settings,
    dispatcher: RunDispatcher,
    probe: QueueProbe,
    holder_alive: lifecycle.HolderCheck | None = None,
) -> ReconcileReport:
    """One pass: requeue runs whose worker died, re-send queued runs whose message is missing.

    `holder_alive` lets a worker recognise, at once, runs held by processes of its own host
    that are gone; runs held elsewhere wait for their heartbeat to go stale."""
    report = ReconcileReport()
    now = utcnow()
    with db.unit_of_work() as uow:
        lost = stale_runs.lost_runs(uow.session, settings, now, holder_alive)
    for run_id in lost:
        with db.unit_of_work() as uow:
            resend = lifecycle.recover_lost_run(uow.session, run_id, settings, holder_alive)
            if resend is not None:
                uow.after_commit(partial(dispatcher.send_run, resend.run_id, resend.queue))
                report.requeued.append(run_id)
                log.warning("run %s lost its worker; requeued", run_id)

    with db.unit_of_work() as uow:
        queued = stale_runs.queued_counts(uow.session)
    for queue, count in queued.items():
        try:
            depth = probe.depth(queue)
        except Exception as exc:  # the broker is down: nothing can be re-sent now anyway
            log.warning("cannot read the depth of queue %s: %s", queue, exc)
            continue
        # Queued rows without a message: lost sends (broker outage) or a lost broker.
        missing = count - depth
        if missing <= 0:
            continue
        with db.unit_of_work() as uow:
            candidates = stale_runs.unsent_candidates(uow.session, queue, settings, now, missing)
        for run_id in candidates:
            with db.unit_of_work() as uow:
                resend = lifecycle.resend_queued_run(uow.session, run_id, settings)
                if resend is not None:
                    uow.after_commit(partial(dispatcher.send_run, resend.run_id, resend.queue))
                    report.resent.append(run_id)
                    log.warning("run %s was queued without a message; sent again", run_id)
    return report
