"""Queries on jobs, runs, checkpoints and curves; commits belong to the caller's unit of work."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session, selectinload, undefer

from dfp.storage.models import (
    Job,
    JobTag,
    LayerCurve,
    Run,
    RunCheckpoint,
)
from dfp.storage.types import utcnow
from dfp_engine.status import TERMINAL_STATUSES, UNFINISHED_STATUSES

# Plain tables, for INSERTs that need no ORM unit of work.
JOBS = cast(Table, Job.__table__)
JOB_TAGS = cast(Table, JobTag.__table__)
RUNS = cast(Table, Run.__table__)

# The submission path's statements, built once: SQLAlchemy then reuses their cache keys and
# compiled forms, and PostgreSQL their prepared plans (a statement built per call costs more
# CPU than its round trip). Values travel as parameters, never inside the statement.
_INSERT_JOB = insert(JOBS)
_INSERT_TAGS = insert(JOB_TAGS)
_INSERT_RUNS = insert(RUNS).returning(RUNS.c.id, sort_by_parameter_order=True)
_COUNT_UNFINISHED = select(func.count()).select_from(
    select(JOBS.c.id)
    .where(
        JOBS.c.owner == bindparam("owner"),
        or_(*(JOBS.c.status == status.value for status in UNFINISHED_STATUSES)),
    )
    .limit(bindparam("up_to"))
    .subquery()
)
_RUN_DEFAULTS: dict[str, Any] = {
    "layer_names": [],
    "history": b"",
    "history_fields": [],
    "n_train": 0,
    "n_test": 0,
    "n_analysis": 0,
    "elapsed_seconds": 0.0,
    "analysis_seconds": 0.0,
}


def get_job(
    session: Session, job_id: uuid.UUID, owner: str | None = None, kind: str | None = None
) -> Job | None:
    """A job with its tags; None if it does not exist, belongs to another owner or is of
    another kind."""
    query = select(Job).options(selectinload(Job.tags)).where(Job.id == job_id)
    if owner is not None:
        query = query.where(Job.owner == owner)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return session.scalars(query).one_or_none()


def insert_job(
    session: Session,
    job: dict[str, Any],
    tags: Sequence[str],
    runs: Sequence[dict[str, Any]],
) -> list[int]:
    """Insert a job, its tags and its runs with plain INSERTs; returns the run ids in order."""
    session.execute(_INSERT_JOB, job)
    if tags:
        session.execute(_INSERT_TAGS, [{"job_id": job["id"], "tag": t} for t in tags])
    rows = [{**_RUN_DEFAULTS, **run, "job_id": job["id"]} for run in runs]
    return [int(run_id) for run_id in session.execute(_INSERT_RUNS, rows).scalars()]


def job_revision(
    session: Session, job_id: uuid.UUID, owner: str, kind: str = "experiment"
) -> str | None:
    """A token that changes whenever what a read of the job shows changes (its status or
    cancel flag, a run's state, attempt or progress, a stored checkpoint); None if no such job.

    Two cheap indexed queries, so event streams and long-polls can ask it several times a
    second; the same state gives the same token in every API process."""
    job = session.execute(
        select(Job.status, Job.cancel_requested, Job.updated_at).where(
            Job.id == job_id, Job.owner == owner, Job.kind == kind
        )
    ).one_or_none()
    if job is None:
        return None
    checkpoints = (
        select(func.count(RunCheckpoint.id))
        .where(RunCheckpoint.run_id == Run.id)
        .correlate(Run)
        .scalar_subquery()
    )
    runs = session.execute(
        select(Run.status, Run.attempts, Run.progress_updated_at, checkpoints)
        .where(Run.job_id == job_id)
        .order_by(Run.index)
    ).all()
    state = repr((tuple(job), [tuple(run) for run in runs]))
    return hashlib.blake2b(state.encode(), digest_size=8).hexdigest()


def job_status(session: Session, job_id: uuid.UUID, owner: str, kind: str) -> str | None:
    query = select(Job.status).where(Job.id == job_id, Job.owner == owner, Job.kind == kind)
    return session.scalar(query)


def get_job_by_idempotency_key(session: Session, owner: str, key: str) -> Job | None:
    query = select(Job).where(Job.owner == owner, Job.idempotency_key == key)
    return session.scalars(query.options(selectinload(Job.tags))).one_or_none()


def count_unfinished(session: Session, owner: str, up_to: int) -> int:
    """The owner's queued and running jobs, counted up to `up_to` (the cost stays bounded)."""
    return int(session.scalar(_COUNT_UNFINISHED, {"owner": owner, "up_to": up_to}) or 0)


def list_jobs(
    session: Session,
    owner: str,
    *,
    limit: int,
    kind: str = "experiment",
    status: Collection[str] = (),
    tag: str | None = None,
    name: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> Sequence[Job]:
    """Newest first, keyset-paginated on (created_at, id); `name` matches any part, any case."""
    query = select(Job).options(selectinload(Job.tags)).where(Job.owner == owner, Job.kind == kind)
    if name:
        pattern = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Job.name.ilike(f"%{pattern}%", escape="\\"))
    if status:
        query = query.where(Job.status.in_(list(status)))
    if tag is not None:
        query = query.where(exists().where(JobTag.job_id == Job.id, JobTag.tag == tag))
    if created_after is not None:
        query = query.where(Job.created_at > created_after)
    if created_before is not None:
        query = query.where(Job.created_at < created_before)
    if after is not None:
        at, last_id = after
        query = query.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < last_id)))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return session.scalars(query).all()


