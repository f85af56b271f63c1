"""The reconciler's queries: runs whose worker is gone, and queued runs whose message may be.

Each returns candidates only; `dfp.experiments.lifecycle` re-checks every one under its job's
lock before acting on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dfp.experiments.lifecycle import HolderCheck
from dfp.settings import Settings
from dfp.storage.models import Run


def lost_runs(
    session: Session, settings: Settings, now: datetime, holder_alive: HolderCheck | None = None
) -> list[int]:
    """Running runs whose worker stopped heartbeating or is known to be gone."""
    stale = now - timedelta(seconds=settings.heartbeat_timeout)
    # Running runs number no more than worker processes: few enough to check each holder.
    query = select(Run.id, Run.worker, Run.heartbeat_at).where(Run.status == "running")
    return [
        run_id
        for run_id, worker, beat in session.execute(query.order_by(Run.heartbeat_at))
        if beat is None
        or beat < stale
        or (worker is not None and holder_alive is not None and not holder_alive(worker))
    ]


def queued_counts(session: Session) -> dict[str, int]:
    query = select(Run.queue, func.count()).where(Run.status == "queued").group_by(Run.queue)
    return {queue: int(count) for queue, count in session.execute(query)}


def unsent_candidates(
    session: Session, queue: str, settings: Settings, now: datetime, limit: int
) -> Sequence[int]:
    """The oldest queued runs in `queue` waiting longer than `requeue_after`."""
    cutoff = now - timedelta(seconds=settings.requeue_after)
    query = (
        select(Run.id)
        .where(Run.status == "queued", Run.queue == queue, Run.enqueued_at < cutoff)
        .order_by(Run.enqueued_at)
        .limit(limit)
    )
    return session.scalars(query).all()
