"""Executing one run: claim, run the engine with progress/cancel/checkpoint callbacks, store.

The monitor thread owns all periodic database traffic (heartbeat, throttled progress, the cancel
flag), so the training loop never waits on the database except to store a checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from dfp.experiments import lifecycle
from dfp.experiments.lifecycle import Lease, ProgressReport
from dfp.storage.database import Database
from dfp_engine.results import Checkpoint, ErrorInfo, RunResult
from dfp_engine.runner import Progress, environment, run_one, summarize
from dfp_engine.spec import ExperimentSpec
from dfp_engine.training import resolve_device
from worker.context import WorkerContext

log = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds between attempts to store a finished run while the database is unreachable.
FINISH_RETRY = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


class RunMonitor:
    """Heartbeats, flushes the latest progress and watches the cancel flag every `interval` s."""

    def __init__(self, db: Database, lease: Lease, interval: float) -> None:
        self.db = db
        self.lease = lease
        self.interval = interval
        self._latest: ProgressReport | None = None
        self._written: ProgressReport | None = None
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dfp-run-monitor", daemon=True)

    def __enter__(self) -> RunMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, 2 * self.interval))

    def report(self, progress: ProgressReport) -> None:
        self._latest = progress  # one reference swap: no lock needed

    def should_cancel(self) -> bool:
        return self._cancel.is_set()

    def store_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self.db.unit_of_work() as uow:
            if not lifecycle.store_checkpoint(uow.session, self.lease, checkpoint):
                self._cancel.set()  # the lease is gone: stop working for nothing

    def _loop(self) -> None:
        while True:
            self._beat()
            if self._stop.wait(self.interval):
                return

    def _beat(self) -> None:
        latest = self._latest
        progress = latest if latest is not self._written else None
        try:
            with self.db.unit_of_work() as uow:
                reply = lifecycle.heartbeat(uow.session, self.lease, progress)
        except Exception:
            log.exception("heartbeat of run %s failed; retrying", self.lease.run_id)
            return
        self._written = latest
        if not reply.lease_valid or reply.cancel_requested:
            self._cancel.set()


def _progress(report: Progress) -> ProgressReport:
    # The engine's fraction covers a whole experiment; a run's task reports its own share.
    fraction = min(1.0, report.epoch / report.epochs) if report.epochs else 0.0
    return ProgressReport(
        epoch=report.epoch,
        epochs=report.epochs,
        step=report.step,
        train_loss=report.train_loss,
        fraction=fraction,
        message=report.message,
    )


def execute(ctx: WorkerContext, run_id: int) -> None:
    """The whole task body; every failure ends as a stored run status, never a lost job."""
    with ctx.db.unit_of_work() as uow:
        lease = lifecycle.claim_run(
            uow.session, run_id, worker=ctx.worker_name, settings=ctx.settings
        )
    if lease is None:
        log.info("run %s: nothing to do (already taken, finished or cancelled)", run_id)
        return
    log.info("run %s: attempt %s started", run_id, lease.attempt)
    try:
        spec: ExperimentSpec | None = ExperimentSpec.model_validate(lease.spec)
    except ValidationError as exc:  # stored by an older version whose specs this one refuses
        spec = None
        result = _failed(lease, "invalid_spec", str(exc.errors()[0]["msg"]))
    if spec is not None:
        result = _run(ctx, lease, spec)
    environment = _environment(spec.run_spec(lease.sweep_value), ctx) if spec else None
    stored = _retrying(
        lambda: _finish(ctx, lease, result, environment, _summarizer(spec)),
        what=f"run {run_id}",
    )
    log.info("run %s: %s%s", run_id, result.status, "" if stored else " (lease lost; discarded)")


def _run(ctx: WorkerContext, lease: Lease, spec: ExperimentSpec) -> RunResult:
    """The engine's result for the leased run; its failures become failed results."""
    with RunMonitor(ctx.db, lease, ctx.settings.heartbeat_seconds) as monitor:
        try:
            return run_one(
                spec,
                lease.index,
                on_progress=lambda p: monitor.report(_progress(p)),
                should_cancel=monitor.should_cancel,
                on_checkpoint=lambda _index, checkpoint: monitor.store_checkpoint(checkpoint),
            )
        except ValueError as exc:  # the engine's word for bad specs and missing data
            return _failed(lease, "invalid_spec", str(exc))
        except SoftTimeLimitExceeded:
            limit = ctx.settings.job_soft_time_limit
            return _failed(lease, "time_limit", f"stopped after the time limit of {limit} s")
        except Exception as exc:
            log.exception("run %s: the engine raised", lease.run_id)
            return _failed(lease, "internal_error", f"{type(exc).__name__}: {exc}")


def _summarizer(spec: ExperimentSpec | None) -> lifecycle.Summarizer | None:
    if spec is None:
        return None
    return lambda runs: summarize(spec, runs)


def _finish(
    ctx: WorkerContext,
    lease: Lease,
    result: RunResult,
    environment: dict[str, Any] | None,
    summarizer: lifecycle.Summarizer | None,
) -> bool:
    with ctx.db.unit_of_work() as uow:
        return lifecycle.finish_run(uow.session, lease, result, environment, summarizer)


def _retrying(write: Callable[[], T], *, what: str, delays: tuple[float, ...] = FINISH_RETRY) -> T:
    """A final write survives a short database outage; the work it records took long."""
    for delay in delays:
        try:
            return write()
        except OperationalError as exc:
            log.warning("%s: database unavailable (%s); retrying in %s s", what, exc.orig, delay)
            time.sleep(delay)
    return write()


def _failed(lease: Lease, code: str, message: str) -> RunResult:
    return RunResult(
        index=lease.index,
        sweep_value=lease.sweep_value,
        status="failed",
        error=ErrorInfo(code=code, message=message),
    )


def _environment(spec: ExperimentSpec, ctx: WorkerContext) -> dict[str, Any]:
    """The engine's reproducibility record for this run, plus the worker that ran it."""
    device = str(resolve_device(spec.training.device))
    record: dict[str, Any] = environment(spec, device).model_dump()
    record["worker_host"] = ctx.worker_name
    return record
