"""Graceful shutdown: a worker told to stop hands its running runs back to the queue.

On SIGTERM Celery's main process starts a warm shutdown, which waits for running tasks; a run
can take hours, longer than any orchestrator waits before SIGKILL. So the main process raises
a flag it shares with its pool processes (made before they fork); a running task sees it at its
next cancel check, stops at the epoch boundary and requeues its run for another worker. A pool
process that receives SIGTERM itself exits through SystemExit, and its task requeues the run on
the way out (see worker.execution).
"""

from __future__ import annotations

import ctypes
import multiprocessing

from celery.signals import worker_shutting_down

# Shared memory inherited across fork; one byte written from a signal handler, no locks.
_requested = multiprocessing.RawValue(ctypes.c_bool, False)


def requested() -> bool:
    """Whether this worker (or its main process) is shutting down."""
    return bool(_requested.value)


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: object) -> None:
    _requested.value = True
