"""The life of a run as workers and the reconciler drive it: claim, heartbeat, store, finish.

Every write a worker makes is conditional on its lease: the run is still `running` and its
`attempts` still equals the number the claim produced. A duplicate delivery, a worker that was
presumed dead and replaced, or a run cancelled meanwhile therefore changes nothing.

A running run is lost when its heartbeat is older than `heartbeat_timeout`, or at once when a
process on the same host can tell that the process holding it is gone (`HolderCheck`): a pool
process killed by the OOM killer is taken over by its redelivered task, not minutes later.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from dfp.experiments import repository
from dfp.experiments.curves import encode_layer, encode_table
from dfp.experiments.summary import job_summary
from dfp.settings import Settings
from dfp.storage.models import Job, LayerCurve, Run, RunCheckpoint
from dfp.storage.types import json_safe, utcnow
from dfp.webhooks import outbox
from dfp_engine.results import Checkpoint, RunResult
from dfp_engine.status import TERMINAL_STATUSES, UNFINISHED_STATUSES, Status, aggregate_status

# Answers False only when sure that the named worker process (as a worker names itself in
# `Run.worker`) no longer exists.
HolderCheck = Callable[[str], bool]


@dataclass(frozen=True)
class Lease:
    """A worker's claim on one run: valid while the run is running with this attempt number."""

    run_id: int
    job_id: uuid.UUID
    attempt: int
    queue: str
    index: int
    sweep_value: Any
    spec: dict[str, Any]
    kind: str = "experiment"  # the job's kind: what `spec` is, and so how to execute it

    def conditions(self) -> tuple[Any, ...]:
        return (Run.id == self.run_id, Run.attempts == self.attempt, Run.status == "running")


@dataclass(frozen=True)
class ProgressReport:
    epoch: int | None
    epochs: int | None
    step: int | None
    train_loss: float | None
    fraction: float
    message: str | None


@dataclass(frozen=True)
class HeartbeatReply:
    lease_valid: bool
    cancel_requested: bool


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


# -------------------------------------------------------------------------- claim


def claim_run(
    session: Session,
    run_id: int,
    *,
    worker: str,
    settings: Settings,
    holder_alive: HolderCheck | None = None,
) -> Lease | None:
    """queued -> running (or take over a running run whose worker is lost).

    Returns None when there is nothing to do: the run is gone, terminal, or held by a live
    worker (a redelivered duplicate). A run over its attempt cap is failed instead."""
    run = session.get(Run, run_id)
    if run is None or run.status in TERMINAL_STATUSES:
        return None
    seen_attempts, job_id = run.attempts, run.job_id
    holder = run.worker if run.status == "running" else None
    now = utcnow()
    stale = now - timedelta(seconds=settings.heartbeat_timeout)
    if not repository.lock_job(session, job_id, Job.status.in_(UNFINISHED_STATUSES)):
        return None
    job = session.get(Job, job_id)
    if job is None:
        return None
    lost = _lost(holder, stale, holder_alive)
    claimable = or_(Run.status == "queued", and_(Run.status == "running", lost))
    base = (Run.id == run_id, Run.attempts == seen_attempts, claimable)
    if job.cancel_requested or seen_attempts >= settings.max_attempts:
        code, message = (
            ("cancelled", "cancelled before it started")
            if job.cancel_requested
            else _attempts_exhausted(seen_attempts)
        )
        status = Status.CANCELLED if job.cancel_requested else Status.FAILED
        end_run(session, job_id, base, status, code, message, now)
        return None
    claimed = session.execute(
        update(Run)
        .where(*base)
        .values(
            status="running",
            attempts=seen_attempts + 1,
            started_at=now,
            heartbeat_at=now,
            worker=worker[:255],
            enqueues=0,  # sends since this claim: counts toward `never_started` only
            progress_fraction=0.0,
            progress_message="starting",
            progress_updated_at=now,
            error_code=None,
            error_message=None,
        )
    )
    if _rowcount(claimed) != 1:
        return None
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="running", started_at=now)
    )
    # A new attempt starts from scratch; partial results of an earlier one would mix in.
    repository.delete_checkpoints(session, run_id)
    return Lease(
        run_id=run_id,
        job_id=job_id,
        attempt=seen_attempts + 1,
        queue=run.queue,
        index=run.index,
        sweep_value=run.sweep_value,
        spec=job.spec,
        kind=job.kind,
    )


def _attempts_exhausted(attempts: int) -> tuple[str, str]:
    return (
        "attempts_exhausted",
        f"gave up after {attempts} attempts: the worker running it stopped each time "
        "(killed, out of memory, shut down or lost)",
    )


def _lost(holder: str | None, stale: datetime, holder_alive: HolderCheck | None) -> Any:
    """SQL condition: a running run is lost when its heartbeat is stale, or when `holder`
    (the worker that held it when we looked) is known to be gone and still holds it."""
    if holder is not None and holder_alive is not None and not holder_alive(holder):
        return or_(Run.heartbeat_at < stale, Run.worker == holder)
    return Run.heartbeat_at < stale


