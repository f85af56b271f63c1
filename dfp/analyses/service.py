"""What the API does with analyses: submit (checked against the stored arrays), read, results.

An analysis is a job of kind `analysis` with one run, so it shares the experiments' whole
life cycle: claim with a lease, heartbeat, progress, cancel, retries, the reconciler, results
stored in one transaction, webhooks. Services never commit."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from functools import partial
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dfp.analyses.schemas import (
    AnalysisCreate,
    AnalysisPublic,
    AnalysisRequest,
    AnalysisResultsPublic,
)
from dfp.datasets import repository as datasets_repository
from dfp.datasets.arrays import ArrayInfo
from dfp.datasets.service import named_arrays
from dfp.errors import InvalidRequestError, LimitExceededError
from dfp.experiments import repository
from dfp.experiments.results import results_document
from dfp.experiments.service import (
    ANALYSIS,
    Submission,
    _replay,
    check_callback,
    experiment_public,
    request_hash,
)
from dfp.queues import CPU_QUEUE, GPU_QUEUE
from dfp.queues.protocols import RunDispatcher
from dfp.settings import Settings
from dfp.storage.database import UnitOfWork
from dfp.storage.models import Job, JobTag, Run
from dfp.storage.types import utcnow
from dfp_engine.results import ErrorInfo, LayerAnalysis


def spec_hash(request: AnalysisRequest) -> str:
    """SHA-256 of the request's canonical JSON form: equal requests hash equal."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_arrays(
    session: Session, owner: str, request: AnalysisRequest, settings: Settings
) -> None:
    """The named arrays exist, are finite and agree in rows (422 naming the field)."""
    dataset = datasets_repository.get(session, request.dataset_id, owner, lock=True)
    if dataset is None:
        raise InvalidRequestError(
            f"dataset_id: no dataset {request.dataset_id} (upload one with POST /v1/datasets)",
            details={"field": "dataset_id"},
        )
    wanted = [(f"features[{i}]", name) for i, name in enumerate(request.features)]
    wanted.append(("targets", request.targets))
    if request.predictions is not None:
        wanted.append(("predictions", request.predictions))
    arrays = named_arrays(dataset, wanted)
    targets = arrays["targets"]
    for field, array in arrays.items():
        _check_array(field, array, targets)
    if targets.rows > settings.max_samples:
        raise LimitExceededError(
            f"targets: '{targets.name}' has {targets.rows} rows, more than the limit "
            f"max_samples = {settings.max_samples} (DFP_MAX_SAMPLES)",
            details={
                "limit": "max_samples",
                "field": "targets",
                "value": targets.rows,
                "maximum": settings.max_samples,
            },
        )
    if request.predictions is not None:
        _check_predictions(arrays["predictions"], targets)


def _check_array(field: str, array: ArrayInfo, targets: ArrayInfo) -> None:
    if not array.shape or (field.startswith("features") and len(array.shape) < 2):
        need = "(n, d) or (n, ...)" if field.startswith("features") else "one row per sample"
        raise InvalidRequestError(
            f"{field}: array '{array.name}' has shape {list(array.shape)}; it needs {need}",
            details={"field": field},
        )
    if not array.finite:
        raise InvalidRequestError(
            f"{field}: array '{array.name}' contains NaN or inf", details={"field": field}
        )
    if array.rows != targets.rows:
        raise InvalidRequestError(
            f"{field}: array '{array.name}' has {array.rows} rows but targets "
            f"'{targets.name}' has {targets.rows}",
            details={"field": field},
        )
    if array.rows < 2:
        raise InvalidRequestError(
            f"{field}: at least 2 samples are needed, '{array.name}' has {array.rows}",
            details={"field": field},
        )
    if field == "targets" and array.int_range is not None and array.int_range[0] < 0:
        raise InvalidRequestError(
            f"targets: integer labels '{array.name}' must be non-negative class indices",
            details={"field": field},
        )
    if field == "targets" and len(array.shape) > 2:
        raise InvalidRequestError(
            f"targets: '{array.name}' must be (n,) classes or (n,) / (n, c) real targets",
            details={"field": field},
        )


def _check_predictions(predictions: ArrayInfo, targets: ArrayInfo) -> None:
    if targets.int_range is not None and len(targets.shape) == 1:  # classes, one-hot inside
        width = targets.int_range[1] + 1
    else:
        width = targets.shape[1] if len(targets.shape) == 2 else 1
    got = predictions.shape[1] if len(predictions.shape) == 2 else 1
    if len(predictions.shape) > 2 or got != width:
        raise InvalidRequestError(
            f"predictions: '{predictions.name}' has shape {list(predictions.shape)}; it must "
            f"match the targets (n, {width})",
            details={"field": "predictions"},
        )


