"""The OpenAPI document's shared parts: response headers, non-JSON bodies, error components.

Routes declare errors with `api.errors.error_responses(...)`, headers with the constants here,
and non-JSON bodies with `file_response(...)` plus `response_class=Response` (so FastAPI does
not also declare `application/json` for them); `install(app)` adds the error components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.errors import error_schemas

LOCATION_HEADER = {
    "Location": {
        "description": "The path of the experiment just submitted",
        "schema": {"type": "string"},
    }
}
IDEMPOTENT_REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` when an earlier submission with this Idempotency-Key and body "
        "was returned instead of a new one",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
CONTENT_DISPOSITION_HEADER = {
    "Content-Disposition": {
        "description": "`attachment` with a file name",
        "schema": {"type": "string"},
    }
}


def file_response(
    media_type: str,
    description: str,
    *,
    binary: bool = False,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A 200 entry for a body that is not JSON: text (CSV, Prometheus) or bytes (PNG)."""
    schema: dict[str, Any] = {"type": "string"}
    if binary:
        schema["format"] = "binary"
    response: dict[str, Any] = {
        "description": description,
        "content": {media_type: {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def install(app: FastAPI) -> None:
    """Build the document once, with the components every error response refers to."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(error_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
