"""What the app holds for its lifetime: settings, database, dispatcher, schema gate, metrics."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from api.rate_limit import RateLimiter
from dfp.errors import ServiceUnavailableError
from dfp.queues.dispatch import CeleryDispatcher
from dfp.settings import Settings
from dfp.storage.database import Database
from dfp.storage.migrate import SchemaState, schema_state

log = logging.getLogger("api")

SCHEMA_RECHECK_SECONDS = 5.0


class SchemaGate:
    """Refuses to serve while the database schema is behind the code; notices an upgrade."""

    def __init__(self, db: Database, recheck_seconds: float = SCHEMA_RECHECK_SECONDS) -> None:
        self.db = db
        self.recheck_seconds = recheck_seconds
        self.state: SchemaState | None = None
        self.error: str | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    @property
    def is_current(self) -> bool:
        return self.state is not None and self.state.is_current

    def check(self) -> SchemaState | None:
        """Read the revision now (None and `error` set if the database is unreachable)."""
        try:
            state = schema_state(self.db.engine)
        except Exception as exc:
            self.error = f"database unreachable: {type(exc).__name__}: {exc}".splitlines()[0]
            self._checked_at = time.monotonic()
            return None
        if not state.is_current and (self.state is None or self.state.is_current):
            log.error("refusing to serve: %s", state.describe())
        self.state, self.error = state, None
        self._checked_at = time.monotonic()
        return state

    def require(self) -> None:
        """Raise 503 unless the schema is at head (re-reading it at most every few seconds)."""
        if self.state is not None and self.state.is_current:
            return
        with self._lock:
            if time.monotonic() - self._checked_at >= self.recheck_seconds:
                self.check()
        if self.state is not None and self.state.is_current:
            return
        if self.state is None:
            raise ServiceUnavailableError(
                self.error or "database unreachable", code="database_unavailable"
            )
        raise ServiceUnavailableError(self.state.describe(), code="schema_outdated")


@dataclass
class AppState:
    settings: Settings
    db: Database
    dispatcher: CeleryDispatcher
    schema: SchemaGate
    rate_limiter: RateLimiter
