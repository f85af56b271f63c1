"""A worker killed mid-run (SIGKILL to it and its pool, as a crash or the OOM killer would do).

In its own module so that no other worker is running: the module fixture of the end-to-end
tests is gone by now.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import Backend, start_worker, stop_process, tiny_spec, wait_for


@pytest.fixture
def alice(pg: Backend) -> Iterator[httpx.Client]:
    with pg.client(pg.key("alice")) as client:
        yield client


def wait_terminal(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    result: dict[str, Any] = wait_for(
        lambda: (
            (job := client.get(f"/v1/experiments/{job_id}", params={"wait": 10}).json())[
                "is_terminal"
            ]
            and job
        ),
        timeout=timeout,
        what=f"experiment {job_id} to finish",
        every=0,
    )
    return result


def test_a_killed_worker_costs_the_run_an_attempt_not_its_life(
    pg: Backend, alice: httpx.Client, tmp_path: Path
) -> None:
    """SIGKILL the whole worker mid-run; a new worker's reconciler requeues the run, which ends
    succeeded with exactly one set of results (no waiting for the broker's visibility timeout)."""
    body = tiny_spec(
        training={**tiny_spec()["training"], "epochs": 3000},
        analysis={**tiny_spec()["analysis"], "checkpoints": {"every": 100}},
    )
    first = start_worker(pg.settings, tmp_path / "first.log")
    try:
        job_id = alice.post("/v1/experiments", json=body).json()["id"]
        wait_for(
            lambda: alice.get(f"/v1/experiments/{job_id}").json()["status"] == "running",
            timeout=90,
            what="the run to start",
            every=0.1,
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool, as a crash would
        first.wait()
    second = start_worker(pg.settings, tmp_path / "second.log")
    try:
        job = wait_terminal(alice, job_id, timeout=150)
    finally:
        stop_process(second)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    result = alice.get(f"/v1/experiments/{job_id}/results").json()
    epochs = [c["epoch"] for c in result["runs"][0]["checkpoints"]]
    assert epochs == list(range(0, 3001, 100))  # one full set, no duplicates
