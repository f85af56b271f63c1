"""Routes of /v1/analyses: submit, list, read (with long-poll), results, CSV, cancel, delete."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from api.deps import Caller, CallerDep
from api.errors import error_responses
from api.experiments import (
    FIGURE_NAME,
    MAX_WAIT_SECONDS,
    LayerFilter,
    UtcDatetime,
    figure_lock,
    json_response,
    long_poll,
)
from api.openapi import IdempotencyKey
from dfp.analyses import service
from dfp.analyses.schemas import (
    AnalysesPublic,
    AnalysisCreate,
    AnalysisPublic,
    AnalysisResultsPublic,
)
from dfp.errors import NotFoundError
from dfp.experiments import service as jobs
from dfp.experiments.schemas import TAG_PATTERN, FigurePublic, FiguresPublic
from dfp_engine.status import Status

router = APIRouter(prefix="/v1/analyses", tags=["analyses"])
ANALYSIS = jobs.ANALYSIS


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="submitAnalysis",
    response_model=AnalysisPublic,
    responses=error_responses(401, 409, 413, 415, 422, 503),
)
def submit_analysis(
    body: AnalysisCreate,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Analyse arrays of an uploaded dataset on the workers: one layer per feature array."""
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
        public = service.analysis_public(uow.session, job, job.runs if submission.created else None)
    headers = {"Location": f"/v1/analyses/{job.id}"}
    if not submission.created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(public, status.HTTP_202_ACCEPTED, headers)


@router.get(
    "",
    operation_id="listAnalyses",
    response_model=AnalysesPublic,
    responses=error_responses(401, 422, 503),
)
def list_analyses(
    caller: CallerDep,
    status_: Annotated[
        list[Status] | None, Query(alias="status", description="Repeat to allow several.")
    ] = None,
    tag: Annotated[str | None, Query(max_length=64, pattern=TAG_PATTERN)] = None,
    created_after: Annotated[
        UtcDatetime | None, Query(description="ISO 8601; without a zone it means UTC.")
    ] = None,
    created_before: Annotated[
        UtcDatetime | None, Query(description="ISO 8601; without a zone it means UTC.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> Response:
    """List your analyses, newest first, one page at a time."""
    page = caller.read(
        lambda session, owner: jobs.list_experiments(
            session,
            owner,
            limit=limit,
            cursor=cursor,
            kind=ANALYSIS,
            status=status_ or (),
            tag=tag,
            created_after=created_after,
            created_before=created_before,
        )
    )
    return json_response(AnalysesPublic.model_validate(page.model_dump()))


def _load(caller: Caller, analysis_id: uuid.UUID) -> tuple[AnalysisPublic, str]:
    # One transaction, so the job, its run and the revision are a consistent snapshot.
    with caller.transaction() as (uow, owner):
        public, revision = jobs.experiment_snapshot(uow.session, owner, analysis_id, ANALYSIS)
        return AnalysisPublic.model_validate(public.model_dump()), revision


def _revision(caller: Caller, analysis_id: uuid.UUID) -> str:
    return caller.read(
        lambda session, owner: jobs.job_revision(session, owner, analysis_id, ANALYSIS)
    )


@router.get(
    "/{analysis_id}",
    operation_id="getAnalysis",
    response_model=AnalysisPublic,
    responses=error_responses(401, 404, 422, 503),
)
async def get_analysis(
    analysis_id: uuid.UUID,
    request: Request,
    caller: CallerDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds to wait for a change (status, progress, a stored layer) before "
            "answering (long-poll); see also streamAnalysisEvents.",
        ),
    ] = 0,
) -> Response:
    """Status and progress (fraction over its layers) of one analysis, and its request."""
    return await long_poll(
        request,
        wait,
        lambda: _load(caller, analysis_id),
        lambda: _revision(caller, analysis_id),
    )


@router.get(
    "/{analysis_id}/results",
    operation_id="getAnalysisResults",
    response_model=AnalysisResultsPublic,
    responses=error_responses(401, 404, 422, 503),
)
def get_analysis_results(
    analysis_id: uuid.UUID, caller: CallerDep, layer: LayerFilter = None
) -> Response:
    """Per layer: δ grid, LFR, RDF, peak and mean 1/δ, LFR limit (partial while running)."""
    with caller.transaction() as (uow, owner):
        result = service.results(uow.session, owner, analysis_id, layer)
    return json_response(result)


@router.get(
    "/{analysis_id}/results.csv",
    operation_id="getAnalysisResultsCsv",
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "One row per layer and δ",
        },
        **error_responses(401, 404, 422, 503),
    },
)
def get_analysis_results_csv(
    analysis_id: uuid.UUID, caller: CallerDep, layer: LayerFilter = None
) -> Response:
    """The curves as one flat table: layer, delta, inverse_delta, lfr, rdf, e_low, e_high."""
    with caller.transaction() as (uow, owner):
        result = service.results(uow.session, owner, analysis_id, layer)
    return Response(
        service.results_csv(result),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{analysis_id}.csv"'},
    )


