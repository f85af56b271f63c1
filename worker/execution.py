"""Executing one run: claim, run the engine with progress/cancel/checkpoint callbacks, store.

The monitor thread owns all periodic database traffic (heartbeat, throttled progress, the cancel
flag), so the training loop never waits on the database except to store a checkpoint.

Every way a run can stop ends in a stored state: the engine's outcome; `failed` with the reason
(bad spec, time limit, a result over `max_result_bytes`, a result the database refuses); or,
when the worker shuts down, `queued` again for another worker. Claims and the final write ride
out a database outage of about a minute; checkpoint writes skip one instead (the final write
stores what they missed).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from dfp.datasets.materialize import engine_spec
from dfp.experiments import lifecycle
from dfp.experiments.curves import checkpoint_bytes, history_bytes
from dfp.experiments.lifecycle import Lease, ProgressReport
from dfp.storage.database import Database, is_transient
from dfp_engine.datasets.files import DatasetMissingError
from dfp_engine.results import Checkpoint, ErrorInfo, RunResult
from dfp_engine.runner import Progress, environment, run_one
from dfp_engine.spec import ExperimentSpec
from dfp_engine.training import resolve_device
from worker import shutdown
from worker.context import WorkerContext, holder_alive
from worker.fanout import FanOut, FanoutFailedError
from worker.retry import retrying

log = logging.getLogger(__name__)

# Why a run stopped before the engine's end (RunMonitor.stop_reason).
CANCELLED = "cancelled"  # its job was cancelled
LEASE_LOST = "lease_lost"  # another attempt owns it now
SHUTDOWN = "shutdown"  # this worker is shutting down
TOO_LARGE = "too_large"  # its result outgrew max_result_bytes


class RunMonitor:
    """Flushes the latest progress and watches the cancel flag every `interval` s, heartbeats
    at least every `heartbeat` s; stores checkpoints as they come while the result stays under
    `max_bytes`."""

    def __init__(
        self, db: Database, lease: Lease, interval: float, heartbeat: float, max_bytes: int
    ) -> None:
        self.db = db
        self.lease = lease
        self.interval = interval
        self.heartbeat_every = heartbeat
        self.max_bytes = max_bytes
        self.stored_bytes = 0
        self.refused_bytes = 0  # what storing the checkpoint that broke the limit would take
        self.stored_epochs: set[int] = set()
        self.stop_reason: str | None = None
        self._latest: ProgressReport | None = None
        self._written: ProgressReport | None = None
        self._beaten_at = -math.inf
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
        if not self._cancel.is_set() and shutdown.requested():
            self.stop(SHUTDOWN)
        return self._cancel.is_set()

    def stop(self, reason: str) -> None:
        """Ask the engine to stop at its next check; the first reason given is the one kept."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._cancel.set()

    def store_checkpoint(self, checkpoint: Checkpoint) -> None:
        size = checkpoint_bytes(checkpoint)
        if self.stored_bytes + size > self.max_bytes:
            self.refused_bytes = self.stored_bytes + size
            self.stop(TOO_LARGE)
            return
        try:
            with self.db.unit_of_work() as uow:
                stored = lifecycle.store_checkpoint(uow.session, self.lease, checkpoint)
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            # Partial results wait; the final write stores every checkpoint missing by then.
            log.warning(
                "run %s: checkpoint %s not stored yet: %s", self.lease.run_id, checkpoint.epoch, exc
            )
            return
        if not stored:
            self.stop(LEASE_LOST)  # another attempt owns the run: stop working for nothing
            return
        self.stored_bytes += size
        self.stored_epochs.add(checkpoint.epoch)

    def _loop(self) -> None:
        while True:
            self._beat()
            if self._stop.wait(self.interval):
                return

    def _beat(self) -> None:
        latest = self._latest
        progress = latest if latest is not self._written else None
        now = time.monotonic()
        # Progress goes out as soon as there is news; a bare heartbeat only when one is due.
        # Either way the cancel flag is read, so a cancel stops the run within `interval`.
        beat = progress is not None or now - self._beaten_at >= self.heartbeat_every
        try:
            with self.db.unit_of_work() as uow:
                if beat:
                    reply = lifecycle.heartbeat(uow.session, self.lease, progress)
                else:
                    reply = lifecycle.lease_state(uow.session, self.lease)
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and is_transient(exc):
                log.warning("heartbeat of run %s failed; retrying: %s", self.lease.run_id, exc)
            else:
                log.exception("heartbeat of run %s failed; retrying", self.lease.run_id)
            return
        self._written = latest
        if beat:
            self._beaten_at = now
        if not reply.lease_valid:
            self.stop(LEASE_LOST)
        elif reply.cancel_requested:
            self.stop(CANCELLED)


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


def execute_experiment_run(ctx: WorkerContext, lease: Lease) -> None:
    """Train and analyse one leased run of an experiment and store its outcome."""
    try:
        spec: ExperimentSpec | None = ExperimentSpec.model_validate(lease.spec)
    except ValidationError as exc:  # stored by an older version whose specs this one refuses
        spec = None
        result = _failed(lease, "invalid_spec", str(exc.errors()[0]["msg"]))
    if spec is not None:
        result, monitor = _run(ctx, lease, spec)
        if monitor.stop_reason == SHUTDOWN and result.status == "cancelled":
            release(ctx, lease, "its worker shut down")
            return
        result = _within_size_limit(ctx, lease, result, monitor)
    environment = _environment(spec.run_specs[lease.index], ctx) if spec else None
    stored = _store(ctx, lease, result, environment, spec.summary_layers() if spec else None)
    log.info(
        "run %s: %s%s", lease.run_id, result.status, "" if stored else " (lease lost; discarded)"
    )


