"""POST /v1/experiments: accepted jobs, validation and limits (422), idempotency (replay, 409)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from service_support import Backend, tiny_spec
from sqlalchemy import func, select

from dfp.storage.models import Job, Run


def count(backend: Backend, model: type[Job] | type[Run]) -> int:
    with backend.db.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def queue_depth(backend: Backend, queue: str = "cpu") -> int:
    return backend.dispatcher.depth(queue)


def test_submit_returns_202_with_location_and_queues_one_task_per_run(
    backend: Backend, alice: httpx.Client
) -> None:
    spec = tiny_spec(sweep={"field": "model.depth", "values": [1, 2, 3]})
    response = alice.post("/v1/experiments", json={**spec, "tags": ["paper", "fig2"]})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/experiments/{job['id']}"
    assert job["status"] == "queued" and job["is_terminal"] is False
    assert job["n_runs"] == 3 and [r["sweep_value"] for r in job["runs"]] == [1, 2, 3]
    assert job["tags"] == ["fig2", "paper"]
    assert job["spec"]["model"]["depth"] == 2 and job["spec"]["sweep"]["values"] == [1, 2, 3]
    assert job["reproducibility"]["seed"] == 3 and len(job["reproducibility"]["spec_hash"]) == 64
    assert job["links"]["results"] == f"/v1/experiments/{job['id']}/results"
    # Rows committed before the tasks went out: one message per run, on the CPU queue.
    assert count(backend, Run) == 3
    assert queue_depth(backend) == 3

    fetched = alice.get(response.headers["location"]).json()
    assert fetched["id"] == job["id"] and fetched["status"] == "queued"


def test_cuda_specs_go_to_the_gpu_queue(backend: Backend, alice: httpx.Client) -> None:
    spec = tiny_spec()
    spec["training"] = {**spec["training"], "device": "cuda"}
    assert alice.post("/v1/experiments", json=spec).status_code == 202
    assert queue_depth(backend, "gpu") == 1 and queue_depth(backend, "cpu") == 0


@pytest.mark.parametrize(
    ("patch", "field", "reason"),
    [
        ({"model": {"kind": "mlp", "depth": 0}}, "model.depth", "greater than or equal to 1"),
        ({"training": {"epochs": "many"}}, "training.epochs", "valid integer"),
        ({"bogus": 1}, "bogus", "Extra inputs are not permitted"),
        ({"dataset": {"kind": "nope"}}, "dataset", "kind must be one of synthetic_1d"),
        ({"tags": ["has space"]}, "tags.0", "should match pattern"),
        ({"callback_url": "not a url"}, "callback_url", "valid URL"),
        ({"sweep": {"field": "model.nope", "values": [1]}}, "sweep.field", "names no spec field"),
    ],
)
def test_invalid_specs_are_422_naming_the_field(
    backend: Backend, alice: httpx.Client, patch: dict[str, object], field: str, reason: str
) -> None:
    response = alice.post("/v1/experiments", json={**tiny_spec(), **patch})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == field
    assert reason in error["details"][0]["message"]
    assert error["message"].startswith(f"{field}: ")
    assert count(backend, Job) == 0


def test_non_json_body_is_415(alice: httpx.Client) -> None:
    response = alice.post(
        "/v1/experiments", content=b"name: yaml", headers={"content-type": "text/yaml"}
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("patch", "limit", "field"),
    [
        ({"training": {"epochs": 5001}}, "max_epochs", "training.epochs"),
        ({"model": {"kind": "mlp", "depth": 17}}, "max_depth", "model.depth"),
        ({"model": {"kind": "mlp", "depth": 2, "width": [8, 513]}}, "max_width", "model.width"),
        ({"analysis": {"n_samples": 5001}}, "max_samples", "analysis.n_samples"),
        (
            {"dataset": {"kind": "synthetic_1d", "n_points": 6000}},
            "max_samples",
            "dataset.n_points",
        ),
        ({"dataset": {"kind": "mnist", "root": "/data/mnist"}}, "max_samples", None),
        ({"sweep": {"field": "model.depth", "values": list(range(1, 10))}}, "max_sweep_size", None),
    ],
)
def test_specs_over_a_limit_are_422_naming_the_limit(
    backend: Backend, alice: httpx.Client, patch: dict[str, object], limit: str, field: str | None
) -> None:
    spec = tiny_spec()
    for key, value in patch.items():
        merge = key != "sweep" and value.get("kind", spec[key].get("kind")) == spec[key].get("kind")
        spec[key] = {**spec[key], **value} if merge else value
    response = alice.post("/v1/experiments", json=spec)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "limit_exceeded"
    assert error["details"]["limit"] == limit
    assert limit in error["message"] and f"DFP_{limit.upper()}" in error["message"]
    if field is not None:
        assert error["details"]["field"] == field
    assert count(backend, Job) == 0


def test_a_sweep_value_over_a_limit_names_the_run(alice: httpx.Client) -> None:
    spec = tiny_spec(sweep={"field": "model.depth", "values": [2, 40]})
    error = alice.post("/v1/experiments", json=spec).json()["error"]
    assert error["details"]["limit"] == "max_depth"
    assert error["message"].startswith("run 1 (model.depth = 40): model.depth = 40 exceeds")


def test_unfinished_jobs_per_owner_are_limited(
    backend: Backend, alice: httpx.Client, bob: httpx.Client
) -> None:
    limit = backend.settings.max_concurrent_jobs
    for _ in range(limit):
        assert alice.post("/v1/experiments", json=tiny_spec()).status_code == 202
    refused = alice.post("/v1/experiments", json=tiny_spec())
    assert refused.status_code == 422
    assert refused.json()["error"]["details"]["limit"] == "max_concurrent_jobs"
    # The limit is per owner.
    assert bob.post("/v1/experiments", json=tiny_spec()).status_code == 202
    # Finished jobs do not count: cancelling one frees a slot.
    first = alice.get("/v1/experiments", params={"limit": 1}).json()["data"][0]["id"]
    assert alice.post(f"/v1/experiments/{first}/cancel").json()["status"] == "cancelled"
    assert alice.post("/v1/experiments", json=tiny_spec()).status_code == 202


def test_dataset_files_must_be_inside_the_dataset_roots(
    backend: Backend, alice: httpx.Client
) -> None:
    outside = tiny_spec(dataset={"kind": "npz", "path": "/etc/passwd"})
    error = alice.post("/v1/experiments", json=outside).json()["error"]
    assert error["details"][0]["field"] == "dataset.path" and "outside" in error["message"]
    escaping = tiny_spec(dataset={"kind": "npz", "path": "../outside.npz"})
    error = alice.post("/v1/experiments", json=escaping).json()["error"]
    assert error["details"][0]["field"] == "dataset.path" and "outside" in error["message"]
    inside_path = backend.settings.resolved_dataset_roots()[0] / "data.npz"
    inside = tiny_spec(dataset={"kind": "npz", "path": str(inside_path)})
    assert alice.post("/v1/experiments", json=inside).status_code == 202
    # A relative path is one in the first dataset folder; the stored spec says which.
    relative = tiny_spec(dataset={"kind": "npz", "path": "data.npz"})
    job = alice.post("/v1/experiments", json=relative).json()
    assert job["spec"]["dataset"]["path"] == str(inside_path.resolve())


def test_same_idempotency_key_and_body_returns_the_same_job(
    backend: Backend, alice: httpx.Client
) -> None:
    headers = {"Idempotency-Key": "lab-run-42"}
    first = alice.post("/v1/experiments", json=tiny_spec(), headers=headers)
    again = alice.post("/v1/experiments", json=tiny_spec(), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert count(backend, Job) == 1 and queue_depth(backend) == 1


def test_same_idempotency_key_with_another_body_is_409(
    backend: Backend, alice: httpx.Client, bob: httpx.Client
) -> None:
    headers = {"Idempotency-Key": "k1"}
    first = alice.post("/v1/experiments", json=tiny_spec(), headers=headers).json()
    other = alice.post("/v1/experiments", json=tiny_spec(name="other"), headers=headers)
    assert other.status_code == 409
    error = other.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert error["details"]["experiment_id"] == first["id"]
    # Keys are scoped to their owner: bob's "k1" is his own.
    assert bob.post("/v1/experiments", json=tiny_spec(), headers=headers).status_code == 202
    assert count(backend, Job) == 2


def test_concurrent_submissions_with_one_key_create_one_job(
    backend: Backend, alice: httpx.Client
) -> None:
    def submit(_: int) -> str:
        response = alice.post(
            "/v1/experiments", json=tiny_spec(), headers={"Idempotency-Key": "race"}
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(8)))
    assert len(ids) == 1
    assert count(backend, Job) == 1 and count(backend, Run) == 1


def test_a_body_that_is_not_json_says_where(alice: httpx.Client) -> None:
    body = b'{"name": "x",\n "model": {"depth": 3,}}'
    response = alice.post(
        "/v1/experiments", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    [problem] = error["details"]
    assert problem["field"] == "request body" and problem["type"] == "json_invalid"
    # After the trailing comma: line 2, column 23.
    assert problem["message"] == (
        "not valid JSON: Expecting property name enclosed in double quotes (line 2, column 23)"
    )
    assert error["message"] == f"request body: {problem['message']}"


@pytest.mark.parametrize(
    ("patch", "field", "suggestion"),
    [
        ({"training": {"epoch": 3}}, "training.epoch", "epochs"),
        ({"model": {"kind": "mlp", "depht": 3}}, "model.depht", "depth"),
        ({"dataset": {"kind": "synthetic_1d", "n_point": 30}}, "dataset.n_point", "n_points"),
        ({"analysis": {"layer": "all"}}, "analysis.layer", "layers"),
    ],
)
def test_a_misspelt_field_gets_the_close_match(
    alice: httpx.Client, patch: dict[str, dict[str, object]], field: str, suggestion: str
) -> None:
    spec = tiny_spec()
    for section, values in patch.items():
        spec[section] = {**spec[section], **values}
    response = alice.post("/v1/experiments", json=spec)
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["details"]
    assert problem["field"] == field and problem["type"] == "extra_forbidden"
    assert problem["message"].endswith(f"did you mean '{suggestion}'?"), problem
