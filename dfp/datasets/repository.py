"""Queries on datasets; commits belong to the caller's unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from dfp.storage.models import Dataset, Job
from dfp_engine.status import UNFINISHED_STATUSES


def get(
    session: Session, dataset_id: uuid.UUID, owner: str, *, lock: bool = False
) -> Dataset | None:
    """The owner's dataset; `lock` holds it (FOR UPDATE) so a delete and a use serialise."""
    query = select(Dataset).where(Dataset.id == dataset_id, Dataset.owner == owner)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def by_sha256(session: Session, owner: str, sha256: str) -> Dataset | None:
    query = select(Dataset).where(Dataset.owner == owner, Dataset.sha256 == sha256)
    return session.scalars(query).one_or_none()


def list_page(
    session: Session, owner: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> Sequence[Dataset]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Dataset).where(Dataset.owner == owner)
    if after is not None:
        at, last = after
        query = query.where(
            or_(Dataset.created_at < at, and_(Dataset.created_at == at, Dataset.id < last))
        )
    query = query.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit)
    return session.scalars(query).all()


def in_use(session: Session, dataset_id: uuid.UUID) -> bool:
    """Whether an unfinished job reads the dataset."""
    query = select(
        exists().where(Job.dataset_id == dataset_id, Job.status.in_(UNFINISHED_STATUSES))
    )
    return bool(session.scalar(query))
