"""Per-process resources of a worker: settings, database, dispatcher. Never shared across fork."""

from __future__ import annotations

import os
import socket
import weakref
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from celery.signals import worker_process_init

from dfp.queues.dispatch import CeleryDispatcher
from dfp.settings import Settings, get_settings
from dfp.storage.database import Database

_databases: weakref.WeakSet[Database] = weakref.WeakSet()
# The host's own pid namespace (PROC_PID_INIT_INO): pids there need no qualifier.
_HOST_PID_NAMESPACE = "4026531836"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return _HOST_PID_NAMESPACE


def process_name(pid: int) -> str:
    """`host:pid`, plus `:namespace` inside a container, whose pids another container with the
    same host name (host networking) would not see."""
    namespace = _pid_namespace()
    suffix = "" if namespace == _HOST_PID_NAMESPACE else f":{namespace}"
    return f"{socket.gethostname()}:{pid}{suffix}"


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    dispatcher: CeleryDispatcher

    @property
    def worker_name(self) -> str:
        return process_name(os.getpid())


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
    """False only for a worker process (see `process_name`) that this process could see, and
    that is gone. A process of another host or pid namespace, or whose pid was reused, counts as
    alive: such runs wait for their heartbeat to go stale instead."""
    host_part = f"{socket.gethostname()}:"
    if not worker.startswith(host_part):
        return True
    pid, _, namespace = worker.removeprefix(host_part).partition(":")
    if (namespace or _HOST_PID_NAMESPACE) != _pid_namespace() or not pid.isdigit():
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
    import dfp_engine.runner  # noqa: F401
