"""Queries on the api_keys table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from dfp.storage.models import ApiKey


def get(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def credentials(session: Session, key_id: str) -> Row[tuple[str, str, datetime | None]] | None:
    """(owner, secret_hash, revoked_at) of a key: what authentication needs, without an ORM load."""
    query = select(ApiKey.owner, ApiKey.secret_hash, ApiKey.revoked_at).where(ApiKey.id == key_id)
    return session.execute(query).one_or_none()


def add(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key


def list_keys(session: Session, owner: str | None = None) -> Sequence[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.owner, ApiKey.created_at)
    if owner is not None:
        query = query.where(ApiKey.owner == owner)
    return session.scalars(query).all()
