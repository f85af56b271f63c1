"""Executing an analysis run: read the named arrays from the blob store, analyse each feature
array with the engine, store each layer as it is done and the outcome in one transaction.

The same machinery as training runs: the claim's lease, the monitor's heartbeat, progress and
cancel flag, the retrying final write, hand-back on shutdown."""

from __future__ import annotations

import logging
import platform
import time
from typing import Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from dfp.analyses.schemas import AnalysisRequest
from dfp.datasets.materialize import local_arrays
from dfp.experiments.lifecycle import Lease, ProgressReport
from dfp_engine import __version__ as dfp_version
from dfp_engine.captured import AnalysisCancelledError, analyze_arrays
from dfp_engine.results import Checkpoint, ErrorInfo, LayerAnalysis, RunResult
from worker.context import WorkerContext
from worker.execution import SHUTDOWN, RunMonitor, _failed, _store, release
from worker.fanout import FanOut, FanoutFailedError

log = logging.getLogger(__name__)


def execute_analysis(ctx: WorkerContext, lease: Lease) -> None:
    """Run the leased analysis to a stored outcome."""
    try:
        request = AnalysisRequest.model_validate(lease.spec)
    except ValidationError as exc:
        result = _failed(lease, "invalid_spec", str(exc.errors()[0]["msg"]))
        _store(ctx, lease, result, None, None)
        return
    settings = ctx.settings
    monitor = RunMonitor(
        ctx.db,
        lease,
        min(settings.progress_seconds, settings.heartbeat_seconds),
        settings.heartbeat_seconds,
        settings.max_result_bytes,
    )
    with monitor:
        result = _analyse(ctx, lease, request, monitor)
    if monitor.stop_reason == SHUTDOWN and result.status == "cancelled":
        release(ctx, lease, "its worker shut down")
        return
    stored = _store(ctx, lease, result, _environment(ctx, request), None)
    log.info("analysis run %s: %s%s", lease.run_id, result.status, "" if stored else " (lost)")


def _analyse(
    ctx: WorkerContext, lease: Lease, request: AnalysisRequest, monitor: RunMonitor
) -> RunResult:
    started = time.perf_counter()
    done: list[LayerAnalysis] = []
    n = 0

    def outcome(status: str, error: ErrorInfo | None = None) -> RunResult:
        return RunResult(
            index=0,
            status=status,  # type: ignore[arg-type]
            error=error,
            n_analysis=n,
            layer_names=list(request.features),
            checkpoints=[Checkpoint(epoch=0, step=0, layers=done)] if done else [],
            elapsed_seconds=time.perf_counter() - started,
            analysis_seconds=time.perf_counter() - started,
        )

    def progress(fraction: float) -> None:
        layer = request.features[min(len(done), len(request.features) - 1)]
        monitor.report(
            ProgressReport(
                epoch=None,
                epochs=None,
                step=len(done),
                train_loss=None,
                fraction=fraction,
                message=f"layer {len(done) + 1}/{len(request.features)}: {layer}",
            )
        )

    names = {*request.features, request.targets}
    if request.predictions is not None:
        names.add(request.predictions)
    try:
        with local_arrays(ctx.db, ctx.settings, request.dataset_id, sorted(names)) as arrays:
            targets = arrays[request.targets]
            n = len(targets)
            predictions = arrays[request.predictions] if request.predictions else None
            layers = analyze_arrays(
                {name: arrays[name] for name in request.features},
                targets,
                grid=request.grid(),
                normalization=request.normalization,
                predictions=predictions,
                device=request.device,
                on_progress=progress,
                should_cancel=monitor.should_cancel,
                ci=request.ci,
                exact_sums=FanOut(ctx, lease, monitor.should_cancel),
            )
            for layer in layers:
                done.append(layer)
                # Partial results: the layers so far replace the stored ones.
                monitor.store_checkpoint(Checkpoint(epoch=0, step=0, layers=list(done)))
    except AnalysisCancelledError:
        reason = {"shutdown": "its worker shut down"}.get(monitor.stop_reason or "")
        message = reason or f"cancelled after {len(done)} of {len(request.features)} layers"
        return outcome("cancelled", ErrorInfo(code="cancelled", message=message))
    except FanoutFailedError as exc:
        return outcome("failed", ErrorInfo(code="fanout_failed", message=str(exc)))
    except (ValueError, KeyError) as exc:
        return outcome("failed", ErrorInfo(code="invalid_spec", message=str(exc)))
    except SoftTimeLimitExceeded:
        limit = ctx.settings.job_soft_time_limit
        return outcome("failed", ErrorInfo(code="time_limit", message=f"stopped after {limit} s"))
    except Exception as exc:
        log.exception("analysis run %s: the engine raised", lease.run_id)
        return outcome(
            "failed", ErrorInfo(code="internal_error", message=f"{type(exc).__name__}: {exc}")
        )
    return outcome("succeeded")


def _environment(ctx: WorkerContext, request: AnalysisRequest) -> dict[str, Any]:
    return {
        "device": request.device,
        "dfp_version": dfp_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "worker_host": ctx.worker_name,
    }
