"""The Python client's typed errors and the client and admin commands of the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from service_support import REPO, Backend, process_env, tiny_spec

from dfp.cli import main
from dfp.client import Client, WaitTimeoutError
from dfp.errors import (
    IdempotencyConflictError,
    LimitExceededError,
    NotFoundError,
    ServiceUnavailableError,
    UnauthenticatedError,
)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(sweep={"field": "model.depth", "values": [1, 2]})))
    return path


@pytest.fixture
def env(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the CLI at the backend with a fresh key through the environment, as a script would."""
    key = backend.key("cli-user")
    monkeypatch.setenv("DFP_URL", backend.url)
    monkeypatch.setenv("DFP_API_KEY", key)
    monkeypatch.setenv("DFP_DATA_DIR", str(backend.settings.data_dir))
    return key


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_client_round_trip_and_typed_errors(backend: Backend, spec_file: Path) -> None:
    key = backend.key("py")
    with Client(backend.url, key) as client:
        job = client.submit(spec_file, tags=["x"], idempotency_key="k")
        assert job.status == "queued" and job.n_runs == 2 and job.tags == ["x"]
        assert client.submit(spec_file, tags=["x"], idempotency_key="k").id == job.id
        with pytest.raises(IdempotencyConflictError) as conflict:
            client.submit(tiny_spec(), idempotency_key="k")
        assert conflict.value.status_code == 409
        assert client.get(job.id).id == job.id
        assert [item.id for item in client.iter(tag="x", limit=1)] == [job.id]
        with pytest.raises(WaitTimeoutError):
            client.wait(job.id, timeout=0.5)
        assert client.cancel(job.id).status == "cancelled"
        assert client.wait(job.id, timeout=5).is_terminal
        result = client.results(job.id)
        assert result.partial is False and [r.status for r in result.runs] == ["cancelled"] * 2
        assert client.results_csv(job.id).startswith("run,sweep_value,epoch")
        client.delete(job.id)
        with pytest.raises(NotFoundError, match=f"no experiment {job.id}"):
            client.get(job.id)
        with pytest.raises(LimitExceededError) as limit:
            client.submit(tiny_spec(training={"epochs": 10**6}))
        assert limit.value.details["limit"] == "max_epochs" and limit.value.status_code == 422
    with (
        Client(backend.url, "dfp_000000000000_nonono-nonono-nonono-no") as client,
        pytest.raises(UnauthenticatedError),
    ):
        client.list()
    with Client("http://127.0.0.1:1", key) as client, pytest.raises(ServiceUnavailableError):
        client.list()


