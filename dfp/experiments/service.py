"""What the API does with experiments: submit, read, list, cancel, delete. Services never commit."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dfp.cursors import decode_cursor, encode_cursor
from dfp.datasets import service as datasets
from dfp.errors import (
    ConflictError,
    IdempotencyConflictError,
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
)
from dfp.experiments import lifecycle, repository
from dfp.experiments.limits import check_model_plugin, check_spec_limits, resolve_dataset_path
from dfp.experiments.schemas import (
    ExperimentCreate,
    ExperimentPublic,
    ExperimentsPublic,
    ExperimentSummary,
    Links,
    ProgressPublic,
    ReproducibilityPublic,
    RunPublic,
)
from dfp.queues.names import CPU_QUEUE, GPU_QUEUE
from dfp.queues.protocols import RunDispatcher
from dfp.settings import Settings
from dfp.storage.database import UnitOfWork
from dfp.storage.models import JOB_KINDS, Job, JobTag, Run
from dfp.storage.types import utcnow
from dfp.webhooks.addresses import RefusedCallbackError, check_callback_url
from dfp.webhooks.events import COLLECTIONS
from dfp_engine import __version__ as dfp_version
from dfp_engine.results import ErrorInfo
from dfp_engine.spec import ExperimentSpec
from dfp_engine.status import TERMINAL_STATUSES, UNFINISHED_STATUSES

MAX_CALLBACK_URL = 2048  # the column's size
EXPERIMENT, ANALYSIS = JOB_KINDS


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool  # False when an Idempotency-Key replay returned the existing job


def queue_for(spec: ExperimentSpec) -> str:
    """GPU workers take runs whose spec asks for CUDA; everything else runs on CPU workers."""
    return GPU_QUEUE if spec.training.device.startswith("cuda") else CPU_QUEUE


def request_hash(spec_hash: str, tags: Sequence[str], callback_url: str | None) -> str:
    """Identity of a submission, to tell an idempotent replay from a conflicting reuse of a key."""
    canonical = json.dumps(
        {"spec": spec_hash, "tags": sorted(set(tags)), "callback_url": callback_url},
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit(
    uow: UnitOfWork,
    owner: str,
    body: ExperimentCreate,
    *,
    settings: Settings,
    dispatcher: RunDispatcher,
    idempotency_key: str | None = None,
) -> Submission:
    """Store a job and its runs; their tasks are sent once the unit of work commits."""
    session = uow.session
    spec = resolve_dataset_path(body.to_spec(), settings)
    check_spec_limits(spec, settings)
    check_model_plugin(spec, settings)
    dataset_id = datasets.check_spec_dataset(session, owner, spec, settings)
    callback_url = str(body.callback_url) if body.callback_url is not None else None
    if callback_url is not None:
        check_callback(callback_url, settings)
    spec_hash = spec.spec_hash()
    fingerprint = request_hash(spec_hash, body.tags, callback_url)

    if idempotency_key is not None:
        existing = repository.get_job_by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            return Submission(_replay(existing, fingerprint), created=False)
    limit = settings.max_concurrent_jobs
    if repository.count_unfinished(session, owner, up_to=limit) >= limit:
        raise LimitExceededError(
            f"{owner} already has {settings.max_concurrent_jobs} unfinished experiments, "
            f"the limit max_concurrent_jobs (DFP_MAX_CONCURRENT_JOBS); wait or cancel one",
            details={"limit": "max_concurrent_jobs", "maximum": settings.max_concurrent_jobs},
        )

    now = utcnow()
    values = spec.run_values()
    job_row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "kind": EXPERIMENT,
        "owner": owner,
        "name": spec.name,
        "status": "queued",
        "spec": spec.model_dump(mode="json"),
        "spec_hash": spec_hash,
        "request_hash": fingerprint,
        "idempotency_key": idempotency_key,
        "callback_url": callback_url,
        "dataset_id": dataset_id,
        "queue": queue_for(spec),
        "n_runs": len(values),
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
    }
    tags = sorted(set(body.tags))
    run_rows = [
        {
            "index": index,
            "sweep_value": value,
            "status": "queued",
            "queue": queue_for(run_spec),
            "attempts": 0,
            "enqueues": 1,
            "enqueued_at": now,
            "progress_fraction": 0.0,
        }
        for index, (value, run_spec) in enumerate(zip(values, spec.run_specs, strict=True))
    ]
    if idempotency_key is None:
        run_ids = repository.insert_job(session, job_row, tags, run_rows)
    else:
        try:
            # A savepoint: a concurrent request with the same key may win the insert.
            with session.begin_nested():
                run_ids = repository.insert_job(session, job_row, tags, run_rows)
        except IntegrityError:
            existing = repository.get_job_by_idempotency_key(session, owner, idempotency_key)
            if existing is None:
                raise
            return Submission(_replay(existing, fingerprint), created=False)
    for run_id, row in zip(run_ids, run_rows, strict=True):
        uow.after_commit(partial(dispatcher.send_run, run_id, row["queue"]))
    # The response is built from what was inserted; these objects never join the session.
    job = Job(
        **job_row,
        tags=[JobTag(tag=tag) for tag in tags],
        runs=[Run(id=run_id, **row) for run_id, row in zip(run_ids, run_rows, strict=True)],
    )
    return Submission(job, created=True)


def check_callback(url: str, settings: Settings) -> None:
    """A callback_url the server can sign for, whose host resolves only to allowed addresses."""
    if settings.webhook_secret is None:
        raise InvalidRequestError(
            "callback_url: this server sends no webhooks (DFP_WEBHOOK_SECRET is not set)",
            details={"field": "callback_url"},
        )
    if len(url) > MAX_CALLBACK_URL:
        raise InvalidRequestError(
            f"callback_url: longer than {MAX_CALLBACK_URL} characters",
            details={"field": "callback_url"},
        )
    try:
        check_callback_url(url, settings.webhook_allowed_networks)
    except RefusedCallbackError as exc:
        raise InvalidRequestError(
            f"callback_url: {exc}", details={"field": "callback_url", "url": url}
        ) from None


def _replay(existing: Job, fingerprint: str) -> Job:
    if existing.request_hash != fingerprint:
        raise IdempotencyConflictError(
            "this Idempotency-Key was already used with a different request body",
            details={"experiment_id": str(existing.id)},
        )
    return existing


def get_job(session: Session, owner: str, job_id: uuid.UUID, kind: str = EXPERIMENT) -> Job:
    job = repository.get_job(session, job_id, owner, kind)
    if job is None:
        raise NotFoundError(f"no {kind} {job_id}")
    return job


def job_status(session: Session, owner: str, job_id: uuid.UUID, kind: str = EXPERIMENT) -> str:
    status = repository.job_status(session, job_id, owner, kind)
    if status is None:
        raise NotFoundError(f"no {kind} {job_id}")
    return status


def job_revision(session: Session, owner: str, job_id: uuid.UUID, kind: str = EXPERIMENT) -> str:
    """The token that changes with anything a read of the job shows (see the repository)."""
    revision = repository.job_revision(session, job_id, owner, kind)
    if revision is None:
        raise NotFoundError(f"no {kind} {job_id}")
    return revision


def experiment_snapshot(
    session: Session, owner: str, job_id: uuid.UUID, kind: str = EXPERIMENT
) -> tuple[ExperimentPublic, str]:
    """The public view of a job and its revision, read in the same transaction."""
    revision = job_revision(session, owner, job_id, kind)
    return experiment_public(session, get_job(session, owner, job_id, kind)), revision


def experiment_public(
    session: Session, job: Job, runs: Sequence[Run] | None = None
) -> ExperimentPublic:
    """The full public view of a job: aggregate progress, runs, reproducibility."""
    # A submission's own runs have nothing stored yet: no need to count.
    counts = repository.checkpoint_counts(session, job.id) if runs is None else {}
    runs = repository.runs_of(session, job.id) if runs is None else runs
    summary = summary_public(job, max((run.attempts for run in runs), default=0))
    return ExperimentPublic(
        **summary.model_dump(),
        cancel_requested=job.cancel_requested,
        callback_url=job.callback_url,
        progress=progress_public(job, runs),
        runs=[run_public(run, counts.get(run.id, 0)) for run in runs],
        reproducibility=reproducibility_public(job, runs),
        spec=job.spec,
    )


def summary_public(job: Job, attempts: int) -> ExperimentSummary:
    base = f"/v1/{COLLECTIONS[job.kind]}/{job.id}"
    return ExperimentSummary(
        id=str(job.id),
        name=job.name,
        status=job.status,  # type: ignore[arg-type]
        is_terminal=job.status in TERMINAL_STATUSES,
        tags=[tag.tag for tag in job.tags],
        n_runs=job.n_runs,
        attempts=attempts,
        error=_error(job.error_code, job.error_message),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        links=Links(
            self=base,
            results=f"{base}/results",
            results_csv=f"{base}/results.csv",
            cancel=f"{base}/cancel",
        ),
    )


# Runs that ran to their end; a cancelled run counts only the share it had done.
ENDED = frozenset({"succeeded", "failed"})


def progress_public(job: Job, runs: Sequence[Run]) -> ProgressPublic:
    """Fraction over all runs (those that ran to their end count whole) and the freshest report
    of a run; once the job is terminal, the message is its outcome."""
    finished = sum(run.status in ENDED for run in runs)
    fraction = sum(1.0 if run.status in ENDED else run.progress_fraction for run in runs) / max(
        1, len(runs)
    )
    fraction = min(1.0, fraction)
    reporting = [run for run in runs if run.progress_updated_at is not None]
    latest = max(reporting, key=lambda run: run.progress_updated_at or job.created_at, default=None)
    outcome = None
    if job.status in TERMINAL_STATUSES:
        outcome = f"{job.status}: {finished} of {len(runs)} runs ran to their end"
    if latest is None:
        return ProgressPublic(
            fraction=fraction, runs_finished=finished, n_runs=len(runs), message=outcome
        )
    return ProgressPublic(
        fraction=fraction,
        runs_finished=finished,
        n_runs=len(runs),
        run=latest.index,
        epoch=latest.progress_epoch,
        epochs=latest.progress_epochs,
        step=latest.progress_step,
        train_loss=latest.progress_train_loss,
        message=outcome or latest.progress_message,
        updated_at=latest.progress_updated_at,
    )


def run_public(run: Run, checkpoints: int = 0) -> RunPublic:
    return RunPublic(
        checkpoints=checkpoints,
        index=run.index,
        sweep_value=run.sweep_value,
        status=run.status,  # type: ignore[arg-type]
        attempts=run.attempts,
        epoch=run.progress_epoch,
        epochs=run.progress_epochs,
        fraction=1.0 if run.status == "succeeded" else run.progress_fraction,
        message=run.progress_message,
        error=_error(run.error_code, run.error_message),
        worker=run.worker,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def reproducibility_public(job: Job, runs: Sequence[Run]) -> ReproducibilityPublic:
    """Seed and spec hash from the spec; versions, device and host from the first run that ran."""
    environment = next((r.environment for r in runs if r.environment), None) or {}
    seed = job.spec.get("training", {}).get("seed")
    return ReproducibilityPublic(
        seed=environment.get("seed", seed),
        spec_hash=job.spec_hash,
        dfp_version=environment.get("dfp_version", dfp_version),
        torch=environment.get("torch"),
        python=environment.get("python"),
        numpy=environment.get("numpy"),
        device=environment.get("device"),
        worker_host=environment.get("worker_host"),
    )


def _error(code: str | None, message: str | None) -> ErrorInfo | None:
    return ErrorInfo(code=code, message=message or "") if code is not None else None


# ----------------------------------------------------------------------- listing


def list_experiments(
    session: Session,
    owner: str,
    *,
    limit: int,
    cursor: str | None = None,
    kind: str = EXPERIMENT,
    status: Collection[str] = (),
    tag: str | None = None,
    name: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> ExperimentsPublic:
    """One page, newest first; one more row than asked tells whether a next page exists."""
    after = decode_cursor(cursor) if cursor else None
    jobs = repository.list_jobs(
        session,
        owner,
        limit=limit + 1,
        kind=kind,
        status=status,
        tag=tag,
        name=name,
        created_after=created_after,
        created_before=created_before,
        after=after,
    )
    page, more = list(jobs[:limit]), len(jobs) > limit
    attempts = repository.run_attempts(session, [job.id for job in page])
    return ExperimentsPublic(
        data=[summary_public(job, attempts.get(job.id, 0)) for job in page],
        count=len(page),
        next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if more and page else None,
    )


# ----------------------------------------------------------------- cancel, delete


def cancel(uow: UnitOfWork, owner: str, job_id: uuid.UUID, kind: str = EXPERIMENT) -> Job:
    """Request cancellation: queued runs end now, running ones at their next epoch boundary.

    Cancelling a job that is already terminal changes nothing and is not an error."""
    session = uow.session
    job = get_job(session, owner, job_id, kind)
    if job.status in TERMINAL_STATUSES:
        return job
    if not repository.lock_job(session, job.id, Job.status.in_(UNFINISHED_STATUSES)):
        session.refresh(job)
        return job
    now = utcnow()
    session.execute(
        update(Job).where(Job.id == job.id).values(cancel_requested=True, updated_at=now)
    )
    session.execute(
        update(Run)
        .where(Run.job_id == job.id, Run.status == "queued")
        .values(
            status="cancelled",
            finished_at=now,
            error_code="cancelled",
            error_message="cancelled before it started",
        )
    )
    lifecycle.finalize_job(session, job.id)
    session.refresh(job)
    return job


def delete(uow: UnitOfWork, owner: str, job_id: uuid.UUID, kind: str = EXPERIMENT) -> None:
    """Remove a terminal job with its runs and results."""
    job = get_job(uow.session, owner, job_id, kind)
    if job.status not in TERMINAL_STATUSES:
        raise ConflictError(
            f"{kind} {job_id} is {job.status}; cancel it and wait until it is terminal",
            code="not_terminal",
        )
    uow.session.delete(job)
