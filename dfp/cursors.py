"""Keyset pagination cursors: the (created_at, id) of a page's last row, opaque to clients."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

from dfp.errors import InvalidRequestError


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """A page's continuation: the (created_at, id) key of its last row (experiments, datasets)."""
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, job_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        at = datetime.fromisoformat(created_at)
        if at.tzinfo is None:
            raise ValueError("a cursor's time has a zone")
        return at.astimezone(UTC), uuid.UUID(job_id)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequestError(
            "cursor: not a cursor this server issued", details={"field": "cursor"}
        ) from exc
