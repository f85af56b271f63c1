"""Results as JSON (full, partial, filtered) and CSV, stored the way a worker stores them."""

from __future__ import annotations

import csv
import io
import math
import uuid

import httpx
import pytest
from service_support import Backend, analysed_checkpoints, run_result, tiny_spec

from dfp.experiments import lifecycle
from dfp.experiments.lifecycle import Lease
from dfp_engine.results import ErrorInfo
from dfp_engine.spec import ExperimentSpec


def claim(backend: Backend, job_id: str, index: int = 0) -> Lease:
    from sqlalchemy import select

    from dfp.storage.models import Run

    with backend.db.unit_of_work() as uow:
        run_id = uow.session.scalar(
            select(Run.id).where(Run.job_id == uuid.UUID(job_id), Run.index == index)
        )
        lease = lifecycle.claim_run(uow.session, run_id, worker="test:1", settings=backend.settings)
    assert lease is not None
    return lease


@pytest.fixture
def finished(backend: Backend, alice: httpx.Client) -> tuple[str, list]:
    """A two-run sweep whose runs both finished with real analysed checkpoints, summarised by
    the engine's own `summarize` as the worker does."""
    body = tiny_spec(sweep={"field": "training.lr", "values": [0.01, 0.02]})
    job_id = alice.post("/v1/experiments", json=body).json()["id"]
    spec = ExperimentSpec.model_validate(body)
    stored = []
    for index in (0, 1):
        lease = claim(backend, job_id, index)
        checkpoints = analysed_checkpoints([0, 2, 4], layers=3, seed=index)
        with backend.db.unit_of_work() as uow:
            assert lifecycle.finish_run(
                uow.session,
                lease,
                run_result(index, checkpoints),
                {"device": "cpu", "seed": 3},
                spec.summary_layers(),
            )
        stored.append(checkpoints)
    return job_id, stored


def test_full_result_round_trips_every_curve(
    alice: httpx.Client, finished: tuple[str, list]
) -> None:
    job_id, stored = finished
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "succeeded" and job["is_terminal"] and job["progress"]["fraction"] == 1
    assert job["reproducibility"]["device"] == "cpu"
    result = alice.get(f"/v1/experiments/{job_id}/results").json()
    assert result["partial"] is False and result["status"] == "succeeded"
    summary = result["summary"]
    assert [row["sweep_value"] for row in summary] == [0.01, 0.02]
    assert summary[1]["layer"] == "hidden.2"
    assert summary[1]["peak_inverse_delta_by_checkpoint"]["4"] == (
        stored[1][2].layers[2].peak_inverse_delta
    )
    assert [run["sweep_value"] for run in result["runs"]] == [0.01, 0.02]
    for run, checkpoints in zip(result["runs"], stored, strict=True):
        assert [c["epoch"] for c in run["checkpoints"]] == [0, 2, 4]
        assert run["layer_names"] == ["input", "hidden.1", "hidden.2"]
        assert len(run["history"]) == 5 and run["history"][0]["train_loss"] == 1.0
        for got, expected in zip(run["checkpoints"], checkpoints, strict=True):
            assert got == expected.model_dump(mode="json")


def test_filters_by_run_layer_and_epoch(alice: httpx.Client, finished: tuple[str, list]) -> None:
    job_id, stored = finished
    params = {"run": 1, "layer": ["hidden.2", "input"], "epoch": [4, 0]}
    result = alice.get(f"/v1/experiments/{job_id}/results", params=params).json()
    assert [run["index"] for run in result["runs"]] == [1]
    checkpoints = result["runs"][0]["checkpoints"]
    assert [c["epoch"] for c in checkpoints] == [0, 4]
    # Layers keep the model's order, whatever the order of the filter.
    assert [layer["layer"] for layer in checkpoints[0]["layers"]] == ["input", "hidden.2"]
    assert checkpoints[1]["layers"][1] == stored[1][2].layers[2].model_dump(mode="json")


