"""Typed errors shared by the service and the client; each carries its HTTP status and code.

The API renders them as `{"error": {"code", "message", "details"}}`; the client turns such a
response back into the same class, so a script can `except NotFoundError:` on either side.
"""

from __future__ import annotations

from typing import Any


class DfpError(Exception):
    """Base of every error the service reports to a caller."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidRequestError(DfpError):
    status_code = 422
    code = "validation_error"


class LimitExceededError(InvalidRequestError):
    """A spec over one of the server's limits; `details.limit` names it."""

    code = "limit_exceeded"


class UnauthenticatedError(DfpError):
    status_code = 401
    code = "unauthenticated"


class ForbiddenError(DfpError):
    """A request the caller may not make as sent (a browser form without its CSRF token)."""

    status_code = 403
    code = "forbidden"


class NotFoundError(DfpError):
    status_code = 404
    code = "not_found"


class ConflictError(DfpError):
    status_code = 409
    code = "conflict"


class IdempotencyConflictError(ConflictError):
    code = "idempotency_conflict"


class ServiceUnavailableError(DfpError):
    status_code = 503
    code = "unavailable"


class PayloadTooLargeError(DfpError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(DfpError):
    status_code = 415
    code = "unsupported_media_type"


class RateLimitedError(DfpError):
    """Too many requests with one key; `retry_after` says how many seconds to wait."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


ERRORS_BY_CODE: dict[str, type[DfpError]] = {
    "limit_exceeded": LimitExceededError,
    "idempotency_conflict": IdempotencyConflictError,
}
ERRORS_BY_STATUS: dict[int, type[DfpError]] = {
    401: UnauthenticatedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}
