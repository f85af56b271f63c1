"""Analyses of uploaded representations over real HTTP, executed by a real Celery worker on
PostgreSQL + Redis: results equal the engine's, checks at submission, cancel, owners."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_support import Backend, start_worker, stop_process, wait_for
from test_datasets_api import npz_bytes, upload

from dfp.client import Client
from dfp_engine.frequency import analyze_frequency


@pytest.fixture(scope="module")
def worker(pg_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("analysis-worker") / "worker.log"
    process = start_worker(pg_backend.settings, log)
    wait_for(lambda: "ready." in log.read_text(), timeout=90, what="the worker to start")
    yield log
    stop_process(process)


@pytest.fixture
def alice(pg: Backend) -> Iterator[httpx.Client]:
    with pg.client(pg.key("alice")) as client:
        yield client


def representations(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    h1 = rng.normal(size=(n, 8)) + labels[:, None]
    h2 = np.tanh(h1 @ rng.normal(size=(8, 5))).astype(np.float32)
    outputs = np.eye(3)[labels] * 0.8 + 0.1
    return {"h1": h1, "h2": h2, "labels": labels, "outputs": outputs}


def wait_terminal(client: httpx.Client, analysis_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        analysis: dict[str, Any] = client.get(
            f"/v1/analyses/{analysis_id}", params={"wait": 10}
        ).json()
        if analysis["is_terminal"]:
            return analysis
    raise AssertionError(f"analysis {analysis_id} did not finish in {timeout} s")


def test_an_analysis_runs_on_the_worker_and_equals_the_engine(
    worker: Path, pg: Backend, alice: httpx.Client
) -> None:
    arrays = representations()
    dataset_id = upload(alice, npz_bytes(**arrays)).json()["id"]
    body = {
        "dataset_id": dataset_id,
        "features": ["h2", "h1"],
        "targets": "labels",
        "inverse_deltas": [0.5, 1, 2, 4, 8],
        "normalization": "standardize_per_dim",
        "predictions": "outputs",
        "tags": ["capture"],
    }
    submitted = alice.post("/v1/analyses", json=body)
    assert submitted.status_code == 202, submitted.text
    analysis = submitted.json()
    assert submitted.headers["location"] == f"/v1/analyses/{analysis['id']}"
    assert analysis["status"] == "queued" and analysis["is_terminal"] is False
    assert analysis["links"]["results"] == f"/v1/analyses/{analysis['id']}/results"
    done = wait_terminal(alice, analysis["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"]["fraction"] == 1.0 and done["attempts"] == 1
    assert done["reproducibility"]["worker_host"]

    result = alice.get(f"/v1/analyses/{analysis['id']}/results").json()
    assert result["partial"] is False and result["n_samples"] == 200
    assert [layer["layer"] for layer in result["layers"]] == ["h2", "h1"]
    for layer in result["layers"]:
        expected = analyze_frequency(
            arrays[layer["layer"]],
            arrays["labels"],
            inverse_deltas=[0.5, 1, 2, 4, 8],
            normalization="standardize_per_dim",
            predictions=arrays["outputs"],
        )
        assert layer["lfr"] == expected.lfr and layer["rdf"] == expected.rdf
        assert layer["peak_inverse_delta"] == expected.peak_inverse_delta
        assert layer["lfr_limit"] == expected.lfr_limit
        assert layer["e_low"] == expected.e_low and layer["e_high"] == expected.e_high
    with alice.stream("GET", f"/v1/analyses/{analysis['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in stream.iter_lines() if line]
    assert "event: analysis" in lines
    data = next(line for line in lines if line.startswith("data: "))
    assert '"is_terminal":true' in data and analysis["id"] in data
    figures = alice.get(f"/v1/analyses/{analysis['id']}/figures").json()["data"]
    assert [f["name"] for f in figures] == ["rdf_layers"]
    png = alice.get(figures[0]["url"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert alice.get(f"/v1/analyses/{analysis['id']}/figures/other.png").status_code == 404
    csv = alice.get(f"/v1/analyses/{analysis['id']}/results.csv").text.splitlines()
    assert csv[0] == "layer,delta,inverse_delta,lfr,rdf,e_low,e_high"
    assert len(csv) == 1 + 2 * 5 and csv[1].startswith("h2,2.0,0.5,")
    only = alice.get(f"/v1/analyses/{analysis['id']}/results", params={"layer": "h1"}).json()
    assert [layer["layer"] for layer in only["layers"]] == ["h1"]

    listed = alice.get("/v1/analyses", params={"tag": "capture"}).json()
    assert [a["id"] for a in listed["data"]] == [analysis["id"]]
    # Analyses are not experiments, and the other way round.
    assert alice.get("/v1/experiments").json()["count"] == 0
    assert alice.get(f"/v1/experiments/{analysis['id']}").status_code == 404
    with pg.client(pg.key("bob")) as bob:
        assert bob.get(f"/v1/analyses/{analysis['id']}").status_code == 404
        assert bob.get(f"/v1/analyses/{analysis['id']}/results").status_code == 404
        assert bob.delete(f"/v1/analyses/{analysis['id']}").status_code == 404
    assert alice.delete(f"/v1/analyses/{analysis['id']}").status_code == 204
    assert alice.get(f"/v1/analyses/{analysis['id']}").status_code == 404


def test_an_analysis_with_ci_is_estimated_from_sampled_rows(
    worker: Path, pg: Backend, alice: httpx.Client
) -> None:
    arrays = representations(n=3000, seed=1)
    dataset_id = upload(alice, npz_bytes(**arrays)).json()["id"]
    body = {
        "dataset_id": dataset_id,
        "features": ["h1"],
        "targets": "labels",
        "inverse_deltas": [0.5, 2, 8],
        "ci": 0.02,
    }
    submitted = alice.post("/v1/analyses", json=body)
    assert submitted.status_code == 202, submitted.text
    done = wait_terminal(alice, submitted.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    (layer,) = alice.get(f"/v1/analyses/{done['id']}/results").json()["layers"]
    expected = analyze_frequency(
        arrays["h1"], arrays["labels"], inverse_deltas=[0.5, 2, 8], ci=0.02
    )
    assert layer["estimator"] == "row_sampled" and layer["rows_evaluated"] < 1500
    assert layer["rows_evaluated"] == expected.rows_evaluated and layer["lfr"] == expected.lfr
    assert max(layer["lfr_ci_half_width"]) <= 0.02 and len(layer["rdf_ci_half_width"]) == 2


def test_bad_analyses_are_refused_at_submission(pg: Backend, alice: httpx.Client) -> None:
    arrays = representations(n=50)
    arrays |= {
        "short": arrays["h1"][:40],
        "nan": np.where(arrays["h1"] > 2, np.inf, arrays["h1"]),
        "vector": arrays["labels"].astype(np.float64),
        "wide": np.zeros((50, 7)),
    }
    dataset_id = upload(alice, npz_bytes(**arrays)).json()["id"]
    base = {"dataset_id": dataset_id, "features": ["h1"], "targets": "labels"}
    cases = {
        "unknown array": ({"features": ["h1", "nope"]}, "features[1]", "has no array 'nope'"),
        "rows": ({"features": ["short"]}, "features[0]", "has 40 rows"),
        "nan": ({"features": ["nan"]}, "features[0]", "NaN or inf"),
        "1-D features": ({"features": ["vector"]}, "features[0]", "needs (n, d)"),
        "predictions": ({"predictions": "wide"}, "predictions", "must match the targets"),
        "no dataset": (
            {"dataset_id": "00000000-0000-4000-8000-000000000000"},
            "dataset_id",
            "no dataset",
        ),
    }
    for name, (change, field, reason) in cases.items():
        response = alice.post("/v1/analyses", json=base | change)
        assert response.status_code == 422, (name, response.text)
        error = response.json()["error"]
        assert reason in error["message"], (name, error)
        assert error["details"][0]["field"] == field, (name, error)
    for change, reason in [
        ({"ci": 1.5}, "less than 1"),
        ({"ci": 0.01, "predictions": "outputs"}, "does not run the filtering test"),
    ]:
        response = alice.post("/v1/analyses", json=base | change)
        assert response.status_code == 422, response.text
        (problem,) = response.json()["error"]["details"]
        assert problem["field"] == "ci" and reason in problem["message"], problem
    two_grids = alice.post("/v1/analyses", json=base | {"deltas": [1, 2], "auto_deltas": 5})
    assert two_grids.status_code == 422 and "only one of" in two_grids.text
    bad_grid = alice.post("/v1/analyses", json=base | {"deltas": [1, -2]})
    assert bad_grid.status_code == 422 and "positive" in bad_grid.text
    with pg.client(pg.key("bob")) as bob:  # another owner's dataset does not exist for bob
        theirs = bob.post("/v1/analyses", json=base)
        assert theirs.status_code == 422 and "no dataset" in theirs.text
    assert alice.get("/v1/analyses").json()["count"] == 0


def test_cancel_stops_a_running_analysis_and_keeps_the_layers_done(
    worker: Path, pg: Backend, alice: httpx.Client
) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, size=5000)
    layers = {f"h{i}": rng.normal(size=(5000, 64)).astype(np.float32) for i in range(6)}
    dataset_id = upload(alice, npz_bytes(labels=labels, **layers)).json()["id"]
    body = {
        "dataset_id": dataset_id,
        "features": list(layers),
        "targets": "labels",
        "auto_deltas": 40,
    }
    analysis_id = alice.post("/v1/analyses", json=body).json()["id"]

    def one_layer_done() -> bool:
        result = alice.get(f"/v1/analyses/{analysis_id}/results").json()
        return len(result["layers"]) >= 1

    wait_for(one_layer_done, timeout=120, what="a first layer", every=0.2)
    running = alice.get(f"/v1/analyses/{analysis_id}").json()
    assert running["status"] == "running" and 0 < running["progress"]["fraction"] < 1
    assert "layer" in running["progress"]["message"]
    alice.post(f"/v1/analyses/{analysis_id}/cancel")
    done = wait_terminal(alice, analysis_id, timeout=60)
    assert done["status"] == "cancelled" and done["error"]["code"] == "cancelled"
    result = alice.get(f"/v1/analyses/{analysis_id}/results").json()
    assert 1 <= len(result["layers"]) < 6
    assert [layer["layer"] for layer in result["layers"]] == list(layers)[: len(result["layers"])]


def test_client_analyze(worker: Path, pg: Backend) -> None:
    arrays = representations(n=80, seed=3)
    with Client(pg.url, pg.key("carol")) as client:
        dataset = client.upload_dataset(arrays)
        analysis = client.analyze(
            dataset.id, features=["h1"], targets="labels", auto_deltas=6, tags=["py"]
        )
        finished = client.wait_analysis(analysis.id, timeout=120)
        assert finished.status == "succeeded"
        result = client.analysis_results(analysis.id)
        expected = analyze_frequency(arrays["h1"], arrays["labels"], auto_deltas=6)
        assert result.layers[0].lfr == expected.lfr
        # ci on 80 rows needs more than half of them: the exact pass runs, with zero intervals
        sampled = client.analyze(
            dataset.id, features=["h1"], targets="labels", auto_deltas=6, ci=0.001
        )
        assert client.wait_analysis(sampled.id, timeout=120).status == "succeeded"
        (layer,) = client.analysis_results(sampled.id).layers
        assert layer.estimator == "exact" and layer.rows_evaluated == 80
        assert layer.lfr == expected.lfr and layer.lfr_ci_half_width == [0.0] * 6
