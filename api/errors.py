"""One error shape for every failure, `{"error": {"code", "message", "details"}}`, in OpenAPI."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dfp.errors import DfpError, RateLimitedError, ServiceUnavailableError
from dfp.fields import field_path
from dfp.storage.database import is_transient

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSE_REF = "#/components/schemas/ErrorResponse"


def error_schemas() -> dict[str, Any]:
    """The components the error responses refer to (added to the document by api.openapi)."""
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, "ErrorResponse": schema}


ERROR_DESCRIPTIONS = {
    401: "Missing, malformed, unknown or revoked API key",
    404: "No such experiment, analysis or dataset for this key's owner",
    409: "Conflicts with the resource's state or an earlier request",
    413: "Request body larger than the server's limit (DFP_MAX_BODY_BYTES, DFP_MAX_DATASET_BYTES)",
    415: "Request body that is not JSON (uploads: not multipart/form-data)",
    422: "Invalid request or spec, or over a server limit (details name the field or limit)",
    429: "Too many requests with this key; retry after the Retry-After delay",
    503: "Database, broker or schema not ready; retry after the Retry-After delay",
}
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    }
}
AUTHENTICATE_HEADER = {
    "WWW-Authenticate": {"description": "The scheme to use: Bearer", "schema": {"type": "string"}}
}
RESPONSE_HEADERS = {401: AUTHENTICATE_HEADER, 429: RETRY_AFTER_HEADER, 503: RETRY_AFTER_HEADER}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given statuses, all with the shared error shape.

    Operations that need a key (401) can also be rate limited (429)."""
    wanted = set(statuses) | ({429} if 401 in statuses else set())
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(wanted):
        # Declared by reference rather than as a `model`: FastAPI would file a model under the
        # route's own media type (text/csv, image/png, text/event-stream), but errors are JSON.
        response: dict[str, Any] = {
            "description": ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": ERROR_RESPONSE_REF}}},
        }
        if status in RESPONSE_HEADERS:
            response["headers"] = RESPONSE_HEADERS[status]
        responses[status] = response
    return responses


def _error_response(exc: DfpError) -> JSONResponse:
    headers = {}
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif exc.status_code == 503:
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=headers)


async def _dfp_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DfpError)
    return _error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "field": field_path(error.get("loc", ())),
            "message": str(error.get("msg", "invalid")).removeprefix("Value error, "),
            "type": error.get("type"),
        }
        for error in exc.errors()
    ]
    shown = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    body = {"error": {"code": "validation_error", "message": shown + more, "details": problems}}
    return JSONResponse(body, status_code=422)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
    }
    code = codes.get(exc.status_code, "http_error")
    body = {"error": {"code": code, "message": str(exc.detail), "details": None}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 for a database that is down, restarting, full or out of connections; else 500."""
    if not (isinstance(exc, OperationalError | PoolTimeoutError) or is_transient(exc)):
        return await _internal_error(request, exc)
    log.warning("database unavailable: %s", getattr(exc, "orig", None) or exc)
    return _error_response(
        ServiceUnavailableError(
            "the database is unavailable; retry shortly", code="database_unavailable"
        )
    )


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    body = {
        "error": {"code": "internal_error", "message": "internal server error", "details": None}
    }
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DfpError, _dfp_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(Exception, _internal_error)
