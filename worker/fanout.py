"""The run's side of a fan-out: an `ExactSums` for the engine that, for a large exact CPU
analysis, writes the operand to the fan-out store, sends one task per row block, computes
blocks itself while any are queued, re-queues blocks whose worker is lost, and reduces the
partial sums in block order (dfp.fanout; docs/method.md §2b).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfp.experiments.lifecycle import Lease
from dfp.fanout import lifecycle
from dfp.fanout.plan import FanoutPlan
from dfp.fanout.store import OPERAND_PART, VALUES_PART, part_store
from dfp_engine.captured import AnalysisCancelledError
from dfp_engine.fanout import BlockPartial, BlockPlan, PartialSum, plan_blocks, write_operand
from dfp_engine.lowpass import LowpassSums, lowpass_sums
from dfp_engine.status import Status
from worker.blocks import Operand, claim, compute
from worker.context import WorkerContext, holder_alive

log = logging.getLogger(__name__)
# Seconds between looks at the blocks other workers hold, once none is left to take.
POLL_SECONDS = 0.25


class FanoutFailedError(RuntimeError):
    """A row block failed, or was lost more often than `max_attempts` allows."""


class FanOut:
    """Exact low-pass sums for the leased run: local below `fanout_min_rows` rows or off the
    CPU, fanned out over the run's queue at or above it."""

    def __init__(self, ctx: WorkerContext, lease: Lease, should_cancel: Callable[[], bool]) -> None:
        self.ctx = ctx
        self.lease = lease
        self.should_cancel = should_cancel
        self.count = 0

    def __call__(
        self,
        z: np.ndarray,
        values: np.ndarray,
        deltas: Sequence[float],
        *,
        on_progress: Callable[[float], None] | None = None,
        **options: Any,
    ) -> LowpassSums:
        settings = self.ctx.settings
        local = (
            str(options.get("device", "cpu")) != "cpu"
            or options.get("backend") == "torch"
            or len(z) < settings.fanout_min_rows
        )
        if local:
            return lowpass_sums(z, values, deltas, on_progress=on_progress, **options)
        self.count += 1
        plan = plan_blocks(len(z), len(deltas), settings.fanout_blocks, options.get("block_size"))
        with tempfile.TemporaryDirectory(prefix="dfp-fanout-") as folder:
            operand, fanout_id = self._publish(Path(folder), z, values, list(deltas), plan, options)
            try:
                return self._compute(operand, on_progress)
            finally:
                self._close(fanout_id)

    def _publish(
        self,
        folder: Path,
        z: np.ndarray,
        values: np.ndarray,
        deltas: list[float],
        plan: BlockPlan,
        options: dict[str, Any],
    ) -> tuple[Operand, uuid.UUID]:
        """Write the operand, record the fan-out and its blocks, send the blocks' tasks."""
        ctx, lease = self.ctx, self.lease
        z_path = folder / "z.npy"
        write_operand(z, options.get("scale"), z_path, options.get("dtype", np.float32))
        targets = np.ascontiguousarray(values, dtype=np.float64)
        threads = ctx.settings.fanout_threads or len(os.sched_getaffinity(0))
        fanout_plan = FanoutPlan.build(plan, deltas, threads, z_path.stat().st_size)
        store = part_store(ctx.db, ctx.settings)
        label = f"run {lease.run_id} attempt {lease.attempt}: exact analysis {self.count}"
        with ctx.db.unit_of_work() as uow:
            # Fan-outs of earlier attempts are over: their bytes go now.
            earlier = lifecycle.earlier_fanouts(uow.session, lease)
            for old in earlier:
                store.remove(uow, old)
            lifecycle.delete_fanouts(uow.session, earlier)
            fanout_id, block_ids = lifecycle.create(uow.session, lease, label, fanout_plan)
            store.write(uow, fanout_id, OPERAND_PART, z_path)
            store.write_array(uow, fanout_id, VALUES_PART, targets)
            uow.after_commit(lambda: self._send(block_ids))
        log.info("%s: %s rows in %s row blocks", label, plan.n, len(plan.blocks))
        z_operand = np.load(z_path, mmap_mode="r") if fanout_plan.stream else np.load(z_path)
        return Operand(fanout_id, fanout_plan, z_operand, targets), fanout_id

    def _send(self, block_ids: Sequence[int]) -> None:
        for block_id in block_ids:
            try:
                self.ctx.dispatcher.send_block(block_id, self.lease.queue)
            except Exception as exc:  # the broker is away: this worker computes them itself
                log.warning("row block %s not sent: %s", block_id, exc)
                return

    def _compute(
        self, operand: Operand, on_progress: Callable[[float], None] | None
    ) -> LowpassSums:
        """The whole sums: blocks computed here or elsewhere, their partials added in block
        order as soon as each one's predecessors are in, so little is left once the last ends."""
        ctx, plan = self.ctx, operand.plan.blocks
        total = sum(plan.tiles(b) for b in range(len(plan.blocks)))
        own: dict[int, BlockPartial] = {}
        reduced = PartialSum(plan.n)
        while True:
            with ctx.db.unit_of_work() as uow:
                states = lifecycle.block_states(uow.session, operand.fanout_id)
            while reduced.added < len(states) and states[reduced.added].status == Status.SUCCEEDED:
                b = reduced.added
                reduced.add(own.pop(b) if b in own else self._stored(operand, b))
            done = sum(plan.tiles(s.block) for s in states if s.status == Status.SUCCEEDED)
            self._progress(on_progress, done / total)
            if any(s.status == Status.CANCELLED for s in states):
                # Blocks are cancelled only when the job is, or this run attempt is over.
                raise AnalysisCancelledError("a row block was cancelled")
            failed = next((s for s in states if s.status == Status.FAILED), None)
            if failed is not None:
                raise FanoutFailedError(failed.error_message or f"row block {failed.block} failed")
            if all(s.status == Status.SUCCEEDED for s in states):
                break
            if (lease := self._claim_next(operand.fanout_id)) is not None:

                def progress(
                    fraction: float,
                    base: float = done / total,
                    share: float = plan.tiles(lease.block) / total,
                ) -> None:
                    self._progress(on_progress, base + fraction * share)

                partial = compute(ctx, lease, operand, progress)
                if partial is not None:
                    with ctx.db.unit_of_work() as uow:
                        if lifecycle.finish_block(uow.session, lease):
                            own[lease.block] = partial
                continue
            if not self._requeue_lost(operand.fanout_id):
                time.sleep(POLL_SECONDS)
        return reduced.result()

    def _progress(self, on_progress: Callable[[float], None] | None, fraction: float) -> None:
        if self.should_cancel():
            raise AnalysisCancelledError("cancelled during a fanned-out analysis")
        if on_progress is not None:
            on_progress(fraction)

    def _claim_next(self, fanout_id: uuid.UUID) -> lifecycle.BlockLease | None:
        with self.ctx.db.unit_of_work() as uow:
            block_id = lifecycle.next_queued(uow.session, fanout_id)
        return None if block_id is None else claim(self.ctx, block_id)

    def _requeue_lost(self, fanout_id: uuid.UUID) -> bool:
        """The reconciler's rules for this fan-out's blocks; True if any was re-queued."""
        ctx = self.ctx
        with ctx.db.unit_of_work() as uow:
            requeued = lifecycle.requeue_lost(
                uow.session, fanout_id, ctx.settings, holder_alive, keep=ctx.worker_name
            )
            uow.after_commit(lambda: self._send(requeued))
        for block_id in requeued:
            log.warning("row block %s lost its worker; requeued", block_id)
        return bool(requeued)

    def _stored(self, operand: Operand, block: int) -> BlockPartial:
        store = part_store(self.ctx.db, self.ctx.settings)
        with self.ctx.db.unit_of_work() as uow:
            sums = store.read_array(uow.session, operand.fanout_id, block)
        return BlockPartial(first_row=operand.plan.blocks.first_row(block), sums=sums)

    def _close(self, fanout_id: uuid.UUID) -> None:
        """End what is unfinished (cancel reaches every block) and remove the stored bytes."""
        store = part_store(self.ctx.db, self.ctx.settings)
        try:
            with self.ctx.db.unit_of_work() as uow:
                lifecycle.end_unfinished(uow.session, fanout_id, "its analysis stopped")
                store.remove(uow, fanout_id)
        except Exception:
            log.exception("fan-out %s: could not close it; its run's next attempt will", fanout_id)