def test_cli_submit_status_list_cancel_results(
    env: str, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(["submit", str(spec_file), "--tag", "cli"], capsys)
    assert code == 0
    job_id = out.strip()
    assert len(job_id) == 36  # just the id, for `ID=$(dfp submit ...)`
    code, out, _ = cli(["status", job_id], capsys)
    assert code == 0 and f"{job_id}  tiny  queued" in out and "run 1 = 2: queued" in out
    code, out, _ = cli(["status", job_id, "--json"], capsys)
    assert json.loads(out)["id"] == job_id
    code, out, _ = cli(["list", "--tag", "cli"], capsys)
    assert code == 0 and out.startswith(job_id)
    code, out, _ = cli(["cancel", job_id], capsys)
    assert code == 0 and "cancelled" in out
    code, _, err = cli(["wait", job_id, "--timeout", "5"], capsys)
    assert code == 1 and "cancelled" in err  # exit 0 only on success
    code, out, _ = cli(["results", job_id], capsys)
    assert code == 0 and json.loads(out)["experiment_id"] == job_id
    code, out, _ = cli(["results", job_id, "--csv"], capsys)
    assert code == 0 and out.splitlines()[0].startswith("run,sweep_value,epoch,step,layer")


def test_cli_errors_are_one_line(
    env: str, tmp_path: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(["status", "00000000-0000-0000-0000-000000000000"], capsys)
    assert code == 2 and err.strip() == "error: no experiment 00000000-0000-0000-0000-000000000000"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {kind: mlp, depth: 0}\n")
    code, _, err = cli(["submit", str(bad)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "model.depth: Input should be greater than or equal to 1" in err
    code, _, err = cli(["submit", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "does not exist" in err
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(tiny_spec(training={"epochs": 10**6})))
    code, _, err = cli(["submit", str(big)], capsys)
    assert code == 2 and "max_epochs" in err and err.count("\n") == 1
    code, _, err = cli(["list", "--url", "http://127.0.0.1:1"], capsys)
    assert code == 1 and err.startswith("error: cannot reach the dfp server at http://127.0.0.1:1")
    code, _, err = cli(["list", "--api-key", "nope"], capsys)
    assert code == 2 and "invalid or revoked API key" in err


def test_keys_commands_through_the_environment(pg: Backend) -> None:
    env = process_env(pg.settings)
    created = subprocess.run(
        [sys.executable, "-m", "dfp.cli", "keys", "create", "--owner", "lab-robot"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip()
    assert created.stdout.count("\n") == 1 and key.startswith("dfp_")  # just the key
    with Client(pg.url, key) as client:
        assert client.list().count == 0
    listed = subprocess.run(
        [sys.executable, "-m", "dfp.cli", "keys", "list", "--owner", "lab-robot"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert key not in listed.stdout and "lab-robot" in listed.stdout and "active" in listed.stdout
    revoked = subprocess.run(
        [sys.executable, "-m", "dfp.cli", "keys", "revoke", key],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "revoked key" in revoked.stdout
    with Client(pg.url, key) as client, pytest.raises(UnauthenticatedError):
        client.list()
    bad = subprocess.run(
        [sys.executable, "-m", "dfp.cli", "keys", "create", "--owner", "no spaces"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: owner 'no spaces'")


def test_db_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DFP_DATA_DIR", str(tmp_path))  # --data-dir exports it; restore after
    monkeypatch.delenv("DFP_DATABASE_URL", raising=False)
    data_dir = ["--data-dir", str(tmp_path / "data")]
    code, out, _ = cli(["db", "current", *data_dir], capsys)
    assert code == 1 and "run `dfp db upgrade`" in out
    code, out, _ = cli(["db", "upgrade", *data_dir], capsys)
    assert code == 0 and out.startswith("database at revision")
    code, out, _ = cli(["db", "current", *data_dir], capsys)
    assert code == 0 and out.startswith("schema at head")


def test_datasets_from_the_client_and_the_cli(
    backend: Backend, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    from dfp.errors import ConflictError, InvalidRequestError

    x = np.linspace(-1, 1, 20).reshape(10, 2)
    with Client(backend.url, env) as client:
        uploaded = client.upload_dataset({"x": x, "y": np.arange(10) % 2}, name="grid")
        assert uploaded.name == "grid" and [a.name for a in uploaded.arrays] == ["x", "y"]
        assert client.dataset(uploaded.id).sha256 == uploaded.sha256
        assert [d.id for d in client.datasets().data] == [uploaded.id]
        job = client.submit(tiny_spec(dataset={"kind": "uploaded", "id": uploaded.id}))
        with pytest.raises(ConflictError):
            client.delete_dataset(uploaded.id)
        client.cancel(job.id)
        client.delete_dataset(uploaded.id)
        with pytest.raises(NotFoundError):
            client.dataset(uploaded.id)
        with pytest.raises(InvalidRequestError):
            client.upload_dataset(tmp_path / "missing.npz")

    path = tmp_path / "arrays.npz"
    np.savez(path, features=x)
    code, out, _ = cli(["datasets", "upload", str(path)], capsys)
    dataset_id = out.strip()
    assert code == 0 and len(dataset_id) == 36
    code, out, _ = cli(["datasets", "show", dataset_id], capsys)
    assert code == 0 and "arrays.npz" in out and "features: 10x2 <f8" in out
    code, out, _ = cli(["datasets", "list"], capsys)
    assert code == 0 and dataset_id in out
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk" * 10)
    code, _, err = cli(["datasets", "upload", str(junk)], capsys)
    assert code == 2 and err.startswith("error: file: neither an .npy")
    code, out, _ = cli(["datasets", "delete", dataset_id], capsys)
    assert code == 0
    code, _, err = cli(["datasets", "show", dataset_id], capsys)
    assert code == 2 and "no dataset" in err
