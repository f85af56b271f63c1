"""Queries on the api_keys table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from dfp.storage.models import ApiKey

_KEYS = cast(Table, ApiKey.__table__)
# Built once: every authenticated request runs it (see the experiments repository).
_CREDENTIALS = select(_KEYS.c.owner, _KEYS.c.secret_hash, _KEYS.c.revoked_at).where(
    _KEYS.c.id == bindparam("key_id")
)


def get(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


class Credentials(NamedTuple):
    owner: str
    secret_hash: str
    revoked_at: datetime | None


def credentials(session: Session, key_id: str) -> Credentials | None:
    """What authentication needs of a key, without loading it as an object."""
    row = session.execute(_CREDENTIALS, {"key_id": key_id}).one_or_none()
    return None if row is None else Credentials(*row)


def add(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key


def list_keys(session: Session, owner: str | None = None) -> Sequence[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.owner, ApiKey.created_at)
    if owner is not None:
        query = query.where(ApiKey.owner == owner)
    return session.scalars(query).all()
