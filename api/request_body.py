"""Request bodies are checked before any route parses them: size (413), media type (415), UTF-8
and nesting depth (422). Each refusal uses the shared error shape. File uploads are the one
exception: they stream to their route, which limits them as they arrive.

Nothing the API accepts nests deeper than a few levels (a sweep over δ grids is five); a
deeply nested document would only cost recursion in every parser and validator after this.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dfp.errors import (
    DfpError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

MAX_JSON_DEPTH = 32


def is_json_media_type(content_type: str) -> bool:
    """application/json or application/<anything>+json, in UTF-8 if a charset is named."""
    media_type, _, parameters = content_type.partition(";")
    kind = media_type.strip().lower()
    if not (
        kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))
    ):
        return False
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            return False
    return True


# The web UI's forms post these; every other route takes JSON only.
FORM_MEDIA_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
FORM_PATH_PREFIX = "/ui/"


def is_form_media_type(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() in FORM_MEDIA_TYPES


def nesting_exceeds(document: Any, limit: int) -> bool:
    """Whether lists and objects in a parsed JSON document nest deeper than `limit`."""
    level = [document]
    for _ in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, list | dict)
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, list | dict)
        ]
        if not level:
            return False
    return True


def check_json_body(body: bytes) -> None:
    """Raise InvalidRequestError for a body that is not UTF-8 or nests too deeply.

    Syntax errors are left to the route, which reports where the document broke off."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"request body: not valid UTF-8 (byte {exc.start})", details={"field": "request body"}
        ) from None
    try:
        document = json.loads(text)
    except RecursionError:
        document = None
        too_deep = True
    except ValueError:
        return
    else:
        too_deep = nesting_exceeds(document, MAX_JSON_DEPTH)
    if too_deep:
        raise InvalidRequestError(
            f"request body: JSON nested deeper than {MAX_JSON_DEPTH} levels",
            details={"field": "request body", "max_depth": MAX_JSON_DEPTH},
        )


class RequestBodyGuard:
    """ASGI middleware: refuses oversized, non-JSON or pathological bodies before routing."""

    def __init__(self, app: ASGIApp, max_bytes: int, uploads: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # POST paths that take a file instead of JSON, and their own size limit: their bodies
        # stream through untouched (the route parses and limits them as they arrive).
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        declared = headers.get("content-length")
        length = int(declared) if declared and declared.isdigit() else None
        if not chunked and not length:
            await self.app(scope, receive, send)  # no body: nothing to check or buffer
            return
        upload_limit = self.uploads.get(scope["path"]) if scope["method"] == "POST" else None
        if upload_limit is not None:
            if length is not None and length > upload_limit:
                error = PayloadTooLargeError(
                    f"request body larger than {upload_limit} bytes (DFP_MAX_DATASET_BYTES)",
                    details={"max_bytes": upload_limit},
                )
                await JSONResponse(error.to_body(), status_code=error.status_code)(
                    scope, receive, send
                )
                return
            await self.app(scope, receive, send)
            return
        try:
            if length is not None and length > self.max_bytes:
                raise self._too_large()
            content_type = headers.get("content-type", "")
            form = str(scope["path"]).startswith(FORM_PATH_PREFIX) and is_form_media_type(
                content_type
            )
            if not form and not is_json_media_type(content_type):
                shown = content_type or "none"
                raise UnsupportedMediaTypeError(
                    f"content type '{shown}' is not supported: send JSON with "
                    "'Content-Type: application/json'",
                    details={"content_type": content_type or None},
                )
            body = await self._read(receive)
            if body is None:
                return  # the client went away
            if not form:
                check_json_body(body)
        except DfpError as exc:
            await JSONResponse(exc.to_body(), status_code=exc.status_code)(scope, receive, send)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body larger than {self.max_bytes} bytes (DFP_MAX_BODY_BYTES)",
            details={"max_bytes": self.max_bytes},
        )
