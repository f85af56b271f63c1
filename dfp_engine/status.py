"""The status vocabulary of runs and jobs, and the rule that derives a job's status from its runs'.

Defined once: the database's check constraint, the public API's enum, the engine's results and
every terminal/unfinished test derive from `Status`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class Status(StrEnum):
    """Where a run or a job stands; the last three are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
UNFINISHED_STATUSES = (Status.QUEUED, Status.RUNNING)


def aggregate_status(statuses: Sequence[str]) -> Status:
    """A job's status from its runs': once all are terminal, cancelled if any run was, else
    failed if any failed, else succeeded; queued while every run is; running otherwise."""
    if statuses and all(status in TERMINAL_STATUSES for status in statuses):
        for status in (Status.CANCELLED, Status.FAILED):
            if status in statuses:
                return status
        return Status.SUCCEEDED
    if all(status == Status.QUEUED for status in statuses):
        return Status.QUEUED
    return Status.RUNNING
