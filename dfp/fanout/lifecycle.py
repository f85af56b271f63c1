"""The life of a fan-out's row blocks: create, claim, heartbeat, finish, re-queue when lost.

A block's lease is its `attempts` number while it is `running`, exactly as a run's; a block is
worth computing only while the run attempt that fanned it out still holds its own lease. A
running block is lost when its heartbeat is older than `heartbeat_timeout`, or at once when a
process of the same host can tell its holder is gone; it is then re-queued (by the run that
fanned it out) or taken over (by its redelivered task), until `max_attempts` claims are spent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from dfp.experiments.lifecycle import HolderCheck, Lease
from dfp.fanout.plan import FanoutPlan
from dfp.settings import Settings
from dfp.storage.models import AnalysisBlock, AnalysisFanout, Job, Run
from dfp.storage.types import utcnow
from dfp_engine.status import Status

UNFINISHED = (Status.QUEUED.value, Status.RUNNING.value)


@dataclass(frozen=True)
class BlockLease:
    """A worker's claim on one block: valid while it runs with this attempt number and the
    run attempt that fanned it out still holds."""

    block_id: int
    fanout_id: uuid.UUID
    block: int
    attempt: int
    run_id: int
    run_attempt: int
    job_id: uuid.UUID

    def conditions(self) -> tuple[Any, ...]:
        return (
            AnalysisBlock.id == self.block_id,
            AnalysisBlock.attempts == self.attempt,
            AnalysisBlock.status == Status.RUNNING.value,
        )


@dataclass(frozen=True)
class BlockReply:
    lease_valid: bool
    stop: bool  # the job is being cancelled, or the run attempt that wanted the block is over


@dataclass(frozen=True)
class BlockState:
    block_id: int
    block: int
    status: str
    attempts: int
    worker: str | None
    heartbeat_at: datetime | None
    error_message: str | None


def create(
    session: Session, lease: Lease, label: str, plan: FanoutPlan
) -> tuple[uuid.UUID, list[int]]:
    """A fan-out of the leased run with its blocks queued: its id and the block ids."""
    fanout = AnalysisFanout(
        run_id=lease.run_id,
        run_attempt=lease.attempt,
        label=label[:200],
        n=plan.blocks.n,
        plan=plan.to_json(),
    )
    session.add(fanout)
    session.flush()
    count = len(plan.blocks.blocks)
    rows = [AnalysisBlock(fanout_id=fanout.id, block=b, attempts=0) for b in range(count)]
    session.add_all(rows)
    session.flush()
    return fanout.id, [row.id for row in rows]


def earlier_fanouts(session: Session, lease: Lease) -> list[uuid.UUID]:
    """Fan-outs of the leased run's earlier attempts (over, whatever state they were left in)."""
    query = select(AnalysisFanout.id).where(
        AnalysisFanout.run_id == lease.run_id, AnalysisFanout.run_attempt < lease.attempt
    )
    return list(session.scalars(query))


def delete_fanouts(session: Session, ids: Sequence[uuid.UUID]) -> None:
    if ids:
        session.execute(delete(AnalysisFanout).where(AnalysisFanout.id.in_(list(ids))))


def plan_of(session: Session, fanout_id: uuid.UUID) -> FanoutPlan | None:
    data = session.scalar(select(AnalysisFanout.plan).where(AnalysisFanout.id == fanout_id))
    return None if data is None else FanoutPlan.from_json(data)


def claim_block(
    session: Session,
    block_id: int,
    *,
    worker: str,
    settings: Settings,
    holder_alive: HolderCheck | None = None,
) -> BlockLease | None:
    """queued -> running, or take over a running block whose worker is lost.

    None when there is nothing to do: the block is finished, held by a live worker, or its
    fan-out is no longer wanted. A block past `max_attempts` claims is failed instead."""
    row = session.execute(
        select(AnalysisBlock, AnalysisFanout, Run.job_id, Job.cancel_requested)
        .join(AnalysisFanout, AnalysisFanout.id == AnalysisBlock.fanout_id)
        .join(Run, Run.id == AnalysisFanout.run_id)
        .join(Job, Job.id == Run.job_id)
        .where(
            AnalysisBlock.id == block_id,
            # the run attempt that made the fan-out still holds its lease
            Run.attempts == AnalysisFanout.run_attempt,
            Run.status == "running",
        )
    ).one_or_none()
    if row is None:
        return None
    block, fanout, job_id, cancel = row
    # Plain values: the UPDATE below refreshes the loaded objects.
    seen, index, holder = block.attempts, block.block, block.worker
    run_id, run_attempt = fanout.run_id, fanout.run_attempt
    if block.status not in UNFINISHED or cancel:
        return None
    now = utcnow()
    stale = now - timedelta(seconds=settings.heartbeat_timeout)
    lost = _lost(holder, stale, holder_alive)
    claimable = or_(
        AnalysisBlock.status == Status.QUEUED.value,
        and_(AnalysisBlock.status == Status.RUNNING.value, lost),
    )
    base = (AnalysisBlock.id == block_id, AnalysisBlock.attempts == seen, claimable)
    if seen >= settings.max_attempts:
        _end(session, base, Status.FAILED, _gave_up(index, seen), now)
        return None
    claimed = session.execute(
        update(AnalysisBlock)
        .where(*base)
        .values(
            status=Status.RUNNING.value,
            attempts=seen + 1,
            worker=worker[:255],
            started_at=now,
            heartbeat_at=now,
            error_message=None,
        )
    )
    if int(claimed.rowcount) != 1:  # type: ignore[attr-defined]
        return None
    return BlockLease(
        block_id=block_id,
        fanout_id=fanout.id,
        block=index,
        attempt=seen + 1,
        run_id=run_id,
        run_attempt=run_attempt,
        job_id=job_id,
    )


