"""Authentication (401), owner isolation (404), error shape, health, readiness and metrics."""

from __future__ import annotations

import uuid

import httpx
import pytest
from service_support import REPO, Backend, auth, tiny_spec

from dfp.keys.service import revoke_key

PROTECTED = [
    ("GET", "/v1/experiments"),
    ("POST", "/v1/experiments"),
    ("GET", "/v1/experiments/{id}"),
    ("GET", "/v1/experiments/{id}/results"),
    ("GET", "/v1/experiments/{id}/results.csv"),
    ("GET", "/v1/experiments/{id}/figures"),
    ("GET", "/v1/experiments/{id}/figures/loss_curves.png"),
    ("POST", "/v1/experiments/{id}/cancel"),
    ("DELETE", "/v1/experiments/{id}"),
    ("GET", "/metrics"),
]


@pytest.fixture
def job_id(alice: httpx.Client) -> str:
    return str(alice.post("/v1/experiments", json=tiny_spec()).json()["id"])


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("key", [None, "dfp_000000000000_wrongwrongwrongwrongwrong", "garbage"])
def test_missing_or_wrong_key_is_401(
    backend: Backend, job_id: str, method: str, path: str, key: str | None
) -> None:
    with backend.client(key) as client:
        response = client.request(method, path.format(id=job_id), json=tiny_spec())
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"


def test_a_revoked_key_stops_working_at_once(backend: Backend) -> None:
    key = backend.key("carol")
    with backend.client(key) as client:
        assert client.get("/v1/experiments").status_code == 200
        with backend.db.unit_of_work() as uow:
            revoke_key(uow.session, key)
        assert client.get("/v1/experiments").status_code == 401


@pytest.mark.parametrize(("method", "path"), [p for p in PROTECTED if "{id}" in p[1]])
def test_another_owners_job_is_404(bob: httpx.Client, job_id: str, method: str, path: str) -> None:
    response = bob.request(method, path.format(id=job_id))
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": f"no experiment {job_id}",
        "details": None,
    }


def test_unknown_ids_are_404_and_malformed_ids_422(alice: httpx.Client) -> None:
    assert alice.get(f"/v1/experiments/{uuid.uuid4()}").status_code == 404
    malformed = alice.get("/v1/experiments/not-a-uuid")
    assert malformed.status_code == 422
    assert malformed.json()["error"]["details"][0]["field"] == "experiment_id"


def test_unknown_routes_use_the_error_shape(alice: httpx.Client) -> None:
    response = alice.get("/v2/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert alice.put("/v1/experiments").json()["error"]["code"] == "method_not_allowed"


def test_health_and_readiness(backend: Backend) -> None:
    with backend.client(None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert all(check["ok"] for check in checks.values())
        assert checks["schema"]["current"] == checks["schema"]["head"]
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_metrics_count_jobs_and_time_requests(backend: Backend, alice: httpx.Client) -> None:
    alice.post("/v1/experiments", json=tiny_spec())
    alice.post("/v1/experiments", json=tiny_spec())
    text = alice.get("/metrics").text
    assert 'dfp_jobs{status="queued"} 2.0' in text
    assert 'dfp_queue_depth{queue="cpu"} 2.0' in text
    assert (
        'dfp_http_request_duration_seconds_count{method="POST",route="/v1/experiments",'
        'status="202"}' in text
    )


def test_openapi_declares_operation_ids_and_the_error_shape(backend: Backend) -> None:
    with backend.client(None) as client:
        document = client.get("/openapi.json").json()
    operations = {
        operation["operationId"]: operation
        for path in document["paths"].values()
        for operation in path.values()
    }
    # Every operation has an id (the fuzz test checks the full list); these at least.
    assert len(operations) == sum(len(ops) for ops in document["paths"].values())
    assert set(operations) >= {
        "submitExperiment",
        "listExperiments",
        "getExperiment",
        "streamExperimentEvents",
        "getExperimentResults",
        "getExperimentResultsCsv",
        "listExperimentFigures",
        "getExperimentFigure",
        "cancelExperiment",
        "deleteExperiment",
        "getHealth",
        "getReadiness",
        "getMetrics",
        "getWebhookSecret",
        "uploadDataset",
        "listDatasets",
        "getDataset",
        "deleteDataset",
    }
    error_ref = "#/components/schemas/ErrorResponse"
    for name, operation in operations.items():
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert list(response["content"]) == ["application/json"], (name, status)
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"] == error_ref, (name, status)
    submit = operations["submitExperiment"]
    assert set(submit["responses"]) >= {"202", "401", "409", "422", "503"}
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_bearer_scheme_is_case_insensitive(backend: Backend) -> None:
    key = backend.key("dave")
    with httpx.Client(base_url=backend.url, headers={"Authorization": f"bearer {key}"}) as client:
        assert client.get("/v1/experiments").status_code == 200
    assert auth(key)["Authorization"].startswith("Bearer ")


def test_every_error_code_raised_is_in_the_documented_enum() -> None:
    """A generated client parses `error.code` as the enum: a code missing there would crash it."""
    import re

    from dfp.errors import DfpError, ErrorCode

    sources = [*REPO.glob("api/**/*.py"), *REPO.glob("dfp/**/*.py")]
    raised = set()
    for path in sources:
        text = path.read_text()
        raised |= set(re.findall(r'\bcode\s*=\s*"([a-z_]+)"', text))
        raised |= set(re.findall(r'"code":\s*"([a-z_]+)"', text))
        raised |= set(re.findall(r'^\s+\d{3}: "([a-z_]+)",$', text, flags=re.M))
    client_side = {"wait_timeout", "unreachable"}  # raised by the client, never sent
    assert raised - client_side <= {code.value for code in ErrorCode}, raised - set(ErrorCode)
    for cls in DfpError.__subclasses__():
        assert cls.code in set(ErrorCode) | client_side, cls
