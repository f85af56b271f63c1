"""The run task's body: claim the run, then execute it by kind (experiment run or analysis)."""

from __future__ import annotations

import logging

from worker.analysis import execute_analysis
from worker.context import WorkerContext
from worker.execution import claim, execute_experiment_run, release
from worker.retry import retrying

log = logging.getLogger(__name__)


def execute(ctx: WorkerContext, run_id: int) -> None:
    """The whole task body; every failure ends as a stored run status, never a lost job."""
    lease = retrying(lambda: claim(ctx, run_id), what=f"claim of run {run_id}")
    if lease is None:
        log.info("run %s: nothing to do (already taken, finished or cancelled)", run_id)
        return
    log.info("run %s: attempt %s started", run_id, lease.attempt)
    try:
        if lease.kind == "analysis":
            execute_analysis(ctx, lease)
        else:
            execute_experiment_run(ctx, lease)
    except (SystemExit, KeyboardInterrupt):
        # SIGTERM to this pool process: hand the run back on the way out (one try; if the
        # database is away too, the reconciler finds the run by its missing heartbeat).
        release(ctx, lease, "its worker was stopped")
        raise
