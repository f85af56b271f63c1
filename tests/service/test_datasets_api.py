"""Uploaded datasets over real HTTP on both deployments: upload once per owner, read, list,
delete, reference from specs; hostile files refused with nothing stored and nothing executed."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_support import Backend, LiveServer, service_settings, tiny_spec
from sqlalchemy import func, select

from api.app import create_app
from dfp.datasets.materialize import engine_spec
from dfp.storage.models import Dataset, DatasetChunk
from dfp_engine.spec import ExperimentSpec, NpzDataset


def npz_bytes(compressed: bool = False, **arrays: Any) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def training_arrays(n: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int64), "feats": x * 2}


def upload(client: httpx.Client, content: bytes, name: str | None = None) -> httpx.Response:
    data = {"name": name} if name is not None else {}
    return client.post("/v1/datasets", files={"file": ("data.npz", content)}, data=data)


def stored_counts(backend: Backend) -> tuple[int, int]:
    with backend.db.reading() as session:
        datasets = session.scalar(select(func.count()).select_from(Dataset))
        chunks = session.scalar(select(func.count()).select_from(DatasetChunk))
    files = backend.settings.data_dir / "dataset-files"
    on_disk = len(list(files.glob("*"))) if backend.db.dialect == "sqlite" else chunks
    return int(datasets or 0), int(on_disk or 0)


def test_an_upload_is_checked_described_and_stored_once_per_owner(
    backend: Backend, alice: httpx.Client, bob: httpx.Client
) -> None:
    arrays = training_arrays()
    content = npz_bytes(compressed=True, **arrays)
    first = upload(alice, content, name="moons")
    assert first.status_code == 201, first.text
    dataset = first.json()
    assert first.headers["location"] == f"/v1/datasets/{dataset['id']}"
    assert dataset["name"] == "moons" and dataset["file_kind"] == "npz"
    assert dataset["size_bytes"] == len(content)
    described = {a["name"]: (a["shape"], a["dtype"], a["finite"]) for a in dataset["arrays"]}
    assert described == {
        "x": ([30, 3], "<f4", True),
        "y": ([30], "<i8", True),
        "feats": ([30, 3], "<f4", True),
    }
    again = upload(alice, content, name="other name")
    assert again.status_code == 200 and again.json()["id"] == dataset["id"]
    assert stored_counts(backend)[0] == 1
    # Content-addressed per owner: bob's copy is his own.
    theirs = upload(bob, content)
    assert theirs.status_code == 201 and theirs.json()["id"] != dataset["id"]

    assert alice.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    listed = alice.get("/v1/datasets").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == dataset["id"]
    for response in (
        bob.get(f"/v1/datasets/{dataset['id']}"),
        bob.delete(f"/v1/datasets/{dataset['id']}"),
    ):
        assert response.status_code == 404
    refused = bob.post(
        "/v1/experiments", json=tiny_spec(dataset={"kind": "uploaded", "id": dataset["id"]})
    )
    assert refused.status_code == 422 and "no dataset" in refused.json()["error"]["message"]

    assert alice.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert alice.get(f"/v1/datasets/{dataset['id']}").status_code == 404
    assert stored_counts(backend) == (1, 1)  # bob's copy, one chunk or file


def test_the_listing_pages_newest_first(backend: Backend, alice: httpx.Client) -> None:
    ids = [upload(alice, npy_bytes(np.arange(i + 2))).json()["id"] for i in range(3)]
    first = alice.get("/v1/datasets", params={"limit": 2}).json()
    second = alice.get("/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [d["id"] for d in first["data"] + second["data"]] == ids[::-1]
    assert second["next_cursor"] is None
    assert first["data"][0]["file_kind"] == "npy"
    assert first["data"][0]["arrays"][0]["name"] == "arr_0"


class Payload:
    """Would leave a file behind if anything ever unpickled it."""

    marker: Path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "executed"))


def object_array_npz(marker: Path) -> bytes:
    payload = Payload()
    payload.marker = marker
    array = np.empty(1, dtype=object)
    array[0] = payload
    buffer = io.BytesIO()
    np.savez(buffer, x=array)  # numpy pickles object arrays into the member
    return buffer.getvalue()


def bomb_npz() -> bytes:
    """A tiny archive whose one member declares a (10^6, 10^6) float64 array."""
    header = npy_header("<f8", (1_000_000, 1_000_000))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header + bytes(10_000_000))
    return buffer.getvalue()


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    text += " " * ((64 - (10 + len(text) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def hostile_files(marker: Path) -> dict[str, tuple[bytes, str]]:
    good = npz_bytes(**training_arrays())
    lying = io.BytesIO()
    with zipfile.ZipFile(lying, "w") as archive:  # declares 100 floats, holds 10
        archive.writestr("x.npy", npy_header("<f8", (100,)) + bytes(80))
    return {
        "junk": (b"\x00\x01 not an array at all" * 10, "neither an .npy"),
        "pickle": (pickle.dumps({"x": [1, 2, 3]}), "neither an .npy"),
        "object array": (object_array_npz(marker), "object arrays"),
        "truncated": (good[: len(good) // 2], "not a readable .npz"),
        "bomb": (bomb_npz(), "more than the limit"),
        "lying header": (lying.getvalue(), "truncated or padded"),
        "strings": (npz_bytes(x=np.array(["a", "b"])), "not supported"),
        "empty": (b"", "neither an .npy"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "junk",
        "pickle",
        "object array",
        "truncated",
        "bomb",
        "lying header",
        "strings",
        "empty",
    ],
)
def test_hostile_files_are_refused_with_nothing_stored_or_executed(
    backend: Backend, alice: httpx.Client, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "executed"
    content, reason = hostile_files(marker)[kind]
    response = upload(alice, content)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert reason in error["message"] and error["details"]["field"] == "file"
    assert not marker.exists()
    assert stored_counts(backend) == (0, 0)


def test_form_mistakes_are_clear_errors(backend: Backend, alice: httpx.Client) -> None:
    as_json = alice.post("/v1/datasets", json={"file": "x"})
    assert as_json.status_code == 415 and "multipart/form-data" in as_json.text
    no_file = alice.post("/v1/datasets", data={"name": "x"}, files={"other": ("a", b"1")})
    assert no_file.status_code == 422
    missing = alice.post("/v1/datasets", files={"name": (None, "only a name")})
    assert missing.status_code == 422 and "file: missing" in missing.json()["error"]["message"]
    unknown = alice.post("/v1/datasets", params={"x": 1}, files={"file": ("a", b"1")})
    assert unknown.status_code == 422
    broken = alice.post(
        "/v1/datasets",
        content=b'--b\r\nContent-Disposition: form-data; name="file"\r\n',
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert broken.status_code == 422
    assert stored_counts(backend) == (0, 0)


@pytest.fixture
def small_limit(pg_backend: Backend, tmp_path: Path) -> Iterator[httpx.Client]:
    """An API process of the PostgreSQL deployment with a 64 KiB upload limit."""
    settings = service_settings(
        tmp_path,
        database_url=pg_backend.settings.database_url,
        broker_url=pg_backend.settings.broker_url,
        max_dataset_bytes=65_536,
    )
    pg_backend.clean()
    server = LiveServer(create_app(settings)).start()
    try:
        with httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {pg_backend.key('alice')}"},
            timeout=60,
        ) as client:
            yield client
    finally:
        server.stop()


def test_an_oversized_upload_is_413_declared_or_streamed(
    small_limit: httpx.Client, pg_backend: Backend
) -> None:
    big = npy_bytes(np.zeros(20_000))  # 160 kB
    declared = upload(small_limit, big)
    assert declared.status_code == 413 and "DFP_MAX_DATASET_BYTES" in declared.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.npy"\r\n\r\n'
        for _ in range(40):
            yield bytes(8192)
        yield b"\r\n--b--\r\n"

    streamed = small_limit.post(
        "/v1/datasets",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert streamed.status_code == 413
    small = upload(small_limit, npy_bytes(np.zeros(100)))
    assert small.status_code == 201
    assert stored_counts(pg_backend)[0] == 1


def test_specs_name_uploaded_arrays_checked_at_submission(
    backend: Backend, alice: httpx.Client
) -> None:
    arrays = training_arrays()
    bad = {
        **arrays,
        "short": arrays["y"][:10],
        "nan": np.full((30, 3), np.nan, dtype=np.float32),
    }
    dataset_id = upload(alice, npz_bytes(**bad)).json()["id"]
    npy_id = upload(alice, npy_bytes(np.arange(5.0))).json()["id"]

    def submit(**dataset: Any) -> httpx.Response:
        return alice.post(
            "/v1/experiments", json=tiny_spec(dataset={"kind": "uploaded", **dataset})
        )

    cases = {
        "dataset.id": (submit(id="00000000-0000-4000-8000-000000000000"), "no dataset"),
        "dataset.y": (submit(id=dataset_id, y="missing"), "has no array 'missing'"),
        "dataset.x": (submit(id=dataset_id, x="nan"), "NaN or inf"),
        "dataset.x_test": (submit(id=dataset_id, x_test="x"), "both x_test and y_test"),
        "npy": (submit(id=npy_id), "single .npy array"),
    }
    rows = submit(id=dataset_id, y="short")
    assert rows.status_code == 422 and "has 10 rows" in rows.json()["error"]["message"]
    for field, (response, reason) in cases.items():
        assert response.status_code == 422, (field, response.text)
        assert reason in response.json()["error"]["message"], field

    accepted = submit(id=dataset_id)
    assert accepted.status_code == 202, accepted.text
    in_use = alice.delete(f"/v1/datasets/{dataset_id}")
    assert in_use.status_code == 409 and in_use.json()["error"]["code"] == "dataset_in_use"
    job_id = accepted.json()["id"]
    alice.post(f"/v1/experiments/{job_id}/cancel")
    assert alice.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    # The finished experiment stays, no longer tied to the deleted dataset.
    assert alice.get(f"/v1/experiments/{job_id}").status_code == 200


def test_workers_read_the_stored_arrays_under_the_engines_keys(
    backend: Backend, alice: httpx.Client
) -> None:
    arrays = training_arrays(n=40, seed=2)
    dataset_id = upload(alice, npz_bytes(compressed=True, **arrays)).json()["id"]
    spec = ExperimentSpec.model_validate(
        tiny_spec(dataset={"kind": "uploaded", "id": dataset_id, "x": "feats", "seed": 4})
    )
    with engine_spec(backend.db, backend.settings, spec) as readable:
        assert isinstance(readable.dataset, NpzDataset) and readable.dataset.seed == 4
        with np.load(readable.dataset.path, allow_pickle=False) as local:
            assert sorted(local.files) == ["x", "y"]
            np.testing.assert_array_equal(local["x"], arrays["feats"])
            np.testing.assert_array_equal(local["y"], arrays["y"])
        path = Path(readable.dataset.path)
    assert not path.exists()