def _gave_up(block: int, attempts: int) -> str:
    return (
        f"row block {block} gave up after {attempts} attempts: the worker computing it "
        "stopped each time (killed, out of memory, shut down or lost)"
    )


def _lost(holder: str | None, stale: datetime, holder_alive: HolderCheck | None) -> Any:
    if holder is not None and holder_alive is not None and not holder_alive(holder):
        return or_(AnalysisBlock.heartbeat_at < stale, AnalysisBlock.worker == holder)
    return AnalysisBlock.heartbeat_at < stale


def next_queued(session: Session, fanout_id: uuid.UUID) -> int | None:
    """The lowest queued block of the fan-out (its id), if any."""
    query = (
        select(AnalysisBlock.id)
        .where(AnalysisBlock.fanout_id == fanout_id, AnalysisBlock.status == Status.QUEUED.value)
        .order_by(AnalysisBlock.block)
        .limit(1)
    )
    return session.scalar(query)


def heartbeat(session: Session, lease: BlockLease) -> BlockReply:
    """Record that the block's worker is alive; tell it to stop when it is no longer wanted."""
    beat = session.execute(
        update(AnalysisBlock).where(*lease.conditions()).values(heartbeat_at=utcnow())
    )
    wanted = session.execute(
        select(Job.cancel_requested)
        .join(Run, Run.job_id == Job.id)
        .where(
            Run.id == lease.run_id,
            Run.attempts == lease.run_attempt,
            Run.status == "running",
        )
    ).one_or_none()
    valid = int(beat.rowcount) == 1  # type: ignore[attr-defined]
    return BlockReply(lease_valid=valid, stop=not valid or wanted is None or bool(wanted[0]))


def finish_block(session: Session, lease: BlockLease) -> bool:
    """running -> succeeded; False when the lease was lost meanwhile (the partial is discarded)."""
    done = session.execute(
        update(AnalysisBlock)
        .where(*lease.conditions())
        .values(status=Status.SUCCEEDED.value, finished_at=utcnow(), heartbeat_at=utcnow())
    )
    return int(done.rowcount) == 1  # type: ignore[attr-defined]


def end_block(session: Session, lease: BlockLease, status: Status, message: str) -> bool:
    """End the leased block as `status` (failed, cancelled) with the reason."""
    return _end(session, lease.conditions(), status, message, utcnow())


def release_block(session: Session, lease: BlockLease) -> bool:
    """Hand the block back to the queue (its worker is shutting down)."""
    released = session.execute(
        update(AnalysisBlock).where(*lease.conditions()).values(status=Status.QUEUED.value)
    )
    return int(released.rowcount) == 1  # type: ignore[attr-defined]


def _end(
    session: Session, conditions: Sequence[Any], status: Status, message: str, now: datetime
) -> bool:
    ended = session.execute(
        update(AnalysisBlock)
        .where(*conditions)
        .values(status=status.value, finished_at=now, error_message=message)
    )
    return int(ended.rowcount) == 1  # type: ignore[attr-defined]


def block_states(session: Session, fanout_id: uuid.UUID) -> list[BlockState]:
    query = (
        select(
            AnalysisBlock.id,
            AnalysisBlock.block,
            AnalysisBlock.status,
            AnalysisBlock.attempts,
            AnalysisBlock.worker,
            AnalysisBlock.heartbeat_at,
            AnalysisBlock.error_message,
        )
        .where(AnalysisBlock.fanout_id == fanout_id)
        .order_by(AnalysisBlock.block)
    )
    return [BlockState(*row) for row in session.execute(query)]


def requeue_lost(
    session: Session,
    fanout_id: uuid.UUID,
    settings: Settings,
    holder_alive: HolderCheck | None,
    keep: str,
) -> list[int]:
    """Re-queue the fan-out's running blocks whose worker is lost (never those `keep` holds);
    a block past `max_attempts` claims is failed instead. The ids to send again."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.heartbeat_timeout)
    requeued: list[int] = []
    for state in block_states(session, fanout_id):
        if state.status != Status.RUNNING.value or state.worker == keep:
            continue
        if (state.heartbeat_at is None or state.heartbeat_at >= stale) and (
            state.worker is None or holder_alive is None or holder_alive(state.worker)
        ):
            continue
        same = (
            AnalysisBlock.id == state.block_id,
            AnalysisBlock.attempts == state.attempts,
            AnalysisBlock.status == Status.RUNNING.value,
        )
        if state.attempts >= settings.max_attempts:
            _end(session, same, Status.FAILED, _gave_up(state.block, state.attempts), now)
            continue
        moved = session.execute(
            update(AnalysisBlock).where(*same).values(status=Status.QUEUED.value)
        )
        if int(moved.rowcount) == 1:  # type: ignore[attr-defined]
            requeued.append(state.block_id)
    return requeued


def end_unfinished(session: Session, fanout_id: uuid.UUID, message: str) -> None:
    """Cancel every block still queued or running and close the fan-out."""
    now = utcnow()
    session.execute(
        update(AnalysisBlock)
        .where(AnalysisBlock.fanout_id == fanout_id, AnalysisBlock.status.in_(UNFINISHED))
        .values(status=Status.CANCELLED.value, finished_at=now, error_message=message)
    )
    session.execute(
        update(AnalysisFanout).where(AnalysisFanout.id == fanout_id).values(finished_at=now)
    )
