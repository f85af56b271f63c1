"""Routes of /v1/experiments: submit, list, read (with long-poll), results, CSV, cancel, delete."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Protocol

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import to_json
from sqlalchemy.orm import Session

from api.deps import Caller, CallerDep
from api.errors import error_responses
from api.openapi import (
    CONTENT_DISPOSITION_HEADER,
    IDEMPOTENT_REPLAYED_HEADER,
    LOCATION_HEADER,
    IdempotencyKey,
    file_response,
)
from dfp.errors import NotFoundError
from dfp.experiments import results as results_service
from dfp.experiments import service
from dfp.experiments.schemas import (
    TAG_PATTERN,
    ExperimentCreate,
    ExperimentPublic,
    ExperimentsPublic,
    FigurePublic,
    FiguresPublic,
    ResultsPublic,
)
from dfp_engine.status import Status

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])


class _JsonModel(Protocol):
    def model_dump_json(self) -> str: ...


def json_response(
    model: _JsonModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A response serialised by pydantic straight to JSON bytes.

    The model was built by the service and is valid by construction; FastAPI would validate
    it again (in another trip to the thread pool) before serialising it the same way."""
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")


MAX_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25


class _Snapshot(_JsonModel, Protocol):
    @property
    def is_terminal(self) -> bool: ...


async def long_poll(
    request: Request,
    wait: float,
    load: Callable[[], tuple[_Snapshot, str]],
    revision: Callable[[], str],
) -> Response:
    """`load()` now, or once `revision()` changes within `wait` s (a job's long-poll)."""
    first, seen = await run_in_threadpool(load)
    if wait <= 0 or first.is_terminal:
        return json_response(first)
    deadline = time.monotonic() + wait
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(POLL_SECONDS, remaining))
        if await request.is_disconnected():
            break
        if await run_in_threadpool(revision) != seen:
            break
    latest, _ = await run_in_threadpool(load)
    return json_response(latest)


# Filters hold what stored values can be: integers within the database's, names of layers.
MAX_INDEX = 2**31 - 1
LAYER_PATTERN = r"^[A-Za-z0-9._-]{1,50}$"
# Control characters (NUL above all, which PostgreSQL text cannot hold) are in no stored name.
NAME_FILTER_PATTERN = r"^[^\x00-\x1f\x7f]*$"


def _as_utc(value: datetime) -> datetime:
    """A timestamp filter in UTC; one given without a zone is read as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the range of timestamps") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="submitExperiment",
    response_model=ExperimentPublic,
    responses={
        202: {
            "description": "Accepted: the experiment, queued",
            "headers": {**LOCATION_HEADER, **IDEMPOTENT_REPLAYED_HEADER},
        },
        **error_responses(401, 409, 413, 415, 422, 503),
    },
)
def submit_experiment(
    body: ExperimentCreate,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Submit an experiment spec; its runs are queued for the workers."""
    with caller.transaction() as (uow, owner):
        submission = service.submit(
            uow,
            owner,
            body,
            settings=caller.state.settings,
            dispatcher=caller.state.dispatcher,
            idempotency_key=idempotency_key,
        )
        job = submission.job
        public = service.experiment_public(
            uow.session, job, job.runs if submission.created else None
        )
    headers = {"Location": f"/v1/experiments/{job.id}"}
    if not submission.created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(public, status.HTTP_202_ACCEPTED, headers)