def queue_for(request: AnalysisRequest) -> str:
    return GPU_QUEUE if request.device.startswith("cuda") else CPU_QUEUE


def submit(
    uow: UnitOfWork,
    owner: str,
    body: AnalysisCreate,
    *,
    settings: Settings,
    dispatcher: RunDispatcher,
    idempotency_key: str | None = None,
) -> Submission:
    """Store an analysis job and its one run; the task is sent once the unit commits."""
    session = uow.session
    request = body.to_request()
    check_arrays(session, owner, request, settings)
    callback_url = str(body.callback_url) if body.callback_url is not None else None
    if callback_url is not None:
        check_callback(callback_url, settings)
    digest = spec_hash(request)
    fingerprint = request_hash(digest, body.tags, callback_url)
    if idempotency_key is not None:
        existing = repository.get_job_by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            return Submission(_replay(existing, fingerprint), created=False)
    limit = settings.max_concurrent_jobs
    if repository.count_unfinished(session, owner, up_to=limit) >= limit:
        raise LimitExceededError(
            f"{owner} already has {limit} unfinished experiments and analyses, the limit "
            "max_concurrent_jobs (DFP_MAX_CONCURRENT_JOBS); wait or cancel one",
            details={"limit": "max_concurrent_jobs", "maximum": limit},
        )
    now = utcnow()
    queue = queue_for(request)
    job_row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "kind": ANALYSIS,
        "owner": owner,
        "name": request.name,
        "status": "queued",
        "spec": request.model_dump(mode="json"),
        "spec_hash": digest,
        "request_hash": fingerprint,
        "idempotency_key": idempotency_key,
        "callback_url": callback_url,
        "dataset_id": request.dataset_id,
        "queue": queue,
        "n_runs": 1,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
    }
    tags = sorted(set(body.tags))
    run_row = {
        "index": 0,
        "sweep_value": None,
        "status": "queued",
        "queue": queue,
        "attempts": 0,
        "enqueues": 1,
        "enqueued_at": now,
        "progress_fraction": 0.0,
    }
    try:
        with session.begin_nested():
            (run_id,) = repository.insert_job(session, job_row, tags, [run_row])
    except IntegrityError:
        existing = (
            repository.get_job_by_idempotency_key(session, owner, idempotency_key)
            if idempotency_key is not None
            else None
        )
        if existing is None:
            raise
        return Submission(_replay(existing, fingerprint), created=False)
    uow.after_commit(partial(dispatcher.send_run, run_id, queue))
    job = Job(**job_row, tags=[JobTag(tag=t) for t in tags], runs=[Run(id=run_id, **run_row)])
    return Submission(job, created=True)


def analysis_public(session: Session, job: Job, runs: list[Run] | None = None) -> AnalysisPublic:
    return AnalysisPublic.model_validate(experiment_public(session, job, runs).model_dump())


def results(
    session: Session, owner: str, analysis_id: uuid.UUID, layers: list[str] | None = None
) -> AnalysisResultsPublic:
    """The stored layers (those done so far while it runs), in request order."""
    document = results_document(session, owner, analysis_id, layers=layers or (), kind=ANALYSIS)
    run = document["runs"][0] if document["runs"] else {}
    checkpoints = run.get("checkpoints") or [{"layers": []}]
    error = run.get("error")
    return AnalysisResultsPublic(
        analysis_id=document["experiment_id"],
        status=document["status"],
        is_terminal=document["is_terminal"],
        partial=document["partial"],
        error=ErrorInfo.model_validate(error) if error else None,
        n_samples=run.get("n_analysis") or None,
        elapsed_seconds=run.get("elapsed_seconds"),
        layers=[LayerAnalysis.model_validate(layer) for layer in checkpoints[0]["layers"]],
    )


CSV_COLUMNS = ("layer", "delta", "inverse_delta", "lfr", "rdf", "e_low", "e_high")


def results_csv(result: AnalysisResultsPublic) -> str:
    """One row per layer and δ (1/δ ascending); the RDF is empty at the first δ."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for layer in result.layers:
        rdf = dict(zip(layer.rdf_inverse_deltas, layer.rdf, strict=True))
        for i, (delta, inverse) in enumerate(zip(layer.deltas, layer.inverse_deltas, strict=True)):
            e_low = layer.e_low[i] if layer.e_low is not None else None
            e_high = layer.e_high[i] if layer.e_high is not None else None
            row = [layer.layer, delta, inverse, layer.lfr[i], rdf.get(inverse), e_low, e_high]
            writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()
