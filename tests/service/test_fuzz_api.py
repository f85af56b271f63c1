"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis).

Against a real server (uvicorn over loopback, PostgreSQL, Redis) every operation is called
with cases generated from the document, valid and invalid ones, with a key and without. No
answer may be a server error; every answer must match the document (status code, content
type, declared headers, body schema); every error must have the shared shape; an operation
that needs a key must refuse the same request without one. Operations on one experiment are
also fuzzed against a real finished experiment with stored results, so the filters, CSV and
figure paths run on real data rather than answering 404.

Bounded for CI: DFP_FUZZ_EXAMPLES cases per operation and mode (default 25) with a fixed seed;
set DFP_FUZZ_EXAMPLES higher and DFP_FUZZ_SEED to explore further.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_support import (
    Backend,
    LiveServer,
    finish_job,
    service_settings,
    tiny_spec,
)
from test_datasets_api import npz_bytes

from api.app import create_app
from dfp.queues.celery_app import create_celery
from dfp.queues.dispatch import CeleryDispatcher
from dfp.storage.database import Database

EXAMPLES = int(os.environ.get("DFP_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("DFP_FUZZ_SEED", "20261128"))

OPERATIONS = [
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
    "uploadDataset",
    "listDatasets",
    "getDataset",
    "deleteDataset",
    "submitAnalysis",
    "listAnalyses",
    "getAnalysis",
    "getAnalysisResults",
    "getAnalysisResultsCsv",
    "cancelAnalysis",
    "deleteAnalysis",
    "streamAnalysisEvents",
    "listAnalysisFigures",
    "getAnalysisFigure",
    "getWebhookSecret",
    "getHealth",
    "getReadiness",
    "getMetrics",
]
# Operations fuzzed once more against the real experiment (deleting it would end that).
ON_REAL_EXPERIMENT = {
    "getExperiment",
    "streamExperimentEvents",
    "getExperimentResults",
    "getExperimentResultsCsv",
    "listExperimentFigures",
    "getExperimentFigure",
    "cancelExperiment",
}

# Fuzzed once more against a real (queued) analysis.
ON_REAL_ANALYSIS = {"getAnalysis", "getAnalysisResults", "getAnalysisResultsCsv", "cancelAnalysis"}


def error_shape(_ctx: Any, response: Any, _case: Any) -> bool | None:
    """Every error answer is `{"error": {"code", "message", "details"}}` with a message."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    error_shape,
]


@dataclass
class FuzzTarget:
    url: str
    key: str
    experiment_id: str
    schema: Any
    dataset_id: str
    analysis_id: str
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def target(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    """Its own server on the session's database: no rate limit (the fuzzer sends hundreds of
    requests a second with one key), webhooks signed, everything else as deployed."""
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    settings = service_settings(
        data_dir, database_url=pg_url, broker_url=redis_url, rate_limit_per_minute=0
    )
    server = LiveServer(create_app(settings)).start()
    db = Database.from_settings(settings)
    backend = Backend("fuzz", settings, db, CeleryDispatcher(create_celery(settings)), server)
    backend.clean()
    key = backend.key("fuzzer")
    with backend.client(key) as client:
        body = tiny_spec(sweep={"field": "model.depth", "values": [1, 2]})
        experiment_id = client.post("/v1/experiments", json=body).json()["id"]
    finish_job(backend, experiment_id, body)
    # The key is the document's bearer scheme: cases that test a missing key leave it out.
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": key}}}})
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    with backend.client(key) as client:
        dataset_id = client.post(
            "/v1/datasets",
            files={"file": ("d.npz", npz_bytes(x=np.ones((4, 2)), y=np.arange(4)))},
        ).json()["id"]
        analysis_id = client.post(
            "/v1/analyses", json={"dataset_id": dataset_id, "features": ["x"], "targets": "y"}
        ).json()["id"]
    yield FuzzTarget(server.url, key, experiment_id, schema, dataset_id, analysis_id)
    server.stop()
    backend.clean()
    db.dispose()


def fuzz(target: FuzzTarget, operation_id: str, mode: GenerationMode, **fixed: Any) -> int:
    """Run up to EXAMPLES generated cases of one operation; returns how many were sent."""
    operation = target.schema.find_operation_by_id(operation_id)
    sent = 0

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize="DFP_FUZZ_SEED" not in os.environ,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case: Any) -> None:
        nonlocal sent
        if isinstance(case.query, dict) and "wait" in case.query:
            case.query["wait"] = 0  # long-polls would only make the run slow
        response = case.call(base_url=target.url, timeout=30)
        sent += 1
        target.statuses[(operation_id, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS, transport_kwargs={"base_url": target.url})

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
        assert mode == GenerationMode.NEGATIVE, operation_id
    return sent


def test_the_fuzzed_operations_are_all_the_document_has(target: FuzzTarget) -> None:
    document = httpx.get(f"{target.url}/openapi.json").json()
    declared = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert declared == set(OPERATIONS)


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_fuzz_operation(target: FuzzTarget, operation_id: str) -> None:
    sent = fuzz(target, operation_id, GenerationMode.POSITIVE)
    sent += fuzz(target, operation_id, GenerationMode.NEGATIVE)
    if operation_id in ON_REAL_EXPERIMENT:
        sent += fuzz(
            target,
            operation_id,
            GenerationMode.POSITIVE,
            path_parameters={"experiment_id": target.experiment_id},
        )
    if operation_id in ON_REAL_ANALYSIS:
        sent += fuzz(
            target,
            operation_id,
            GenerationMode.POSITIVE,
            path_parameters={"analysis_id": target.analysis_id},
        )
    if operation_id == "getDataset":
        sent += fuzz(
            target,
            operation_id,
            GenerationMode.POSITIVE,
            path_parameters={"dataset_id": target.dataset_id},
        )
    assert sent >= 1


def test_fuzz_summary(target: FuzzTarget, capsys: pytest.CaptureFixture[str]) -> None:
    """The figures RELIABILITY.md reports: cases sent, and that none got a server error."""
    total = sum(target.statuses.values())
    server_errors = sum(n for (_, status), n in target.statuses.items() if status >= 500)
    by_status = Counter[int]()
    for (_, status), n in target.statuses.items():
        by_status[status] += n
    with capsys.disabled():
        print(
            f"\nfuzz: {total} cases over {len(OPERATIONS)} operations, by status {dict(by_status)}"
        )
    assert server_errors == 0
    assert total >= len(OPERATIONS) * 2
