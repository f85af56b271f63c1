"""GET /v1/experiments/{id}/events: the experiment as a server-sent event stream.

Progress lives in the database (workers write it about once a second), so every API process
serves any stream by reading the job's revision token a few times a second and the full
experiment only when the token moves. Each event is the experiment exactly as
`GET /v1/experiments/{id}` returns it; see README.md, "Live progress".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.exc import SQLAlchemyError

from api.deps import Caller, CallerDep
from api.errors import error_responses
from dfp.errors import DfpError, ServiceUnavailableError
from dfp.experiments import service
from dfp.experiments.schemas import ExperimentPublic

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])

# How often a stream reads the revision token (one indexed query, plus the key check).
POLL_SECONDS = 0.5
# While a run trains, an event goes out at least this often even if nothing moved.
MAX_SILENCE_SECONDS = 2.0
# What an EventSource waits before reconnecting after a dropped connection (ms).
RETRY_MS = 2000
EVENT_EXPERIMENT = "experiment"
EVENT_ERROR = "error"


def _snapshot(
    caller: Caller, experiment_id: uuid.UUID, kind: str = service.EXPERIMENT
) -> tuple[ExperimentPublic, str]:
    with caller.transaction() as (uow, owner):
        return service.experiment_snapshot(uow.session, owner, experiment_id, kind)


def _revision(caller: Caller, experiment_id: uuid.UUID, kind: str = service.EXPERIMENT) -> str:
    return caller.read(
        lambda session, owner: service.job_revision(session, owner, experiment_id, kind)
    )


class StreamEndedError(Exception):
    """A reconnecting client already has the terminal event: 204 tells it to stop."""


@dataclass(frozen=True)
class OpenedStream:
    caller: Caller
    experiment_id: uuid.UUID
    first: ExperimentPublic
    revision: str
    resumed: bool  # the client's Last-Event-ID is the current revision
    kind: str = service.EXPERIMENT  # experiment or analysis: the event's name too


async def open_stream(
    experiment_id: uuid.UUID,
    caller: CallerDep,
    last_event_id: Annotated[
        str | None,
        Header(
            max_length=64,
            description="The `id` of the last event received: an unchanged experiment is not "
            "sent again (an EventSource sends it by itself when it reconnects).",
        ),
    ] = None,
) -> OpenedStream:
    """Everything that can fail with a status (401, 404, 503) happens before the stream starts."""
    return await _open(caller, experiment_id, last_event_id, service.EXPERIMENT)


LastEventId = Annotated[
    str | None,
    Header(
        max_length=64,
        description="The `id` of the last event received: an unchanged analysis is not sent "
        "again (an EventSource sends it by itself when it reconnects).",
    ),
]


async def open_analysis_stream(
    analysis_id: uuid.UUID, caller: CallerDep, last_event_id: LastEventId = None
) -> OpenedStream:
    """The same for an analysis."""
    return await _open(caller, analysis_id, last_event_id, service.ANALYSIS)


async def _open(
    caller: Caller, job_id: uuid.UUID, last_event_id: str | None, kind: str
) -> OpenedStream:
    first, revision = await run_in_threadpool(_snapshot, caller, job_id, kind)
    resumed = last_event_id == revision
    if resumed and first.is_terminal:
        raise StreamEndedError
    return OpenedStream(caller, job_id, first, revision, resumed, kind)


def _event(experiment: ExperimentPublic, revision: str, kind: str) -> ServerSentEvent:
    return ServerSentEvent(
        raw_data=experiment.model_dump_json(), event=kind, id=revision, retry=RETRY_MS
    )


def _error_event(exc: DfpError) -> ServerSentEvent:
    # The status the same failure would have had before the stream started.
    return ServerSentEvent(data={"status": exc.status_code, **exc.to_body()}, event=EVENT_ERROR)


def _trains(experiment: ExperimentPublic) -> bool:
    return any(run.status == "running" for run in experiment.runs)


EVENT_STREAM_DOC: dict[str, Any] = {
    "description": (
        "`text/event-stream`. Each `experiment` event's `data` is the experiment as "
        "getExperiment returns it (schema ExperimentPublic) and its `id` a revision token; one "
        "is sent at once, then whenever the status, a run, its progress or its stored "
        "checkpoints change, and at least every 2 s while a run trains. Comment lines "
        "(`: heartbeat`) keep an idle connection open. The stream ends after the event whose "
        "`is_terminal` is true; an `error` event (data: the error shape plus the HTTP `status` "
        "it stands for) ends it early."
    ),
    "content": {
        "text/event-stream": {
            "itemSchema": {
                "type": "object",
                "required": ["event", "data", "id"],
                "properties": {
                    "event": {"type": "string", "enum": [EVENT_EXPERIMENT, EVENT_ERROR]},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": "#/components/schemas/ExperimentPublic"},
                    },
                    "id": {"type": "string"},
                    "retry": {"type": "integer", "minimum": 0},
                },
            },
        }
    },
}


@router.get(
    "/{experiment_id}/events",
    operation_id="streamExperimentEvents",
    summary="Stream an experiment's progress (server-sent events)",
    response_class=EventSourceResponse,
    responses={
        200: EVENT_STREAM_DOC,
        204: {"description": "Last-Event-ID is the terminal event's: nothing more will come."},
        **error_responses(401, 404, 422, 503),
    },
)
async def stream_experiment_events(
    request: Request, opened: Annotated[OpenedStream, Depends(open_stream)]
) -> AsyncIterator[ServerSentEvent]:
    """Live progress: an event whenever the experiment changes, until it is terminal."""
    async for event in _stream(request, opened):
        yield event


async def _stream(request: Request, opened: OpenedStream) -> AsyncIterator[ServerSentEvent]:
    state = request.app.state.dfp
    kind = opened.kind
    heartbeat = state.settings.events_heartbeat_seconds
    caller, experiment_id = opened.caller, opened.experiment_id
    experiment, revision = opened.first, opened.revision
    now = time.monotonic()
    sent_at = spoke_at = now
    if not opened.resumed:
        yield _event(experiment, revision, kind)
    if experiment.is_terminal:
        return
    while True:
        await asyncio.sleep(POLL_SECONDS)
        now = time.monotonic()
        try:
            latest = await run_in_threadpool(_revision, caller, experiment_id, kind)
            if latest != revision or (_trains(experiment) and now - sent_at >= MAX_SILENCE_SECONDS):
                experiment, revision = await run_in_threadpool(
                    _snapshot, caller, experiment_id, kind
                )
                yield _event(experiment, revision, kind)
                sent_at = spoke_at = now
                if experiment.is_terminal:
                    return
            elif now - spoke_at >= heartbeat:
                yield ServerSentEvent(comment="heartbeat")
                spoke_at = now
        except DfpError as exc:  # the key was revoked or the experiment deleted meanwhile
            yield _error_event(exc)
            return
        except SQLAlchemyError:
            yield _error_event(
                ServiceUnavailableError(
                    "the database is unavailable; reconnect shortly", code="database_unavailable"
                )
            )
            return


analysis_router = APIRouter(prefix="/v1/analyses", tags=["analyses"])
ANALYSIS_STREAM_DOC: dict[str, Any] = {
    "description": EVENT_STREAM_DOC["description"]
    .replace("`experiment` event", "`analysis` event")
    .replace(
        "the experiment as getExperiment returns it (schema ExperimentPublic)",
        "the analysis as getAnalysis returns it (schema AnalysisPublic)",
    ),
    "content": {
        "text/event-stream": {
            "itemSchema": {
                **EVENT_STREAM_DOC["content"]["text/event-stream"]["itemSchema"],
                "properties": {
                    **EVENT_STREAM_DOC["content"]["text/event-stream"]["itemSchema"]["properties"],
                    "event": {"type": "string", "enum": [service.ANALYSIS, EVENT_ERROR]},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": "#/components/schemas/AnalysisPublic"},
                    },
                },
            }
        }
    },
}


@analysis_router.get(
    "/{analysis_id}/events",
    operation_id="streamAnalysisEvents",
    summary="Stream an analysis's progress (server-sent events)",
    response_class=EventSourceResponse,
    responses={
        200: ANALYSIS_STREAM_DOC,
        204: {"description": "Last-Event-ID is the terminal event's: nothing more will come."},
        **error_responses(401, 404, 422, 503),
    },
)
async def stream_analysis_events(
    request: Request, opened: Annotated[OpenedStream, Depends(open_analysis_stream)]
) -> AsyncIterator[ServerSentEvent]:
    """Live progress: an event whenever the analysis changes (layer, progress, status)."""
    async for event in _stream(request, opened):
        yield event


async def _already_ended(_: Request, exc: Exception) -> Response:
    return Response(status_code=204)


def install(app: FastAPI) -> None:
    """The stream's routes and its one special answer (204: the stream already ended)."""
    app.add_exception_handler(StreamEndedError, _already_ended)
    app.include_router(router)
    app.include_router(analysis_router)