# ----------------------------------------------------------------- while running


def heartbeat(
    session: Session, lease: Lease, progress: ProgressReport | None = None
) -> HeartbeatReply:
    """Record that the worker is alive (and its latest progress); report cancel requests."""
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now}
    if progress is not None:
        values.update(
            progress_epoch=progress.epoch,
            progress_epochs=progress.epochs,
            progress_step=progress.step,
            progress_train_loss=_finite(progress.train_loss),
            progress_fraction=min(1.0, max(0.0, progress.fraction)),
            progress_message=(progress.message or "")[:500] or None,
            progress_updated_at=now,
        )
    valid = _rowcount(session.execute(update(Run).where(*lease.conditions()).values(**values)))
    cancel = session.scalar(select(Job.cancel_requested).where(Job.id == lease.job_id))
    return HeartbeatReply(lease_valid=valid == 1, cancel_requested=bool(cancel))


def lease_state(session: Session, lease: Lease) -> HeartbeatReply:
    """Whether the lease still holds and the job's cancel flag, without writing anything."""
    row = session.execute(
        select(Run.id, Job.cancel_requested)
        .join(Job, Job.id == Run.job_id)
        .where(*lease.conditions())
    ).one_or_none()
    if row is None:
        return HeartbeatReply(lease_valid=False, cancel_requested=False)
    return HeartbeatReply(lease_valid=True, cancel_requested=bool(row.cancel_requested))


def store_checkpoint(session: Session, lease: Lease, checkpoint: Checkpoint) -> bool:
    """Store one analysed checkpoint as soon as it exists (partial results while running)."""
    touched = session.execute(update(Run).where(*lease.conditions()).values(heartbeat_at=utcnow()))
    if _rowcount(touched) != 1:
        return False
    repository.delete_checkpoints(session, lease.run_id, [checkpoint.epoch])
    _insert_checkpoints(session, lease.run_id, [checkpoint])
    return True


def _insert_checkpoints(session: Session, run_id: int, checkpoints: Iterable[Checkpoint]) -> None:
    for checkpoint in checkpoints:
        row = RunCheckpoint(run_id=run_id, epoch=checkpoint.epoch, step=checkpoint.step)
        session.add(row)
        session.flush()
        session.add_all(
            LayerCurve(checkpoint_id=row.id, position=position, **encode_layer(layer))
            for position, layer in enumerate(checkpoint.layers)
        )
    session.flush()


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# ------------------------------------------------------------------------- finish


# RunResult fields with columns of their own (or rows of their own: checkpoints).
RUN_COLUMNS = frozenset(
    {
        "index", "sweep_value", "status", "error", "steps_to_target", "epochs_to_target",
        "n_train", "n_test", "n_analysis", "layer_names", "history", "checkpoints",
        "elapsed_seconds", "analysis_seconds",
    }
)  # fmt: skip


