"""Riding out a short database outage in a worker's claims and final writes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from dfp.storage.database import is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds between attempts of a claim or a final write while the database is unreachable.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def retrying(write: Callable[[], T], *, what: str, delays: tuple[float, ...] = RETRY_DELAYS) -> T:
    """A claim or final write survives a short database outage; the work it records took long."""
    for delay in delays:
        try:
            return write()
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            log.warning("%s: database unavailable (%s); retrying in %s s", what, exc, delay)
            time.sleep(delay)
    return write()
