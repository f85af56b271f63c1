"""Request dependencies: settings, database, unit of work, the authenticated owner."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.state import AppState
from dfp.errors import UnauthenticatedError
from dfp.keys.service import authenticate
from dfp.settings import Settings
from dfp.storage.database import Database, UnitOfWork

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="dfp_<id>_<secret>",
    description="An API key from `dfp keys create --owner NAME`.",
)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.dfp
    state.schema.require()
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_db(state: StateDep) -> Database:
    return state.db


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]


def get_uow(db: DatabaseDep) -> Iterator[UnitOfWork]:
    """The request's unit of work: committed when the route returns, rolled back if it raises."""
    with db.unit_of_work() as uow:
        yield uow


# scope="function": the commit happens before the response is sent, so a client that reads
# the Location header right away finds the job.
UowDep = Annotated[UnitOfWork, Depends(get_uow, scope="function")]


def current_owner(
    db: DatabaseDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The owner of the presented bearer key.

    It uses a short session of its own, so a long poll holds no database connection."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise UnauthenticatedError("missing API key: send 'Authorization: Bearer <key>'")
    with db.unit_of_work() as uow:
        owner = authenticate(uow.session, credentials.credentials)
    if owner is None:
        raise UnauthenticatedError("invalid or revoked API key")
    return owner


OwnerDep = Annotated[str, Depends(current_owner)]