def test_csv_has_one_row_per_delta_with_the_stored_values(
    alice: httpx.Client, finished: tuple[str, list]
) -> None:
    job_id, stored = finished
    response = alice.get(f"/v1/experiments/{job_id}/results.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    n_deltas = len(stored[0][0].layers[0].deltas)
    assert len(rows) == 2 * 3 * 3 * n_deltas
    assert list(rows[0]) == [
        "run",
        "sweep_value",
        "epoch",
        "step",
        "layer",
        "delta",
        "inverse_delta",
        "lfr",
        "rdf",
    ]
    layer = stored[1][1].layers[2]  # run 1, epoch 2, hidden.2
    picked = [r for r in rows if (r["run"], r["epoch"], r["layer"]) == ("1", "2", "hidden.2")]
    assert [float(r["delta"]) for r in picked] == layer.deltas
    assert [float(r["lfr"]) for r in picked] == layer.lfr
    assert picked[0]["rdf"] == ""  # the RDF starts at the second δ
    assert [float(r["rdf"]) for r in picked[1:]] == layer.rdf
    assert {r["sweep_value"] for r in rows} == {"0.01", "0.02"}
    filtered = alice.get(f"/v1/experiments/{job_id}/results.csv", params={"layer": "input"})
    assert len(filtered.text.strip().splitlines()) == 1 + 2 * 3 * n_deltas


def test_partial_results_while_running(backend: Backend, alice: httpx.Client) -> None:
    job_id = alice.post("/v1/experiments", json=tiny_spec()).json()["id"]
    lease = claim(backend, job_id)
    first = analysed_checkpoints([0], seed=5)[0]
    with backend.db.unit_of_work() as uow:
        assert lifecycle.store_checkpoint(uow.session, lease, first)
        lifecycle.heartbeat(
            uow.session,
            lease,
            lifecycle.ProgressReport(
                epoch=1, epochs=4, step=3, train_loss=0.5, fraction=0.25, message="epoch 1/4"
            ),
        )
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "running" and job["attempts"] == 1
    progress = job["progress"]
    assert (progress["epoch"], progress["epochs"], progress["message"]) == (1, 4, "epoch 1/4")
    assert progress["fraction"] == 0.25 and progress["updated_at"] is not None
    result = alice.get(f"/v1/experiments/{job_id}/results").json()
    assert result["partial"] is True and result["status"] == "running"
    assert result["runs"][0]["checkpoints"] == [first.model_dump(mode="json")]
    # The final store keeps the checkpoint stored during the run and adds the rest, once.
    rest = analysed_checkpoints([2, 4], seed=6)
    with backend.db.unit_of_work() as uow:
        assert lifecycle.finish_run(uow.session, lease, run_result(0, [first, *rest]), None)
    final = alice.get(f"/v1/experiments/{job_id}/results").json()
    assert [c["epoch"] for c in final["runs"][0]["checkpoints"]] == [0, 2, 4]
    assert final["partial"] is False


def test_diverged_losses_are_stored_as_null(backend: Backend, alice: httpx.Client) -> None:
    job_id = alice.post("/v1/experiments", json=tiny_spec()).json()["id"]
    lease = claim(backend, job_id)
    result = run_result(0, analysed_checkpoints([0]), status="failed")
    result.history[-1].train_loss = math.inf
    result.error = ErrorInfo(code="diverged", message="loss became inf at epoch 0")
    with backend.db.unit_of_work() as uow:
        assert lifecycle.finish_run(uow.session, lease, result, None)
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"] == {"code": "diverged", "message": "run 0: loss became inf at epoch 0"}
    stored = alice.get(f"/v1/experiments/{job_id}/results").json()["runs"][0]
    assert stored["history"][-1]["train_loss"] is None
    assert stored["error"]["code"] == "diverged"


def test_figures_are_drawn_from_the_stored_results(
    alice: httpx.Client, bob: httpx.Client, finished: tuple[str, list]
) -> None:
    job_id, _ = finished
    listing = alice.get(f"/v1/experiments/{job_id}/figures")
    assert listing.status_code == 200, listing.text
    names = [figure["name"] for figure in listing.json()["data"]]
    assert {"loss_curves", "rdf_across_runs", "rdf_layers_run_0", "rdf_layers_run_1"} <= set(names)
    for figure in listing.json()["data"][:3]:
        png = alice.get(figure["url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and len(png.content) > 5000
    unknown = alice.get(f"/v1/experiments/{job_id}/figures/nope.png")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["details"]["available"] == names
    assert alice.get(f"/v1/experiments/{job_id}/figures/BAD-NAME.png").status_code == 422
    assert bob.get(f"/v1/experiments/{job_id}/figures/loss_curves.png").status_code == 404


def test_no_figures_before_anything_ran(alice: httpx.Client) -> None:
    job_id = alice.post("/v1/experiments", json=tiny_spec()).json()["id"]
    response = alice.get(f"/v1/experiments/{job_id}/figures")
    assert response.status_code == 404 and response.json()["error"]["code"] == "no_results"


def test_verdicts_are_the_engines_on_the_whole_stored_result(
    backend: Backend, alice: httpx.Client
) -> None:
    from dfp_engine.results import Environment, ExperimentResult
    from dfp_engine.verdicts import compute_verdicts

    body = tiny_spec(model={"kind": "mlp", "depth": 3, "width": 8, "activation": "tanh"})
    job_id = alice.post("/v1/experiments", json=body).json()["id"]
    lease = claim(backend, job_id)
    checkpoints = analysed_checkpoints([0, 2, 4], layers=4, seed=5)
    stored = run_result(0, checkpoints)
    with backend.db.unit_of_work() as uow:
        assert lifecycle.finish_run(uow.session, lease, stored, {"device": "cpu", "seed": 3})
    result = alice.get(f"/v1/experiments/{job_id}/results").json()
    environment = Environment(seed=3, torch="", device="cpu", dfp_version="", spec_hash="")
    engine = ExperimentResult(spec=body, status="succeeded", environment=environment, runs=[stored])
    expected = [v.model_dump(mode="json") for v in compute_verdicts(engine)]
    assert [v["scope"] for v in expected] == [{"run": 0, "epoch": e} for e in (0, 2, 4)]
    assert result["verdicts"] == expected
    assert {v["claim"] for v in expected} == {"within_network_depth_ordering"}
    assert all(v["outcome"] in {"holds", "does_not_hold"} for v in expected)
    # A narrowed read still judges the whole result.
    narrowed = alice.get(f"/v1/experiments/{job_id}/results", params={"epoch": 0, "layer": "input"})
    assert narrowed.json()["verdicts"] == expected
    # Asked to leave them out, the same read has the same curves and no verdicts.
    lean = alice.get(
        f"/v1/experiments/{job_id}/results",
        params={"epoch": 0, "layer": "input", "verdicts": "false"},
    ).json()
    assert lean["verdicts"] == []
    assert lean["runs"] == narrowed.json()["runs"]
