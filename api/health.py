"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import Caller, get_caller
from api.errors import ERROR_RESPONSE_REF, RETRY_AFTER_HEADER, error_responses
from api.openapi import file_response
from api.state import AppState

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="getHealth")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def readiness(state: AppState) -> tuple[bool, dict[str, Any]]:
    """Database reachable, schema at head, broker reachable: each with a reason when not."""
    checks: dict[str, Any] = {}
    schema = state.schema.check()
    checks["database"] = {"ok": schema is not None, "detail": state.schema.error or "reachable"}
    checks["schema"] = {
        "ok": schema is not None and schema.is_current,
        "detail": schema.describe() if schema is not None else "unknown: database unreachable",
        "current": schema.current if schema is not None else None,
        "head": schema.head if schema is not None else None,
    }
    try:
        state.dispatcher.ping()
        checks["broker"] = {"ok": True, "detail": "reachable"}
    except Exception as exc:
        checks["broker"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    return all(check["ok"] for check in checks.values()), checks


@router.get(
    "/readyz",
    operation_id="getReadiness",
    responses={
        503: {
            "description": "Not ready; details say why",
            "headers": RETRY_AFTER_HEADER,
            "content": {"application/json": {"schema": {"$ref": ERROR_RESPONSE_REF}}},
        }
    },
)
async def readyz(request: Request) -> Response:
    """Ready to serve: database reachable, schema at head, broker reachable."""
    state: AppState = request.app.state.dfp
    ready, checks = await run_in_threadpool(readiness, state)
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    failing = ", ".join(
        f"{name}: {check['detail']}" for name, check in checks.items() if not check["ok"]
    )
    body = {"error": {"code": "not_ready", "message": failing, "details": checks}}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.get(
    "/metrics",
    operation_id="getMetrics",
    response_class=Response,
    responses={
        200: file_response("text/plain", "Prometheus text format"),
        **error_responses(401, 503),
    },
)
def metrics(request: Request, caller: Annotated[Caller, Depends(get_caller)]) -> Response:
    """Prometheus metrics: jobs by status, queue depth, request latency (needs an API key)."""
    caller.read(lambda _session, owner: owner)
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
