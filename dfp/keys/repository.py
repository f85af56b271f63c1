"""Queries on the api_keys table."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from dfp.storage.models import ApiKey


def get(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def add(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key


def list_keys(session: Session, owner: str | None = None) -> Sequence[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.owner, ApiKey.created_at)
    if owner is not None:
        query = query.where(ApiKey.owner == owner)
    return session.scalars(query).all()
