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

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from dfp.experiments import repository
from dfp.experiments.curves import encode_layer, encode_table
from dfp.settings import Settings
from dfp.storage.models import TERMINAL_STATUSES, Job, LayerCurve, Run, RunCheckpoint
from dfp.storage.types import json_safe, utcnow
from dfp.webhooks import outbox
from dfp_engine.results import Checkpoint, RunResult, SummaryRow

# LayerAnalysis fields kept in columns; every other field goes into the `curves` JSON.
LAYER_COLUMNS = frozenset(
    {"layer", "dim", "normalization", "peak_inverse_delta", "mean_inverse_delta"}
)

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
    if not repository.lock_job(session, job_id, Job.status.in_(repository.UNFINISHED)):
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
        status = "cancelled" if job.cancel_requested else "failed"
        ended = session.execute(
            update(Run)
            .where(*base)
            .values(status=status, finished_at=now, error_code=code, error_message=message)
        )
        if _rowcount(ended):
            finalize_job(session, job_id)
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

Summarizer = Callable[[list[RunResult]], list[SummaryRow]]


def finish_run(
    session: Session,
    lease: Lease,
    result: RunResult,
    environment: dict[str, Any] | None,
    summarize: Summarizer | None = None,
) -> bool:
    """Write a run's outcome and every checkpoint not stored yet, then update the job.

    `summarize` turns the finished runs into the sweep summary, refreshed with every run that
    ends. False when the lease was lost (the result is discarded: another attempt owns it)."""
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
    if summarize is not None:
        from dfp.experiments.results import finished_run_results

        rows = summarize(finished_run_results(session, lease.job_id))
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
        ended = session.execute(
            update(Run)
            .where(*lease.conditions())
            .values(
                status="cancelled",
                finished_at=now,
                error_code="cancelled",
                error_message="cancelled while its worker was shutting down",
            )
        )
        if _rowcount(ended):
            finalize_job(session, lease.job_id)
        return None
    released = session.execute(
        update(Run)
        .where(*lease.conditions())
        .values(
            status="queued",
            enqueued_at=now,
            enqueues=Run.enqueues + 1,
            progress_message=f"requeued after attempt {lease.attempt}: {reason}",
            progress_updated_at=now,
        )
    )
    return Resend(lease.run_id, lease.queue) if _rowcount(released) else None


def aggregate_status(statuses: Sequence[str]) -> str:
    """A job's status from its runs': as the engine's `assemble` decides for a whole result
    once all are terminal (cancelled if any run was, else failed if any failed)."""
    if statuses and all(status in TERMINAL_STATUSES for status in statuses):
        for status in ("cancelled", "failed"):
            if status in statuses:
                return status
        return "succeeded"
    if all(status == "queued" for status in statuses):
        return "queued"
    return "running"


def finalize_job(session: Session, job_id: uuid.UUID) -> str:
    """Bring the job row in line with its runs; when all are terminal, the job is too."""
    runs = repository.runs_of(session, job_id)
    status = aggregate_status([run.status for run in runs])
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if status in TERMINAL_STATUSES:
        values["finished_at"] = utcnow()
        culprit = next((run for run in runs if run.status == status != "succeeded"), None)
        if culprit is not None:
            values["error_code"] = culprit.error_code or status
            values["error_message"] = f"run {culprit.index}: {culprit.error_message or status}"
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(repository.UNFINISHED))
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


def lost_runs(
    session: Session, settings: Settings, now: datetime, holder_alive: HolderCheck | None = None
) -> list[int]:
    """Running runs whose worker stopped heartbeating or is known to be gone."""
    stale = now - timedelta(seconds=settings.heartbeat_timeout)
    # Running runs number no more than worker processes: few enough to check each holder.
    query = select(Run.id, Run.worker, Run.heartbeat_at).where(Run.status == "running")
    return [
        run_id
        for run_id, worker, beat in session.execute(query.order_by(Run.heartbeat_at))
        if beat is None
        or beat < stale
        or (worker is not None and holder_alive is not None and not holder_alive(worker))
    ]


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
        ended = session.execute(
            update(Run)
            .where(*still_lost)
            .values(
                status="cancelled" if cancel else "failed",
                finished_at=now,
                error_code=code,
                error_message=message,
            )
        )
        if _rowcount(ended):
            finalize_job(session, run.job_id)
        return None
    requeued = session.execute(
        update(Run)
        .where(*still_lost)
        .values(
            status="queued",
            enqueued_at=now,
            enqueues=Run.enqueues + 1,
            progress_message=f"requeued after attempt {run.attempts}: its worker stopped",
            progress_updated_at=now,
        )
    )
    return Resend(run_id, run.queue) if _rowcount(requeued) else None


def queued_counts(session: Session) -> dict[str, int]:
    query = select(Run.queue, func.count()).where(Run.status == "queued").group_by(Run.queue)
    return {queue: int(count) for queue, count in session.execute(query)}


def unsent_candidates(
    session: Session, queue: str, settings: Settings, now: datetime, limit: int
) -> Sequence[int]:
    """The oldest queued runs in `queue` waiting longer than `requeue_after`."""
    cutoff = now - timedelta(seconds=settings.requeue_after)
    query = (
        select(Run.id)
        .where(Run.status == "queued", Run.queue == queue, Run.enqueued_at < cutoff)
        .order_by(Run.enqueued_at)
        .limit(limit)
    )
    return session.scalars(query).all()


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
        ended = session.execute(
            update(Run)
            .where(*same)
            .values(
                status="failed",
                finished_at=now,
                error_code="never_started",
                error_message=(
                    f"sent {run.enqueues} times to queue '{run.queue}' but no worker took it"
                ),
            )
        )
        if _rowcount(ended):
            finalize_job(session, run.job_id)
        return None
    resent = session.execute(
        update(Run).where(*same).values(enqueued_at=now, enqueues=Run.enqueues + 1)
    )
    return Resend(run_id, run.queue) if _rowcount(resent) else None
