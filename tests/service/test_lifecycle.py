"""The run life cycle under duplicates, lost workers, cancels and concurrent finishes."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from service_support import Backend, analysed_checkpoints, run_result, tiny_spec
from sqlalchemy import func, select, update

from dfp.experiments import lifecycle, stale_runs
from dfp.experiments.lifecycle import Lease
from dfp.storage.models import LayerCurve, Run, RunCheckpoint
from dfp.storage.types import utcnow
from dfp_engine.results import ErrorInfo


def submit(client: httpx.Client, values: list[int] | None = None) -> str:
    spec = tiny_spec(sweep={"field": "model.depth", "values": values}) if values else tiny_spec()
    return str(client.post("/v1/experiments", json=spec).json()["id"])


def run_ids(backend: Backend, job_id: str) -> list[int]:
    with backend.db.unit_of_work() as uow:
        query = select(Run.id).where(Run.job_id == uuid.UUID(job_id)).order_by(Run.index)
        return list(uow.session.scalars(query))


def claim(backend: Backend, run_id: int, worker: str = "w:1") -> Lease | None:
    with backend.db.unit_of_work() as uow:
        return lifecycle.claim_run(uow.session, run_id, worker=worker, settings=backend.settings)


def finish(backend: Backend, lease: Lease, epochs: list[int] | None = None) -> bool:
    result = run_result(lease.index, analysed_checkpoints(epochs or [0, 2], seed=lease.index))
    with backend.db.unit_of_work() as uow:
        return lifecycle.finish_run(uow.session, lease, result, None)


def age_heartbeat(backend: Backend, run_id: int, seconds: float) -> None:
    with backend.db.unit_of_work() as uow:
        uow.session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def rows(backend: Backend, model: type) -> int:
    with backend.db.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def status(client: httpx.Client, job_id: str) -> str:
    return str(client.get(f"/v1/experiments/{job_id}").json()["status"])


def test_a_redelivered_duplicate_claims_nothing(backend: Backend, alice: httpx.Client) -> None:
    [run_id] = run_ids(backend, submit(alice))
    lease = claim(backend, run_id)
    assert lease is not None and lease.attempt == 1
    assert claim(backend, run_id, "w:2") is None  # the first worker is alive
    assert finish(backend, lease)
    assert claim(backend, run_id, "w:2") is None  # and now it is finished


def test_a_stale_claim_is_taken_over_and_the_old_lease_is_void(
    backend: Backend, alice: httpx.Client
) -> None:
    job_id = submit(alice)
    [run_id] = run_ids(backend, job_id)
    old = claim(backend, run_id, "dead:1")
    assert old is not None
    with backend.db.unit_of_work() as uow:
        assert lifecycle.store_checkpoint(uow.session, old, analysed_checkpoints([0])[0])
    age_heartbeat(backend, run_id, backend.settings.heartbeat_timeout + 1)
    new = claim(backend, run_id, "alive:2")
    assert new is not None and new.attempt == 2
    assert rows(backend, RunCheckpoint) == 0  # the old attempt's partial results are gone
    # The presumed-dead worker wakes up: nothing it writes lands.
    with backend.db.unit_of_work() as uow:
        assert not lifecycle.heartbeat(uow.session, old).lease_valid
        assert not lifecycle.store_checkpoint(uow.session, old, analysed_checkpoints([0])[0])
    assert not finish(backend, old)
    assert finish(backend, new, [0, 2, 4])
    assert rows(backend, RunCheckpoint) == 3 and rows(backend, LayerCurve) == 9
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert job["runs"][0]["worker"] == "alive:2"


def test_past_the_attempt_cap_a_run_fails_with_a_reason(
    backend: Backend, alice: httpx.Client
) -> None:
    job_id = submit(alice)
    [run_id] = run_ids(backend, job_id)
    for attempt in range(1, backend.settings.max_attempts + 1):
        lease = claim(backend, run_id, f"doomed:{attempt}")
        assert lease is not None and lease.attempt == attempt
        age_heartbeat(backend, run_id, backend.settings.heartbeat_timeout + 1)
    assert claim(backend, run_id) is None
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "attempts_exhausted"
    assert f"after {backend.settings.max_attempts} attempts" in job["error"]["message"]


def test_job_status_aggregates_its_runs(backend: Backend, alice: httpx.Client) -> None:
    job_id = submit(alice, [1, 2, 3])
    first, second, third = run_ids(backend, job_id)
    assert status(alice, job_id) == "queued"
    lease = claim(backend, first)
    assert lease is not None and status(alice, job_id) == "running"
    assert finish(backend, lease)
    assert status(alice, job_id) == "running"  # others still queued
    for run_id in (second, third):
        lease = claim(backend, run_id)
        assert lease is not None and finish(backend, lease)
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"]["runs_finished"] == 3
    assert job["finished_at"] is not None


def test_one_failed_run_fails_the_sweep_and_names_the_run(
    backend: Backend, alice: httpx.Client
) -> None:
    job_id = submit(alice, [1, 2])
    ok, bad = (claim(backend, run_id) for run_id in run_ids(backend, job_id))
    assert ok is not None and bad is not None and finish(backend, ok)
    with backend.db.unit_of_work() as uow:
        result = run_result(1, [], status="failed")
        result.error = ErrorInfo(code="diverged", message="loss is nan")
        assert lifecycle.finish_run(uow.session, bad, result, None)
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"] == {"code": "diverged", "message": "run 1: loss is nan"}


@pytest.mark.parametrize("runs", [6])
def test_concurrent_finishes_end_the_job_exactly_once(
    backend: Backend, alice: httpx.Client, runs: int
) -> None:
    job_id = submit(alice, list(range(1, runs + 1)))
    leases = [claim(backend, run_id) for run_id in run_ids(backend, job_id)]
    barrier = threading.Barrier(runs)
    outcomes: list[bool] = []

    def finish_together(lease: Lease | None) -> None:
        assert lease is not None
        barrier.wait()
        outcomes.append(finish(backend, lease))

    threads = [threading.Thread(target=finish_together, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [True] * runs
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"]["runs_finished"] == runs
    assert rows(backend, RunCheckpoint) == 2 * runs


def test_cancel_a_queued_job_ends_it_without_running(backend: Backend, alice: httpx.Client) -> None:
    job_id = submit(alice, [1, 2])
    response = alice.post(f"/v1/experiments/{job_id}/cancel")
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "cancelled" and job["cancel_requested"] is True
    assert {run["status"] for run in job["runs"]} == {"cancelled"}
    assert job["error"]["code"] == "cancelled"
    # The tasks are still in the queue; when a worker gets them, it claims nothing.
    assert all(claim(backend, run_id) is None for run_id in run_ids(backend, job_id))
    # Cancelling again changes nothing.
    again = alice.post(f"/v1/experiments/{job_id}/cancel").json()
    assert again["status"] == "cancelled" and again["updated_at"] == job["updated_at"]


def test_cancel_a_running_job_keeps_partial_results(backend: Backend, alice: httpx.Client) -> None:
    job_id = submit(alice, [1, 2])
    first, second = run_ids(backend, job_id)
    lease = claim(backend, first)
    assert lease is not None
    with backend.db.unit_of_work() as uow:
        assert lifecycle.store_checkpoint(uow.session, lease, analysed_checkpoints([0])[0])
        assert not lifecycle.heartbeat(uow.session, lease).cancel_requested
    job = alice.post(f"/v1/experiments/{job_id}/cancel").json()
    assert job["status"] == "running" and job["cancel_requested"] is True
    assert [run["status"] for run in job["runs"]] == ["running", "cancelled"]
    # The worker learns it from its next heartbeat and stops with what it has.
    with backend.db.unit_of_work() as uow:
        assert lifecycle.heartbeat(uow.session, lease).cancel_requested
    partial = run_result(0, analysed_checkpoints([0]), status="cancelled")
    with backend.db.unit_of_work() as uow:
        assert lifecycle.finish_run(uow.session, lease, partial, None)
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "cancelled" and job["is_terminal"]
    result = alice.get(f"/v1/experiments/{job_id}/results").json()
    assert [c["epoch"] for c in result["runs"][0]["checkpoints"]] == [0]
    assert claim(backend, second) is None


def test_delete_needs_a_terminal_job_and_removes_everything(
    backend: Backend, alice: httpx.Client
) -> None:
    job_id = submit(alice)
    refused = alice.delete(f"/v1/experiments/{job_id}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_terminal"
    [run_id] = run_ids(backend, job_id)
    lease = claim(backend, run_id)
    assert lease is not None and finish(backend, lease)
    assert rows(backend, LayerCurve) > 0
    assert alice.delete(f"/v1/experiments/{job_id}").status_code == 204
    assert alice.get(f"/v1/experiments/{job_id}").status_code == 404
    assert rows(backend, Run) == rows(backend, RunCheckpoint) == rows(backend, LayerCurve) == 0


def test_long_poll_returns_when_the_status_changes(backend: Backend, alice: httpx.Client) -> None:
    job_id = submit(alice)
    [run_id] = run_ids(backend, job_id)
    timer = threading.Timer(0.6, lambda: claim(backend, run_id))
    timer.start()
    started = time.monotonic()
    job = alice.get(f"/v1/experiments/{job_id}", params={"wait": 20}).json()
    elapsed = time.monotonic() - started
    timer.join()
    assert job["status"] == "running"
    assert 0.5 < elapsed < 5


def test_long_poll_gives_up_after_wait_seconds(alice: httpx.Client) -> None:
    job_id = submit(alice)
    started = time.monotonic()
    job = alice.get(f"/v1/experiments/{job_id}", params={"wait": 1}).json()
    assert job["status"] == "queued"
    assert 0.9 < time.monotonic() - started < 4
    # A terminal job answers at once.
    alice.post(f"/v1/experiments/{job_id}/cancel")
    started = time.monotonic()
    assert alice.get(f"/v1/experiments/{job_id}", params={"wait": 30}).json()["is_terminal"]
    assert time.monotonic() - started < 1
    too_long = alice.get(f"/v1/experiments/{job_id}", params={"wait": 61})
    assert too_long.status_code == 422
    assert too_long.json()["error"]["details"][0]["field"] == "wait"


# -------------------------------------------------- lost holders, handovers, cancel races


def test_a_run_whose_holder_is_known_dead_is_taken_over_at_once(
    backend: Backend, alice: httpx.Client
) -> None:
    """A redelivered task need not wait for the heartbeat to go stale when the process that
    held the run is known to be gone (same host, no such pid)."""
    [run_id] = run_ids(backend, submit(alice))
    old = claim(backend, run_id, "host:1")
    assert old is not None
    with backend.db.unit_of_work() as uow:
        alive = lifecycle.claim_run(
            uow.session, run_id, worker="host:2", settings=backend.settings,
            holder_alive=lambda worker: True,
        )  # fmt: skip
    assert alive is None  # a live holder keeps its run
    with backend.db.unit_of_work() as uow:
        assert stale_runs.lost_runs(uow.session, backend.settings, utcnow()) == []
        assert stale_runs.lost_runs(
            uow.session, backend.settings, utcnow(), lambda worker: worker != "host:1"
        ) == [run_id]
        new = lifecycle.claim_run(
            uow.session, run_id, worker="host:2", settings=backend.settings,
            holder_alive=lambda worker: worker != "host:1",
        )  # fmt: skip
    assert new is not None and new.attempt == 2
    assert not finish(backend, old) and finish(backend, new)


def test_a_run_handed_back_on_shutdown_is_queued_again_and_its_lease_void(
    backend: Backend, alice: httpx.Client
) -> None:
    job_id = submit(alice)
    [run_id] = run_ids(backend, job_id)
    lease = claim(backend, run_id)
    assert lease is not None
    with backend.db.unit_of_work() as uow:
        resend = lifecycle.release_run(uow.session, lease, "its worker shut down")
    assert resend == lifecycle.Resend(run_id, "cpu")
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["runs"][0]["status"] == "queued" and job["runs"][0]["attempts"] == 1
    assert job["runs"][0]["message"] == "requeued after attempt 1: its worker shut down"
    assert not finish(backend, lease)  # the released attempt can write nothing more
    again = claim(backend, run_id, "w:2")
    assert again is not None and again.attempt == 2 and finish(backend, again)
    assert status(alice, job_id) == "succeeded"


def test_a_run_handed_back_while_cancelled_ends_cancelled(
    backend: Backend, alice: httpx.Client
) -> None:
    job_id = submit(alice)
    [run_id] = run_ids(backend, job_id)
    lease = claim(backend, run_id)
    assert lease is not None
    alice.post(f"/v1/experiments/{job_id}/cancel")
    with backend.db.unit_of_work() as uow:
        assert lifecycle.release_run(uow.session, lease, "its worker shut down") is None
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "cancelled" and job["runs"][0]["status"] == "cancelled"


def test_a_cancel_that_arrives_as_the_run_finishes_is_too_late(
    backend: Backend, alice: httpx.Client
) -> None:
    """The run's last epoch is done when the cancel lands: the job ends succeeded with all its
    results, and `cancel_requested` says a cancel came."""
    job_id = submit(alice)
    [run_id] = run_ids(backend, job_id)
    lease = claim(backend, run_id)
    assert lease is not None
    assert alice.post(f"/v1/experiments/{job_id}/cancel").json()["status"] == "running"
    assert finish(backend, lease, [0, 2, 4])
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "succeeded" and job["cancel_requested"] is True
    assert job["error"] is None and rows(backend, RunCheckpoint) == 3
    # A cancel after the end changes nothing either.
    after = alice.post(f"/v1/experiments/{job_id}/cancel").json()
    assert after["status"] == "succeeded" and after["finished_at"] == job["finished_at"]


def test_a_cancel_before_the_claim_means_the_run_never_starts(
    backend: Backend, alice: httpx.Client
) -> None:
    job_id = submit(alice)
    [run_id] = run_ids(backend, job_id)
    alice.post(f"/v1/experiments/{job_id}/cancel")
    assert claim(backend, run_id) is None  # the message arrives after the cancel
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "cancelled" and job["started_at"] is None
    assert job["runs"][0]["attempts"] == 0
