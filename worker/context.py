"""Per-process resources of a worker: settings, database, dispatcher. Never shared across fork."""

from __future__ import annotations

import os
import socket
import weakref
from dataclasses import dataclass

from celery import Celery
from celery.signals import worker_process_init

from dfp.settings import Settings, get_settings
from dfp.storage.database import Database
from worker.dispatch import CeleryDispatcher

_databases: weakref.WeakSet[Database] = weakref.WeakSet()


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    dispatcher: CeleryDispatcher

    @property
    def worker_name(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"


_context: WorkerContext | None = None


def open_database(settings: Settings) -> Database:
    """A database handle that is dropped (without closing the parent's sockets) after a fork."""
    db = Database.from_settings(settings)
    _databases.add(db)
    return db


def worker_context(app: Celery) -> WorkerContext:
    """This process's context, created on first use (after any fork)."""
    global _context
    if _context is None:
        settings = get_settings()
        _context = WorkerContext(settings, open_database(settings), CeleryDispatcher(app))
    return _context


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    # A forked child must not use, or close, connections its parent opened.
    global _context
    for db in list(_databases):
        db.engine.dispose(close=False)
    _context = None
    # Load the engine (torch) now rather than in the first task; this never touches CUDA.
    import worker.execution  # noqa: F401
