"""End to end: HTTP -> PostgreSQL -> Redis -> a real Celery worker process -> the engine -> back.

The stored ratios must equal what the engine returns for the same spec and seed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from service_support import (
    REPO,
    Backend,
    Receiver,
    start_worker,
    stop_process,
    tiny_spec,
    wait_for,
)

from dfp.client import Client
from dfp.webhooks.signing import verify_signature
from dfp_engine.runner import assemble, environment, run_one, summarize
from dfp_engine.spec import ExperimentSpec


@pytest.fixture(scope="module")
def worker(pg_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    process = start_worker(pg_backend.settings, log)
    wait_for(lambda: "ready." in log.read_text(), timeout=90, what="the worker to start")
    yield log
    stop_process(process)


@pytest.fixture
def alice(pg: Backend) -> Iterator[httpx.Client]:
    with pg.client(pg.key("alice")) as client:
        yield client


def wait_terminal(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/experiments/{job_id}", params={"wait": 10}).json()
        if job["is_terminal"]:
            return job
    raise AssertionError(f"experiment {job_id} did not finish in {timeout} s")


def assert_matches_engine(result: dict[str, Any], spec: ExperimentSpec) -> None:
    """Every stored run equals a fresh in-process run of the engine with the same spec."""
    expected = [run_one(spec, i) for i in range(len(spec.run_values()))]
    assert len(result["runs"]) == len(expected)
    for stored, engine in zip(result["runs"], expected, strict=True):
        assert stored["status"] == engine.status == "succeeded"
        assert stored["checkpoints"] == [c.model_dump(mode="json") for c in engine.checkpoints]
        assert [p["train_loss"] for p in stored["history"]] == [
            p.train_loss for p in engine.history
        ]
        assert stored["steps_to_target"] == engine.steps_to_target
        assert stored["layer_names"] == engine.layer_names
        assert stored["analysis_subset_sha256"] == engine.analysis_subset_sha256
    assert result["summary"] == [row.model_dump(mode="json") for row in summarize(spec, expected)]
    engine = assemble(spec, expected, environment(spec, "cpu"))
    assert result["verdicts"] == [v.model_dump(mode="json") for v in engine.verdicts]


def test_a_sweep_runs_on_the_worker_and_matches_the_engine(
    worker: Path, pg: Backend, alice: httpx.Client
) -> None:
    body = tiny_spec(
        sweep={"field": "model.depth", "values": [1, 2]},
        training={**tiny_spec()["training"], "target_loss": 0.4},
    )
    job_id = alice.post("/v1/experiments", json=body).json()["id"]
    job = wait_terminal(alice, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert [run["status"] for run in job["runs"]] == ["succeeded", "succeeded"]
    assert job["progress"]["fraction"] == 1.0 and job["attempts"] == 1
    reproducibility = job["reproducibility"]
    assert reproducibility["device"] == "cpu" and reproducibility["seed"] == 3
    assert reproducibility["torch"] and reproducibility["worker_host"]
    result = alice.get(f"/v1/experiments/{job_id}/results").json()
    assert result["partial"] is False
    assert_matches_engine(result, ExperimentSpec.model_validate(body))
    with Client(pg.url, pg.key("alice")) as client:
        assert "steps_to_target" in client.figures(job_id)  # a sweep with a target loss
        assert client.figure(job_id, "steps_to_target").startswith(b"\x89PNG")


def test_cancel_stops_a_running_experiment_and_keeps_partial_results(
    worker: Path, pg: Backend, alice: httpx.Client
) -> None:
    body = tiny_spec(
        training={**tiny_spec()["training"], "epochs": 5000},
        analysis={**tiny_spec()["analysis"], "checkpoints": {"every": 25}},
    )
    job_id = alice.post("/v1/experiments", json=body).json()["id"]

    def under_way() -> bool:
        result = alice.get(f"/v1/experiments/{job_id}/results").json()
        job = alice.get(f"/v1/experiments/{job_id}").json()
        return len(result["runs"][0]["checkpoints"]) >= 2 and job["progress"]["fraction"] > 0

    wait_for(under_way, timeout=90, what="progress and partial results", every=0.2)
    running = alice.get(f"/v1/experiments/{job_id}").json()
    assert running["status"] == "running" and 0 < running["progress"]["fraction"] < 1
    assert running["progress"]["epochs"] == 5000 and "epoch" in running["progress"]["message"]
    alice.post(f"/v1/experiments/{job_id}/cancel")
    job = wait_terminal(alice, job_id, timeout=30)
    assert job["status"] == "cancelled" and job["error"]["code"] == "cancelled"
    result = alice.get(f"/v1/experiments/{job_id}/results").json()
    epochs = [c["epoch"] for c in result["runs"][0]["checkpoints"]]
    assert 2 <= len(epochs) < 201 and epochs == sorted(epochs)


def test_missing_data_is_refused_where_the_api_sees_it_else_fails_the_run(
    worker: Path, pg: Backend, alice: httpx.Client
) -> None:
    root = pg.settings.resolved_dataset_roots()[0]
    missing = root / "missing.npz"
    body = tiny_spec(dataset={"kind": "npz", "path": str(missing)})
    # The API process sees the dataset folder: refused at submission, naming the field.
    root.mkdir(parents=True, exist_ok=True)
    refused = alice.post("/v1/experiments", json=body)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["details"][0]["field"] == "dataset.path" and "missing.npz" in error["message"]
    # A folder only the workers have (mounted there alone): the run fails with its own code.
    aside = root.with_name(root.name + ".aside")
    root.rename(aside)
    try:
        job_id = alice.post("/v1/experiments", json=body).json()["id"]
        job = wait_terminal(alice, job_id)
    finally:
        aside.rename(root)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "dataset_missing"
    assert "missing.npz" in job["error"]["message"]


def test_dfp_serve_runs_experiments_with_no_other_service(tmp_path: Path) -> None:
    """The embedded mode: SQLite, the filesystem broker, a worker process and a webhook worker;
    driven by the CLI."""
    port = _free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFP_")} | {
        "DFP_DATA_DIR": str(data_dir),
        "DFP_PORT": str(port),
        "DFP_HEARTBEAT_SECONDS": "0.5",
        "DFP_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "DFP_WEBHOOK_POLL_SECONDS": "0.2",
    }
    receiver = Receiver().__enter__()
    server = subprocess.Popen(
        [sys.executable, "-m", "dfp.cli", "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert server.stdout is not None
        for _ in range(3):
            lines.append(server.stdout.readline().decode())
        assert lines[0].startswith(f"dfp API at http://127.0.0.1:{port}")
        key = lines[1].split(": ", 1)[1].strip()
        assert key == (data_dir / "local-api-key").read_text().strip()
        body = tiny_spec(sweep={"field": "model.depth", "values": [1, 2]})
        spec_file = tmp_path / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(body))
        wait_for(lambda: _ready(port), timeout=60, what="dfp serve to be ready")
        hook = f"{receiver.url}/done"
        submitted = subprocess.run(
            [sys.executable, "-m", "dfp.cli", "submit", str(spec_file), "--wait",
             "--callback-url", hook],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        fetched = subprocess.run(
            [sys.executable, "-m", "dfp.cli", "results", job_id],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert_matches_engine(yaml.safe_load(fetched.stdout), ExperimentSpec.model_validate(body))
        # The signed event arrives, verifiable with the secret the API gives the local key.
        wait_for(lambda: receiver.at("/done"), timeout=30, what="the webhook")
        [event] = receiver.at("/done")
        with Client(f"http://127.0.0.1:{port}", key) as client:
            secret = client.webhook_secret()
        assert verify_signature(secret, event.body, event.headers["X-DFP-Signature"])
        assert json.loads(event.body)["data"]["experiment"]["id"] == job_id
    finally:
        receiver.__exit__()
        server.send_signal(signal.SIGTERM)  # to `dfp serve` alone, as `docker stop` does
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0
    # What a new user sees holds no warnings that are expected in the embedded mode.
    assert server.stdout is not None
    shown = "".join(lines) + server.stdout.read().decode()
    assert "superuser privileges" not in shown and "No hostname was supplied" not in shown
    # It stopped its worker too: nothing of its process group is left.
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)
    assert (data_dir / "dfp.sqlite3").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_an_uploaded_dataset_trains_on_the_worker_like_the_same_local_file(
    worker: Path, pg: Backend, alice: httpx.Client, tmp_path: Path
) -> None:
    import io

    import numpy as np

    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, size=(40, 2))
    arrays = {"inputs": x, "labels": (x[:, 0] * x[:, 1] > 0).astype(np.int64)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    uploaded = alice.post("/v1/datasets", files={"file": ("xor.npz", buffer.getvalue())})
    assert uploaded.status_code == 201, uploaded.text
    dataset = {"test_fraction": 0.25, "seed": 1}
    body = tiny_spec(
        dataset={"kind": "uploaded", "id": uploaded.json()["id"], "x": "inputs", "y": "labels"}
        | dataset,
        training={**tiny_spec()["training"], "loss": "cross_entropy"},
    )
    job_id = alice.post("/v1/experiments", json=body).json()["id"]
    job = wait_terminal(alice, job_id)
    assert job["status"] == "succeeded", job["error"]
    local = tmp_path / "xor.npz"
    np.savez(local, x=arrays["inputs"], y=arrays["labels"])
    same = ExperimentSpec.model_validate(
        body | {"dataset": {"kind": "npz", "path": str(local)} | dataset}
    )
    expected = run_one(same, 0)
    stored = alice.get(f"/v1/experiments/{job_id}/results").json()["runs"][0]
    assert stored["n_train"] == expected.n_train == 30
    assert stored["checkpoints"] == [c.model_dump(mode="json") for c in expected.checkpoints]


def test_a_plugin_model_trains_on_the_worker_like_the_engine(
    worker: Path, pg: Backend, alice: httpx.Client
) -> None:
    body = {
        "name": "mixer",
        "dataset": {"kind": "digits", "max_train_samples": 120, "max_test_samples": 40},
        "model": {"kind": "plugin", "name": "mixer", "params": {"depth": 2, "dim": 8}},
        "training": {"epochs": 2, "loss": "cross_entropy", "seed": 2, "device": "cpu"},
        "analysis": {"layers": "all", "checkpoints": {"every": 1}, "deltas": {"auto": 5}},
    }
    job_id = alice.post("/v1/experiments", json=body).json()["id"]
    job = wait_terminal(alice, job_id)
    assert job["status"] == "succeeded", job["error"]
    stored = alice.get(f"/v1/experiments/{job_id}/results").json()["runs"][0]
    assert stored["layer_names"] == ["input", "embed", "blocks.0", "blocks.1", "pool"]
    expected = run_one(ExperimentSpec.model_validate(body), 0)
    assert stored["checkpoints"] == [c.model_dump(mode="json") for c in expected.checkpoints]
    refused = alice.post("/v1/experiments", json=body | {"model": {"kind": "plugin", "name": "x"}})
    assert refused.status_code == 422
    assert (
        "no model plugin 'x' is installed (installed: " in refused.text and "mixer" in refused.text
    )
    bad = alice.post(
        "/v1/experiments",
        json=body | {"model": {"kind": "plugin", "name": "mixer", "params": {"depth": 99}}},
    )
    assert bad.status_code == 422 and "model.params.depth" in bad.text


def test_the_operator_may_narrow_the_plugins(pg: Backend, tmp_path: Path) -> None:
    from service_support import LiveServer, service_settings

    from api.app import create_app

    settings = service_settings(
        tmp_path,
        database_url=pg.settings.database_url,
        broker_url=pg.settings.broker_url,
        model_plugins=["something-else"],
    )
    server = LiveServer(create_app(settings)).start()
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {pg.key('op')}"}
        ) as c:
            response = c.post(
                "/v1/experiments",
                json=tiny_spec(
                    dataset={"kind": "digits", "max_train_samples": 50},
                    model={"kind": "plugin", "name": "mixer"},
                    training={**tiny_spec()["training"], "loss": "cross_entropy"},
                ),
            )
        assert response.status_code == 422, response.text
        assert "not allowed on this server" in response.text
        assert response.json()["error"]["details"][0]["field"] == "model.name"
    finally:
        server.stop()