def finish_run(
    session: Session,
    lease: Lease,
    result: RunResult,
    environment: dict[str, Any] | None,
    summary_layers: Sequence[str] | None = None,
) -> bool:
    """Write a run's outcome and every checkpoint not stored yet, then update the job.

    With `summary_layers` (each run's summary layer) the sweep summary is refreshed from what
    the finished runs stored. False when the lease was lost (the result is discarded: another
    attempt owns it)."""
    if not repository.lock_job(session, lease.job_id):
        return False
    now = utcnow()
    error = result.error
    values: dict[str, Any] = {"progress_fraction": 1.0} if result.status == "succeeded" else {}
    history, history_fields = encode_table([point.model_dump() for point in result.history])
    finished = session.execute(
        update(Run)
        .where(*lease.conditions())
        .values(
            **values,
            status=result.status,
            finished_at=now,
            heartbeat_at=now,
            error_code=error.code if error else None,
            error_message=error.message if error else None,
            steps_to_target=result.steps_to_target,
            epochs_to_target=result.epochs_to_target,
            n_train=result.n_train,
            n_test=result.n_test,
            n_analysis=result.n_analysis,
            layer_names=list(result.layer_names),
            history=history,
            history_fields=history_fields,
            environment=json_safe(environment) if environment is not None else None,
            details=json_safe(result.model_dump(mode="json", exclude=set(RUN_COLUMNS))) or None,
            elapsed_seconds=result.elapsed_seconds,
            analysis_seconds=result.analysis_seconds,
            progress_message=result.status,
            progress_updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(finished) != 1:
        return False
    # Checkpoints stored during the run came from this attempt (the claim cleared older ones).
    stored = repository.stored_epochs(session, lease.run_id)
    _insert_checkpoints(
        session, lease.run_id, (c for c in result.checkpoints if c.epoch not in stored)
    )
    if summary_layers is not None:
        rows = job_summary(session, lease.job_id, summary_layers)
        session.execute(
            update(Job)
            .where(Job.id == lease.job_id)
            .values(summary=json_safe([row.model_dump(mode="json") for row in rows]))
        )
    finalize_job(session, lease.job_id)
    return True


def release_run(session: Session, lease: Lease, reason: str) -> Resend | None:
    """Hand a running run back to the queue because its worker is shutting down.

    Another worker starts it again at once instead of after `heartbeat_timeout`. The attempt
    counts toward `max_attempts`, so a run that every worker gives up on still ends. A run
    whose job is being cancelled ends `cancelled` here, as its worker would have ended it."""
    if not repository.lock_job(session, lease.job_id):
        return None
    now = utcnow()
    if session.scalar(select(Job.cancel_requested).where(Job.id == lease.job_id)):
        message = "cancelled while its worker was shutting down"
        end_run(
            session, lease.job_id, lease.conditions(), Status.CANCELLED, "cancelled", message, now
        )
        return None
    message = f"requeued after attempt {lease.attempt}: {reason}"
    return requeue_run(session, lease.run_id, lease.queue, lease.conditions(), message, now)


def end_run(
    session: Session,
    job_id: uuid.UUID,
    conditions: Sequence[Any],
    status: Status,
    code: str,
    message: str,
    now: datetime,
) -> bool:
    """End the run that `conditions` still select as `status`, then bring its job in line.

    False when the run had moved on meanwhile (another worker or reconciler acted first)."""
    ended = session.execute(
        update(Run)
        .where(*conditions)
        .values(status=status.value, finished_at=now, error_code=code, error_message=message)
    )
    if not _rowcount(ended):
        return False
    finalize_job(session, job_id)
    return True


def requeue_run(
    session: Session,
    run_id: int,
    queue: str,
    conditions: Sequence[Any],
    message: str,
    now: datetime,
) -> Resend | None:
    """Put the run that `conditions` still select back in the queue; the message to re-send."""
    requeued = session.execute(
        update(Run)
        .where(*conditions)
        .values(
            status=Status.QUEUED.value,
            enqueued_at=now,
            enqueues=Run.enqueues + 1,
            progress_message=message,
            progress_updated_at=now,
        )
    )
    return Resend(run_id, queue) if _rowcount(requeued) else None


def finalize_job(session: Session, job_id: uuid.UUID) -> Status:
    """Bring the job row in line with its runs; when all are terminal, the job is too."""
    runs = repository.runs_of(session, job_id)
    status = aggregate_status([run.status for run in runs])
    values: dict[str, Any] = {"status": status.value, "updated_at": utcnow()}
    if status in TERMINAL_STATUSES:
        values["finished_at"] = utcnow()
        culprit = next((run for run in runs if run.status == status != Status.SUCCEEDED), None)
        if culprit is not None:
            values["error_code"] = culprit.error_code or status
            values["error_message"] = f"run {culprit.index}: {culprit.error_message or status}"
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(UNFINISHED_STATUSES))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if status in TERMINAL_STATUSES and _rowcount(changed) == 1:
        # Exactly once per job: this transaction made it terminal (under the job's row lock).
        outbox.record_terminal_event(session, job_id)
    return status


# ---------------------------------------------------------------------- reconcile


@dataclass(frozen=True)
class Resend:
    run_id: int
    queue: str


def recover_lost_run(
    session: Session, run_id: int, settings: Settings, holder_alive: HolderCheck | None = None
) -> Resend | None:
    """Requeue a run whose worker died (or fail it past the attempt cap, or end it if cancelled)."""
    run = session.get(Run, run_id)
    if run is None or run.status != "running":
        return None
    now = utcnow()
    stale = now - timedelta(seconds=settings.heartbeat_timeout)
    if not repository.lock_job(session, run.job_id):
        return None
    cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == run.job_id)))
    still_lost = (
        Run.id == run_id,
        Run.status == "running",
        Run.attempts == run.attempts,
        _lost(run.worker, stale, holder_alive),
    )
    if cancel or run.attempts >= settings.max_attempts:
        code, message = (
            ("cancelled", "cancelled; its worker stopped before it could stop the run")
            if cancel
            else _attempts_exhausted(run.attempts)
        )
        status = Status.CANCELLED if cancel else Status.FAILED
        end_run(session, run.job_id, still_lost, status, code, message, now)
        return None
    message = f"requeued after attempt {run.attempts}: its worker stopped"
    return requeue_run(session, run_id, run.queue, still_lost, message, now)


def resend_queued_run(session: Session, run_id: int, settings: Settings) -> Resend | None:
    """Send a queued run's task again (its message was lost), or fail it past the cap."""
    run = session.get(Run, run_id)
    if run is None or run.status != "queued":
        return None
    if not repository.lock_job(session, run.job_id):
        return None
    now = utcnow()
    same = (Run.id == run_id, Run.status == "queued", Run.enqueues == run.enqueues)
    if run.enqueues > settings.max_attempts:
        message = f"sent {run.enqueues} times to queue '{run.queue}' but no worker took it"
        end_run(session, run.job_id, same, Status.FAILED, "never_started", message, now)
        return None
    resent = session.execute(
        update(Run).where(*same).values(enqueued_at=now, enqueues=Run.enqueues + 1)
    )
    return Resend(run_id, run.queue) if _rowcount(resent) else None
