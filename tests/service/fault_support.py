"""Helpers of the fault-injection tests: long specs, run rows, waiting, result sets."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from service_support import Backend, start_worker, stop_process, tiny_spec, wait_for
from sqlalchemy import func, select

from dfp.settings import Settings
from dfp.storage.models import LayerCurve, Run, RunCheckpoint


def long_spec(epochs: int = 1500, every: int = 100, **overrides: Any) -> dict[str, Any]:
    """The tiny network trained long enough (a second or two) to be hit mid-run."""
    base = tiny_spec()
    return tiny_spec(
        training={**base["training"], "epochs": epochs},
        analysis={**base["analysis"], "checkpoints": {"every": every}},
        **overrides,
    )


def expected_epochs(epochs: int = 1500, every: int = 100) -> list[int]:
    return list(range(0, epochs + 1, every))


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/experiments", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_terminal(client: httpx.Client, job_id: str, timeout: float = 90) -> dict[str, Any]:
    """Long-poll the experiment until it is terminal."""
    job: dict[str, Any] = wait_for(
        lambda: (
            (body := client.get(f"/v1/experiments/{job_id}", params={"wait": 5}).json())[
                "is_terminal"
            ]
            and body
        ),
        timeout=timeout,
        what=f"experiment {job_id} to finish",
        every=0,
    )
    return job


def runs_of(backend: Backend, job_id: str) -> list[Run]:
    with backend.db.reading() as session:
        query = select(Run).where(Run.job_id == uuid.UUID(job_id)).order_by(Run.index)
        return list(session.scalars(query))


def holder_pid(run: Run) -> int:
    """The pid of the pool process running `run` (its worker name is host:pid[:namespace])."""
    assert run.worker is not None
    return int(run.worker.split(":")[1])


def wait_running(backend: Backend, job_id: str, checkpoints: int = 1, timeout: float = 90) -> Run:
    """Wait until the first run is running and has stored `checkpoints` checkpoints."""

    def under_way() -> Run | None:
        run = runs_of(backend, job_id)[0]
        return run if run.status == "running" and stored(backend, run.id) >= checkpoints else None

    found: Run = wait_for(under_way, timeout=timeout, what="the run to be under way", every=0.05)
    return found


def stored(backend: Backend, run_id: int) -> int:
    with backend.db.reading() as session:
        query = select(func.count()).where(RunCheckpoint.run_id == run_id)
        return int(session.scalar(query) or 0)


def result_epochs(client: httpx.Client, job_id: str) -> list[list[int]]:
    """Per run, the epochs of its stored checkpoints, as the API serves them."""
    response = client.get(f"/v1/experiments/{job_id}/results")
    assert response.status_code == 200, response.text
    return [[c["epoch"] for c in run["checkpoints"]] for run in response.json()["runs"]]


def assert_one_result_set(
    backend: Backend, client: httpx.Client, job_id: str, epochs: list[int], layers: int = 3
) -> None:
    """Each run holds exactly one checkpoint per expected epoch and one curve per layer."""
    assert all(found == epochs for found in result_epochs(client, job_id))
    with backend.db.reading() as session:
        for run in runs_of(backend, job_id):
            query = (
                select(func.count())
                .select_from(LayerCurve)
                .join(RunCheckpoint, RunCheckpoint.id == LayerCurve.checkpoint_id)
                .where(RunCheckpoint.run_id == run.id)
            )
            assert session.scalar(query) == len(epochs) * layers


def worker_ready(log: Path) -> bool:
    return log.exists() and "ready." in log.read_text()


@contextlib.contextmanager
def running_worker(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process for the duration of the block, stopped (hard, if need be) after."""
    process = start_worker(settings, log)
    try:
        wait_for(lambda: worker_ready(log), timeout=90, what="the worker to start")
        yield process
    finally:
        stop_process(process)


def kill_group(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal a worker and its pool processes at once, as a crash or `docker kill` would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
