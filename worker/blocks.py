"""Executing one row block of a fanned-out analysis (`dfp.execute_block`): claim it, compute its
partial sums from the operand in the fan-out store, store them with the block's end.

A `BlockMonitor` heartbeats the block and stops the work (at the next strip of tiles) once the
block is no longer wanted: the job is being cancelled, its lease was lost, or the run attempt
that fanned it out is over. A block whose worker shuts down is handed back to the queue.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from dfp.fanout import lifecycle
from dfp.fanout.lifecycle import BlockLease
from dfp.fanout.plan import FanoutPlan
from dfp.fanout.store import OPERAND_PART, VALUES_PART, part_store
from dfp_engine.fanout import BlockPartial, block_partial
from dfp_engine.status import Status
from worker import shutdown
from worker.context import WorkerContext, holder_alive
from worker.retry import retrying

log = logging.getLogger(__name__)

# Why a block stopped before its end (BlockMonitor.stop_reason).
NOT_WANTED = "not_wanted"  # cancelled, or its run attempt is over
SHUTDOWN = "shutdown"


class BlockStoppedError(Exception):
    """Raised through the tiles when the block's monitor says stop."""


class BlockMonitor:
    """Heartbeats a block every `interval` s and reads whether it is still wanted."""

    def __init__(self, ctx: WorkerContext, lease: BlockLease) -> None:
        self.ctx = ctx
        self.lease = lease
        self.interval = min(ctx.settings.progress_seconds, ctx.settings.heartbeat_seconds)
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dfp-block-monitor", daemon=True)

    def __enter__(self) -> BlockMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, 2 * self.interval))

    def check(self, _fraction: float = 0.0) -> None:
        """The tiles' progress callback: raise once the block should stop."""
        if self.stop_reason is None and shutdown.requested():
            self.stop_reason = SHUTDOWN
        if self.stop_reason is not None:
            raise BlockStoppedError(self.stop_reason)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.ctx.db.unit_of_work() as uow:
                    reply = lifecycle.heartbeat(uow.session, self.lease)
            except Exception:
                log.warning("heartbeat of row block %s failed; retrying", self.lease.block_id)
                continue
            if reply.stop and self.stop_reason is None:
                self.stop_reason = NOT_WANTED


@dataclass(frozen=True)
class Operand:
    """What every block of one fan-out computes from (dfp_engine.fanout.block_partial)."""

    fanout_id: uuid.UUID
    plan: FanoutPlan
    z: np.ndarray  # (n, d), in memory or memory-mapped as the plan says
    values: np.ndarray  # (n, k) float64


class _OperandCache:
    """The operand of the fan-out this process last worked on: a worker that takes several
    blocks of one fan-out fetches it once."""

    def __init__(self) -> None:
        self.current: Operand | None = None
        self._files = ExitStack()

    def get(self, ctx: WorkerContext, fanout_id: uuid.UUID) -> Operand:
        if self.current is not None and self.current.fanout_id == fanout_id:
            return self.current
        self.clear()
        store = part_store(ctx.db, ctx.settings)
        with ctx.db.unit_of_work() as uow:
            plan = lifecycle.plan_of(uow.session, fanout_id)
            if plan is None:
                raise FileNotFoundError(f"fan-out {fanout_id} is gone")
            values = store.read_array(uow.session, fanout_id, VALUES_PART)
            if plan.stream:
                path = self._files.enter_context(
                    store.local_copy(uow.session, fanout_id, OPERAND_PART)
                )
                z = np.load(path, mmap_mode="r")
            else:
                z = store.read_array(uow.session, fanout_id, OPERAND_PART)
        self.current = Operand(fanout_id, plan, z, values)
        return self.current

    def clear(self) -> None:
        self.current = None
        self._files.close()
        self._files = ExitStack()


_operands = _OperandCache()


def execute_block(ctx: WorkerContext, block_id: int) -> None:
    """The whole task body: every way it stops leaves the block ended, handed back or lost."""
    lease = retrying(lambda: claim(ctx, block_id), what=f"claim of row block {block_id}")
    if lease is None:
        log.info("row block %s: nothing to do (taken, finished or no longer wanted)", block_id)
        return
    try:
        partial = compute(ctx, lease, _operands.get(ctx, lease.fanout_id))
    except (SystemExit, KeyboardInterrupt):
        _end(ctx, lease, None, "its worker was stopped")
        raise
    except Exception as exc:
        log.exception("row block %s failed", block_id)
        _end(ctx, lease, Status.FAILED, f"{type(exc).__name__}: {exc}")
        return
    if partial is not None:
        stored = retrying(lambda: store_partial(ctx, lease, partial), what="a block's partial")
        log.info("row block %s: %s", block_id, "stored" if stored else "lease lost; discarded")


def claim(ctx: WorkerContext, block_id: int) -> BlockLease | None:
    """The block's lease for this process, or None when there is nothing to do."""
    with ctx.db.unit_of_work() as uow:
        return lifecycle.claim_block(
            uow.session,
            block_id,
            worker=ctx.worker_name,
            settings=ctx.settings,
            holder_alive=holder_alive,
        )


def compute(
    ctx: WorkerContext,
    lease: BlockLease,
    operand: Operand,
    on_progress: Callable[[float], None] | None = None,
) -> BlockPartial | None:
    """The leased block's partial sums, or None when its monitor stopped it (and it was ended
    or handed back). `on_progress(fraction)` sees the block's progress; what it raises passes
    through."""
    with BlockMonitor(ctx, lease) as monitor:

        def progress(fraction: float) -> None:
            monitor.check(fraction)
            if on_progress is not None:
                on_progress(fraction)

        try:
            return block_partial(
                operand.z,
                operand.values,
                operand.plan.deltas,
                operand.plan.blocks,
                lease.block,
                threads=operand.plan.threads,
                on_progress=progress,
            )
        except BlockStoppedError:
            if monitor.stop_reason == SHUTDOWN:
                _end(ctx, lease, None, "its worker shut down")
            else:
                _end(ctx, lease, Status.CANCELLED, "stopped: its analysis no longer needs it")
            return None


def _end(ctx: WorkerContext, lease: BlockLease, status: Status | None, message: str) -> None:
    """End the block as `status`, or with None hand it back to the queue."""
    try:
        with ctx.db.unit_of_work() as uow:
            if status is None:
                lifecycle.release_block(uow.session, lease)
            else:
                lifecycle.end_block(uow.session, lease, status, message)
    except Exception:
        log.exception("row block %s: could not record its end (%s)", lease.block_id, message)


def store_partial(ctx: WorkerContext, lease: BlockLease, partial: BlockPartial) -> bool:
    """The block's partial sums and its end, in one transaction; False if the lease was lost."""
    store = part_store(ctx.db, ctx.settings)
    with ctx.db.unit_of_work() as uow:
        if not lifecycle.finish_block(uow.session, lease):
            return False
        store.write_array(uow, lease.fanout_id, lease.block, partial.sums)
    return True
