"""Per-process resources of a worker: settings, database, dispatcher. Never shared across fork."""

from __future__ import annotations

import os
import socket
import weakref
from dataclasses import dataclass
from pathlib import Path

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


def holder_alive(worker: str) -> bool:
    """False only for a worker process (`host:pid`, see `worker_name`) of this host that is gone.

    A pid of another host, or one that was reused, counts as alive: such runs wait for their
    heartbeat to go stale instead."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, under another user
    return not _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    # A killed pool process lingers as a zombie until its parent reaps it.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    # A forked child must not use, or close, connections its parent opened.
    global _context
    for db in list(_databases):
        db.engine.dispose(close=False)
    _context = None
    # Load the engine (torch) now rather than in the first task; this never touches CUDA.
    import worker.execution  # noqa: F401