@router.get(
    "",
    operation_id="listExperiments",
    response_model=ExperimentsPublic,
    responses=error_responses(401, 422, 503),
)
def list_experiments(
    caller: CallerDep,
    status_: Annotated[
        list[Status] | None, Query(alias="status", description="Repeat to allow several.")
    ] = None,
    tag: Annotated[str | None, Query(max_length=64, pattern=TAG_PATTERN)] = None,
    name: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=NAME_FILTER_PATTERN,
            description="Part of the name, in any case (no control characters).",
        ),
    ] = None,
    created_after: Annotated[
        UtcDatetime | None, Query(description="ISO 8601; without a zone it means UTC.")
    ] = None,
    created_before: Annotated[
        UtcDatetime | None, Query(description="ISO 8601; without a zone it means UTC.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> Response:
    """List your experiments, newest first, one page at a time."""
    page = caller.read(
        lambda session, owner: service.list_experiments(
            session,
            owner,
            limit=limit,
            cursor=cursor,
            status=status_ or (),
            tag=tag,
            name=name,
            created_after=created_after,
            created_before=created_before,
        )
    )
    return json_response(page)


def _snapshot(caller: Caller, experiment_id: uuid.UUID) -> tuple[ExperimentPublic, str]:
    # One transaction, so the job and its runs are a consistent snapshot.
    with caller.transaction() as (uow, owner):
        return service.experiment_snapshot(uow.session, owner, experiment_id)


def _revision(caller: Caller, experiment_id: uuid.UUID) -> str:
    return caller.read(lambda session, owner: service.job_revision(session, owner, experiment_id))


@router.get(
    "/{experiment_id}",
    operation_id="getExperiment",
    response_model=ExperimentPublic,
    responses=error_responses(401, 404, 422, 503),
)
async def get_experiment(
    experiment_id: uuid.UUID,
    request: Request,
    caller: CallerDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds to wait for a change (status, a run, progress, a stored "
            "checkpoint) before answering (long-poll); see also streamExperimentEvents.",
        ),
    ] = 0,
) -> Response:
    """Status, progress, runs, spec and reproducibility metadata of one experiment."""
    return await long_poll(
        request,
        wait,
        lambda: _snapshot(caller, experiment_id),
        lambda: _revision(caller, experiment_id),
    )


RunFilter = Annotated[
    list[Annotated[int, Field(ge=0, le=MAX_INDEX)]] | None,
    Query(description="Only these run indexes."),
]
LayerFilter = Annotated[
    list[Annotated[str, StringConstraints(pattern=LAYER_PATTERN)]] | None,
    Query(description="Only these layers, e.g. hidden.2."),
]
EpochFilter = Annotated[
    list[Annotated[int, Field(ge=0, le=MAX_INDEX)]] | None,
    Query(description="Only these checkpoint epochs."),
]


@router.get(
    "/{experiment_id}/results",
    operation_id="getExperimentResults",
    response_model=ResultsPublic,
    responses=error_responses(401, 404, 422, 503),
)
def get_results(
    experiment_id: uuid.UUID,
    caller: CallerDep,
    run: RunFilter = None,
    layer: LayerFilter = None,
    epoch: EpochFilter = None,
    verdicts: Annotated[
        bool,
        Query(
            description="false leaves `verdicts` empty: they judge the whole stored result, "
            "so computing them makes a narrow read (one run, one layer) cost as much as all."
        ),
    ] = True,
) -> Response:
    """The result: per run the history and per checkpoint and layer the LFR and RDF curves."""
    with caller.transaction() as (uow, owner):
        document = results_service.results_document(
            uow.session,
            owner,
            experiment_id,
            runs=run or (),
            layers=layer or (),
            epochs=epoch or (),
            thresholds=caller.state.settings.verdict_thresholds(),
            verdicts=verdicts,
        )
    # Built as plain data in ResultsPublic's shape (tested), serialised without models.
    return Response(to_json(document, inf_nan_mode="null"), media_type="application/json")


def _results(
    session: Session,
    owner: str,
    experiment_id: uuid.UUID,
    run: list[int] | None,
    layer: list[str] | None,
    epoch: list[int] | None,
) -> ResultsPublic:
    return results_service.get_results(
        session, owner, experiment_id, runs=run or (), layers=layer or (), epochs=epoch or ()
    )


@router.get(
    "/{experiment_id}/results.csv",
    operation_id="getExperimentResultsCsv",
    response_class=Response,
    responses={
        200: file_response(
            "text/csv",
            "One row per run, checkpoint, layer and δ",
            headers=CONTENT_DISPOSITION_HEADER,
        ),
        **error_responses(401, 404, 422, 503),
    },
)
def get_results_csv(
    experiment_id: uuid.UUID,
    caller: CallerDep,
    run: RunFilter = None,
    layer: LayerFilter = None,
    epoch: EpochFilter = None,
) -> Response:
    """The curves as one flat table (one row per run, checkpoint, layer and δ)."""
    with caller.transaction() as (uow, owner):
        results = _results(uow.session, owner, experiment_id, run, layer, epoch)
    return Response(
        results_service.results_csv(results),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{experiment_id}.csv"'},
    )


FIGURE_NAME = r"^[a-z0-9_]{1,64}$"
# pyplot keeps global state: one figure at a time per process.
figure_lock = threading.Lock()


@router.get(
    "/{experiment_id}/figures",
    operation_id="listExperimentFigures",
    response_model=FiguresPublic,
    responses=error_responses(401, 404, 422, 503),
)
def list_figures(experiment_id: uuid.UUID, caller: CallerDep) -> Response:
    """The names and URLs of the figures drawn from this experiment's results."""
    from dfp.figures import figure_names

    with caller.transaction() as (uow, owner):
        result = results_service.experiment_result(uow.session, owner, experiment_id)
    base = f"/v1/experiments/{experiment_id}/figures"
    figures = [FigurePublic(name=n, url=f"{base}/{n}.png") for n in figure_names(result)]
    return json_response(FiguresPublic(data=figures))


@router.get(
    "/{experiment_id}/figures/{name}.png",
    operation_id="getExperimentFigure",
    response_class=Response,
    responses={
        200: file_response("image/png", "The figure as a PNG image", binary=True),
        **error_responses(401, 404, 422, 503),
    },
)
def get_figure(
    experiment_id: uuid.UUID,
    name: Annotated[str, Path(pattern=FIGURE_NAME, description="See listExperimentFigures.")],
    caller: CallerDep,
) -> Response:
    """One figure (PNG) of the experiment, drawn by the engine from the stored results."""
    from dfp.figures import figure_names, render_figure

    with caller.transaction() as (uow, owner):
        result = results_service.experiment_result(uow.session, owner, experiment_id)
    names = figure_names(result)
    if name not in names:
        raise NotFoundError(
            f"no figure '{name}' for experiment {experiment_id}; available: {', '.join(names)}",
            details={"available": names},
        )
    with figure_lock:
        png = render_figure(result, name)
    return Response(png, media_type="image/png")


@router.post(
    "/{experiment_id}/cancel",
    operation_id="cancelExperiment",
    response_model=ExperimentPublic,
    responses=error_responses(401, 404, 422, 503),
)
def cancel_experiment(experiment_id: uuid.UUID, caller: CallerDep) -> Response:
    """Cancel: queued runs end now, running ones at their next epoch, keeping partial results."""
    with caller.transaction() as (uow, owner):
        job = service.cancel(uow, owner, experiment_id)
        public = service.experiment_public(uow.session, job)
    return json_response(public)


@router.delete(
    "/{experiment_id}",
    operation_id="deleteExperiment",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404, 409, 422, 503),
)
def delete_experiment(experiment_id: uuid.UUID, caller: CallerDep) -> Response:
    """Delete a finished experiment and its results."""
    with caller.transaction() as (uow, owner):
        service.delete(uow, owner, experiment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
