"""The database handle and the unit of work: one transaction, then the actions it allowed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dfp.settings import Settings

log = logging.getLogger(__name__)

# SQLSTATE classes that say "try again": connection exceptions, shutdowns and restarts,
# too many connections, serialization failures and deadlocks.
TRANSIENT_SQLSTATES = ("08", "57P", "53300", "40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may pass if the same work is tried again shortly (an outage,
    a restart, a lost connection) rather than failing the same way (a full disk, bad data)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)  # None: no server answered (or SQLite)
    return sqlstate is None or str(sqlstate).startswith(TRANSIENT_SQLSTATES)


def create_db_engine(
    url: str, *, pool_size: int = 5, max_overflow: int = 10, connect_timeout: float = 5.0
) -> Engine:
    """An engine for PostgreSQL (psycopg 3) or SQLite, configured for concurrent workers."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,
        connect_args={"connect_timeout": max(1, round(connect_timeout))},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; foreign keys make deletes cascade.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    """An engine plus a session factory; create one per process (never share across fork)."""

    def __init__(
        self, url: str, *, pool_size: int = 5, max_overflow: int = 10, connect_timeout: float = 5.0
    ) -> None:
        self.url = url
        self.engine = create_db_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, connect_timeout=connect_timeout
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        # Single reads need no transaction: no BEGIN/COMMIT round trips.
        self._reads = sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            settings.resolved_database_url(),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            connect_timeout=settings.db_connect_timeout,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self._sessions())

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads that need no transaction (each statement commits on its own)."""
        session = self._reads()
        try:
            yield session
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


class UnitOfWork:
    """One transaction. Services write through `session` and never commit; the owner of the
    unit (a request, a task) commits once. `after_commit` actions (enqueueing a task) run only
    once the commit has succeeded, so a task never references a row that does not exist."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._after_commit: list[Callable[[], None]] = []
        self._after_rollback: list[Callable[[], None]] = []

    def after_commit(self, action: Callable[[], None]) -> None:
        self._after_commit.append(action)

    def after_rollback(self, action: Callable[[], None]) -> None:
        """Undo a side effect outside the database (a file written) if the unit rolls back."""
        self._after_rollback.append(action)

    def commit(self) -> None:
        try:
            self.session.commit()
        except BaseException:
            self._undo()
            raise
        self._after_rollback.clear()
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            try:
                action()
            except Exception:
                # The rows are committed; the reconciler re-sends whatever did not go out.
                log.exception("post-commit action failed; the reconciler will retry it")

    def rollback(self) -> None:
        self._after_commit.clear()
        try:
            self.session.rollback()
        finally:
            self._undo()

    def _undo(self) -> None:
        actions, self._after_rollback = self._after_rollback, []
        for action in actions:
            try:
                action()
            except Exception:
                log.exception("undoing a rolled-back side effect failed")

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                self.rollback()
        finally:
            self.session.close()