def claim(ctx: WorkerContext, run_id: int) -> Lease | None:
    with ctx.db.unit_of_work() as uow:
        return lifecycle.claim_run(
            uow.session,
            run_id,
            worker=ctx.worker_name,
            settings=ctx.settings,
            holder_alive=holder_alive,
        )


def _run(ctx: WorkerContext, lease: Lease, spec: ExperimentSpec) -> tuple[RunResult, RunMonitor]:
    """The engine's result for the leased run; its failures become failed results."""
    settings = ctx.settings
    monitor = RunMonitor(
        ctx.db,
        lease,
        min(settings.progress_seconds, settings.heartbeat_seconds),
        settings.heartbeat_seconds,
        settings.max_result_bytes,
    )
    with monitor:
        try:
            with engine_spec(ctx.db, settings, spec) as readable:
                result = run_one(
                    readable,
                    lease.index,
                    on_progress=lambda p: monitor.report(_progress(p)),
                    should_cancel=monitor.should_cancel,
                    on_checkpoint=lambda _index, c: monitor.store_checkpoint(c),
                    exact_sums=FanOut(ctx, lease, monitor.should_cancel),
                )
        except DatasetMissingError as exc:  # where the API could not look (another host)
            result = _failed(lease, "dataset_missing", str(exc))
        except FanoutFailedError as exc:
            result = _failed(lease, "fanout_failed", str(exc))
        except ValueError as exc:  # the engine's word for bad specs and unreadable data
            result = _failed(lease, "invalid_spec", str(exc))
        except SoftTimeLimitExceeded:
            limit = settings.job_soft_time_limit
            result = _failed(lease, "time_limit", f"stopped after the time limit of {limit} s")
        except SQLAlchemyError as exc:  # a checkpoint the database refused (not an outage)
            log.exception("run %s: the database refused a checkpoint", lease.run_id)
            reason = f"a checkpoint could not be stored: {_reason(exc)}"
            result = _failed(lease, "storage_error", reason)
        except Exception as exc:
            log.exception("run %s: the engine raised", lease.run_id)
            result = _failed(lease, "internal_error", f"{type(exc).__name__}: {exc}")
    return result, monitor


def _within_size_limit(
    ctx: WorkerContext, lease: Lease, result: RunResult, monitor: RunMonitor
) -> RunResult:
    """The result, or a failure naming the limit when it would store more than allowed.

    Checkpoints already stored stay as partial results; nothing more is written."""
    unstored = [c for c in result.checkpoints if c.epoch not in monitor.stored_epochs]
    size = (
        monitor.stored_bytes
        + sum(checkpoint_bytes(c) for c in unstored)
        + history_bytes(result.history)
    )
    limit = ctx.settings.max_result_bytes
    if monitor.stop_reason != TOO_LARGE and size <= limit:
        return result
    epoch = result.checkpoints[-1].epoch if result.checkpoints else 0
    return _failed(
        lease,
        "result_too_large",
        f"the result outgrew max_result_bytes = {limit} (DFP_MAX_RESULT_BYTES): "
        f"{max(size, monitor.refused_bytes)} bytes of curves and history by epoch {epoch}; "
        "analyse fewer checkpoints, layers or δ values, or raise the limit (checkpoints "
        "stored until then are kept)",
    )


def _store(
    ctx: WorkerContext,
    lease: Lease,
    result: RunResult,
    environment: dict[str, Any] | None,
    summary_layers: list[str] | None,
) -> bool:
    """Write the outcome, riding out an outage; a write the database refuses fails the run."""
    what = f"run {lease.run_id}"
    try:
        return retrying(lambda: _finish(ctx, lease, result, environment, summary_layers), what=what)
    except SQLAlchemyError as exc:
        if is_transient(exc):
            raise  # still unreachable: the reconciler requeues the run once it is back
        log.exception("%s: the database refused the result", what)
        reason = f"the result could not be stored: {_reason(exc)}"
        failed = _failed(lease, "storage_error", reason)
        return retrying(lambda: _finish(ctx, lease, failed, environment, None), what=what)


def _finish(
    ctx: WorkerContext,
    lease: Lease,
    result: RunResult,
    environment: dict[str, Any] | None,
    summary_layers: list[str] | None,
) -> bool:
    with ctx.db.unit_of_work() as uow:
        return lifecycle.finish_run(uow.session, lease, result, environment, summary_layers)


def release(ctx: WorkerContext, lease: Lease, reason: str) -> None:
    """Requeue the run for another worker now (the task message goes out after the commit)."""
    try:
        with ctx.db.unit_of_work() as uow:
            resend = lifecycle.release_run(uow.session, lease, reason)
            if resend is not None:
                uow.after_commit(lambda: ctx.dispatcher.send_run(resend.run_id, resend.queue))
    except Exception:
        log.exception("run %s: could not hand it back; the reconciler will", lease.run_id)
        return
    log.info("run %s: attempt %s handed back (%s)", lease.run_id, lease.attempt, reason)


def _reason(exc: SQLAlchemyError) -> str:
    """The database's own message, first line (without the statement SQLAlchemy appends)."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


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
