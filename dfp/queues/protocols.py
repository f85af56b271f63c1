"""What services need of the queue, as protocols (`dfp.queues.dispatch` implements them)."""

from __future__ import annotations

from typing import Protocol


class RunDispatcher(Protocol):
    """Sends the task that executes one run."""

    def send_run(self, run_id: int, queue: str) -> None: ...


class QueueProbe(Protocol):
    def depth(self, queue: str) -> int:
        """Messages waiting in `queue` (raises if the broker cannot be reached)."""
        ...