def runs_of(session: Session, job_id: uuid.UUID, *, results: bool = False) -> Sequence[Run]:
    """A job's runs in order; `results` also loads their histories and other result fields."""
    query = select(Run).where(Run.job_id == job_id).order_by(Run.index)
    if results:
        query = query.options(
            undefer(Run.history), undefer(Run.history_fields), undefer(Run.details)
        )
    return session.scalars(query).all()


def checkpoint_counts(session: Session, job_id: uuid.UUID) -> dict[int, int]:
    """Stored checkpoints per run id of one job."""
    query = (
        select(RunCheckpoint.run_id, func.count())
        .join(Run, Run.id == RunCheckpoint.run_id)
        .where(Run.job_id == job_id)
        .group_by(RunCheckpoint.run_id)
    )
    return {int(run_id): int(count) for run_id, count in session.execute(query)}


def run_attempts(session: Session, job_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The most attempts any run of each job has taken (listings show it without loading runs)."""
    if not job_ids:
        return {}
    query = (
        select(Run.job_id, func.max(Run.attempts))
        .where(Run.job_id.in_(list(job_ids)))
        .group_by(Run.job_id)
    )
    return {job_id: int(attempts or 0) for job_id, attempts in session.execute(query)}


def lock_job(session: Session, job_id: uuid.UUID, *conditions: Any) -> bool:
    """Take the job row's write lock (an UPDATE, which works on every backend) if it matches.

    Every transaction that changes several rows of one job takes this lock first, so finishing
    runs, cancels and the reconciler serialise per job and see each other's committed writes."""
    result = session.execute(
        update(Job).where(Job.id == job_id, *conditions).values(updated_at=utcnow())
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def curve_rows(
    session: Session,
    run_ids: Collection[int],
    *,
    layers: Collection[str] = (),
    epochs: Collection[int] = (),
) -> list[tuple[Any, ...]]:
    """(run_id, epoch, step, *curve columns) ordered by run, epoch and layer position."""
    query = (
        select(
            RunCheckpoint.run_id,
            RunCheckpoint.epoch,
            RunCheckpoint.step,
            LayerCurve.layer,
            LayerCurve.dim,
            LayerCurve.normalization,
            LayerCurve.peak_inverse_delta,
            LayerCurve.mean_inverse_delta,
            LayerCurve.arrays,
            LayerCurve.curves,
        )
        .join(LayerCurve, LayerCurve.checkpoint_id == RunCheckpoint.id)
        .where(RunCheckpoint.run_id.in_(list(run_ids)))
        .order_by(RunCheckpoint.run_id, RunCheckpoint.epoch, LayerCurve.position)
    )
    if layers:
        query = query.where(LayerCurve.layer.in_(list(layers)))
    if epochs:
        query = query.where(RunCheckpoint.epoch.in_(list(epochs)))
    return [tuple(row) for row in session.execute(query)]


def finished_run_rows(session: Session, job_id: uuid.UUID) -> Sequence[Row[Any]]:
    """A job's terminal runs in order: what a summary row needs (the history to read its end)."""
    query = (
        select(
            Run.id,
            Run.index.label("position"),  # `index` would shadow the row's tuple method
            Run.sweep_value,
            Run.status,
            Run.steps_to_target,
            Run.epochs_to_target,
            Run.history,
            Run.history_fields,
        )
        .where(Run.job_id == job_id, Run.status.in_(TERMINAL_STATUSES))
        .order_by(Run.index)
    )
    return session.execute(query).all()


def layer_peaks(session: Session, run_ids: Collection[int]) -> list[tuple[int, int, str, Any]]:
    """(run_id, epoch, layer, peak 1/δ) of every stored curve, by run and epoch: no curves read."""
    query = (
        select(
            RunCheckpoint.run_id,
            RunCheckpoint.epoch,
            LayerCurve.layer,
            LayerCurve.peak_inverse_delta,
        )
        .join(LayerCurve, LayerCurve.checkpoint_id == RunCheckpoint.id)
        .where(RunCheckpoint.run_id.in_(list(run_ids)))
        .order_by(RunCheckpoint.run_id, RunCheckpoint.epoch, LayerCurve.position)
    )
    return [(int(r), int(e), str(la), p) for r, e, la, p in session.execute(query)]


def stored_epochs(session: Session, run_id: int) -> set[int]:
    query = select(RunCheckpoint.epoch).where(RunCheckpoint.run_id == run_id)
    return set(session.scalars(query))


def delete_checkpoints(
    session: Session, run_id: int, epochs: Collection[int] | None = None
) -> None:
    query = delete(RunCheckpoint).where(RunCheckpoint.run_id == run_id)
    if epochs is not None:
        query = query.where(RunCheckpoint.epoch.in_(list(epochs)))
    session.execute(query)


def jobs_by_status(session: Session) -> dict[str, int]:
    query = select(Job.status, func.count()).group_by(Job.status)
    return {status: int(count) for status, count in session.execute(query)}
