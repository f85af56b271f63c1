"""Request dependencies: the app state and the caller, whose key (or browser session) is
checked in the request's own transaction.

The dependencies themselves do no I/O, so a request costs one hop to the thread pool: the
route body opens the unit of work, authenticates, does its work and commits, all in one go.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.rate_limit import bucket_of
from api.state import AppState
from dfp.errors import ForbiddenError, InvalidRequestError, RateLimitedError, UnauthenticatedError
from dfp.keys.service import authenticate
from dfp.keys.sessions import SessionToken, verify_session
from dfp.storage.database import UnitOfWork

T = TypeVar("T")

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="dfp_<id>_<secret>",
    description="An API key from `dfp keys create --owner NAME`.",
)


async def get_state(request: Request) -> AppState:
    """The app's state, once its database schema is known to be at head (else 503)."""
    state: AppState = request.app.state.dfp
    if not state.schema.is_current:
        await run_in_threadpool(state.schema.require)
    return state


StateDep = Annotated[AppState, Depends(get_state)]


SESSION_COOKIE = "dfp_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    """Whoever sent the request, with the key or browser session they presented (checked when
    the work starts). A session's state-changing request must carry its CSRF token."""

    state: AppState
    key: str | None = None
    browser: SessionToken | None = None
    csrf_required: bool = False
    csrf_token: str | None = None

    def owner(self, session: Session) -> str:
        if self.browser is None:
            owner = authenticate(session, self.key or "")
            if owner is None:
                raise UnauthenticatedError("invalid or revoked API key")
            return owner
        verified = verify_session(session, self.browser)
        if verified is None:
            raise UnauthenticatedError("session expired or its API key revoked: log in again")
        if self.csrf_required and not verified.accepts(self.csrf_token):
            raise ForbiddenError(
                "missing or wrong CSRF token for this session",
                code="csrf_failed",
                details={"field": CSRF_HEADER},
            )
        return verified.owner

    @contextmanager
    def transaction(self) -> Iterator[tuple[UnitOfWork, str]]:
        """The request's unit of work and the key's owner; commits when the block ends."""
        with self.state.db.unit_of_work() as uow:
            yield uow, self.owner(uow.session)

    def read(self, work: Callable[[Session, str], T]) -> T:
        """Run `work(session, owner)` without a transaction (single reads, long polls)."""
        with self.state.db.reading() as session:
            return work(session, self.owner(session))


async def rate_limit(state: AppState, credential: str) -> None:
    """Raise 429 if the key (or session) behind `credential` has used up its requests."""
    wait = await state.rate_limiter.acquire(bucket_of(credential))
    if wait is not None:
        per_minute = state.settings.rate_limit_per_minute
        raise RateLimitedError(
            f"too many requests with this key: at most {per_minute} per minute "
            f"(DFP_RATE_LIMIT_PER_MINUTE); retry after {math.ceil(wait)} s",
            retry_after=wait,
            details={"limit_per_minute": per_minute, "retry_after": math.ceil(wait)},
        )


def browser_caller(state: AppState, request: Request) -> Caller | None:
    """The caller of a request that carries the web UI's session cookie, if it does."""
    browser = SessionToken.parse(request.cookies.get(SESSION_COOKIE, ""))
    if browser is None:
        return None
    csrf = request.headers.get(CSRF_HEADER)
    return Caller(
        state, browser=browser, csrf_required=request.method not in SAFE_METHODS, csrf_token=csrf
    )


async def get_caller(
    state: StateDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        # The web UI's pages call the same routes with their session cookie.
        caller = browser_caller(state, request)
        if caller is None or caller.browser is None:
            raise UnauthenticatedError("missing API key: send 'Authorization: Bearer <key>'")
        # A key's browser sessions share one bucket, named by the key's id.
        await rate_limit(state, caller.browser.key_id)
        return caller
    # Limited before any database work; the key itself is checked in the request's transaction.
    await rate_limit(state, credentials.credentials)
    return Caller(state, key=credentials.credentials)


CallerDep = Annotated[Caller, Depends(get_caller)]


# Route (by id) -> its query parameter names; routes live as long as the app.
_query_names: dict[int, frozenset[str]] = {}


def _query_parameters(dependant: Dependant) -> set[str]:
    """The query parameter names of a route and of its dependencies."""
    names = {str(param.alias) for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_parameters(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    """A query parameter the route does not take is an error, not silently ignored: a
    misspelt filter (`?stauts=failed`) would otherwise return everything."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    if route.path.startswith("/ui"):
        return  # the web UI's pages read their own query strings and show what is wrong
    known = _query_names.get(id(route))
    if known is None:
        known = _query_names[id(route)] = frozenset(_query_parameters(route.dependant))
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        raise InvalidRequestError(
            f"{unknown[0]!r} is not a query parameter of this operation (accepted: {accepted})",
            details={"field": unknown[0], "unknown": unknown, "accepted": sorted(known)},
        )