@router.get(
    "/{analysis_id}/figures",
    operation_id="listAnalysisFigures",
    response_model=FiguresPublic,
    responses=error_responses(401, 404, 422, 503),
)
def list_analysis_figures(analysis_id: uuid.UUID, caller: CallerDep) -> Response:
    """The names and URLs of the figures drawn from this analysis's stored layers."""
    from dfp.figures import analysis_figure_names

    with caller.transaction() as (uow, owner):
        result = service.results(uow.session, owner, analysis_id)
    base = f"/v1/analyses/{analysis_id}/figures"
    names = analysis_figure_names(result.layers)
    return json_response(
        FiguresPublic(data=[FigurePublic(name=n, url=f"{base}/{n}.png") for n in names])
    )


@router.get(
    "/{analysis_id}/figures/{name}.png",
    operation_id="getAnalysisFigure",
    responses={
        200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(401, 404, 422, 503),
    },
)
def get_analysis_figure(
    analysis_id: uuid.UUID,
    name: Annotated[str, Path(pattern=FIGURE_NAME, description="See listAnalysisFigures.")],
    caller: CallerDep,
) -> Response:
    """RDF against 1/δ of every analysed layer (PNG), drawn from the stored results."""
    from dfp.figures import analysis_figure_names, render_analysis_figure

    with caller.transaction() as (uow, owner):
        result = service.results(uow.session, owner, analysis_id)
    names = analysis_figure_names(result.layers)
    if name not in names:
        raise NotFoundError(
            f"no figure '{name}' for analysis {analysis_id}; "
            f"available: {', '.join(names) or 'none yet'}",
            details={"available": names},
        )
    title = f"RDF of each layer (n = {result.n_samples})"
    with figure_lock:
        png = render_analysis_figure(result.layers, name, title)
    return Response(png, media_type="image/png")


@router.post(
    "/{analysis_id}/cancel",
    operation_id="cancelAnalysis",
    response_model=AnalysisPublic,
    responses=error_responses(401, 404, 422, 503),
)
def cancel_analysis(analysis_id: uuid.UUID, caller: CallerDep) -> Response:
    """Cancel: a queued analysis ends now, a running one within a few seconds, keeping the
    layers already done."""
    with caller.transaction() as (uow, owner):
        job = jobs.cancel(uow, owner, analysis_id, ANALYSIS)
        public = service.analysis_public(uow.session, job)
    return json_response(public)


@router.delete(
    "/{analysis_id}",
    operation_id="deleteAnalysis",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404, 409, 422, 503),
)
def delete_analysis(analysis_id: uuid.UUID, caller: CallerDep) -> Response:
    """Delete a finished analysis and its results."""
    with caller.transaction() as (uow, owner):
        jobs.delete(uow, owner, analysis_id, ANALYSIS)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
