"""Hostile and malformed requests over real HTTP: each gets a 4xx with a message that says what
is wrong, and nothing is stored.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import Backend, service_settings, tiny_spec
from spec_fields import absurd_values, numeric_fields
from sqlalchemy import func, select

from api.request_body import MAX_JSON_DEPTH
from dfp.errors import InvalidRequestError
from dfp.experiments.service import check_callback
from dfp.storage.models import Job


@pytest.fixture
def client(pg: Backend) -> Iterator[httpx.Client]:
    with pg.client(pg.key("mallory")) as client:
        yield client


def jobs(backend: Backend) -> int:
    with backend.db.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(Job)) or 0)


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error of a refused request, checked for status, shape and a useful message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert len(error["message"]) > 10, error
    return error


def post_raw(client: httpx.Client, content: bytes | Iterator[bytes], **headers: str) -> Any:
    headers.setdefault("content-type", "application/json")
    return client.post("/v1/experiments", content=content, headers=headers)


# ----------------------------------------------------------------- size and shape


def test_an_oversized_body_is_413_before_it_is_read(pg: Backend, client: httpx.Client) -> None:
    limit = pg.settings.max_body_bytes
    body = json.dumps({**tiny_spec(), "name": "x" * limit}).encode()
    error = refused(post_raw(client, body), 413, "payload_too_large")
    assert "DFP_MAX_BODY_BYTES" in error["message"] and error["details"]["max_bytes"] == limit
    assert jobs(pg) == 0


def test_an_oversized_chunked_body_is_413(pg: Backend, client: httpx.Client) -> None:
    chunks = (b"[" + b"1," * 50_000 + b"1]" for _ in range(1))  # no Content-Length: chunked
    many = (b" " * 65_536 for _ in range(pg.settings.max_body_bytes // 65_536 + 2))
    refused(post_raw(client, iter([next(chunks), *many])), 413, "payload_too_large")
    assert jobs(pg) == 0


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_deeply_nested_json_is_422(pg: Backend, client: httpx.Client, depth: int) -> None:
    body = b'{"name": ' + b"[" * depth + b"]" * depth + b"}"
    error = refused(post_raw(client, body), 422, "validation_error")
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in error["message"]
    assert jobs(pg) == 0


def test_nesting_the_spec_allows_is_not_refused_for_depth(client: httpx.Client) -> None:
    deltas = [{"inverse": [1, 2, 3]}, {"inverse": [2, 4]}]
    response = client.post(
        "/v1/experiments", json=tiny_spec(sweep={"field": "analysis.deltas", "values": deltas})
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("patch", "field", "reason"),
    [
        (
            {"sweep": {"field": "training.seed", "values": list(range(1001))}},
            "sweep.values",
            "1000",
        ),
        ({"analysis": {"checkpoints": list(range(10_001))}}, "analysis.checkpoints", "10000"),
        ({"analysis": {"deltas": [1 + i for i in range(1001)]}}, "analysis.deltas", "1000"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags", "20"),
        ({"model": {"kind": "mlp", "depth": 2, "width": [8] * 100_000}}, "model.width", "2"),
    ],
)
def test_huge_arrays_are_422_naming_the_field(
    pg: Backend, client: httpx.Client, patch: dict[str, Any], field: str, reason: str
) -> None:
    start = time.perf_counter()
    error = refused(
        client.post("/v1/experiments", json={**tiny_spec(), **patch}), 422, "validation_error"
    )
    assert error["details"][0]["field"].startswith(field), error
    assert reason in error["message"]
    assert time.perf_counter() - start < 5
    assert jobs(pg) == 0


# --------------------------------------------------------------------- media type


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=latin-1",
        "",
    ],
)
def test_bodies_that_are_not_json_are_415(
    pg: Backend, client: httpx.Client, content_type: str
) -> None:
    body = json.dumps(tiny_spec()).encode()
    headers = {"content-type": content_type} if content_type else {}
    request = client.build_request("POST", "/v1/experiments", content=body, headers=headers)
    assert request.headers.get("content-type") == (content_type or None)
    error = refused(client.send(request), 415, "unsupported_media_type")
    assert "application/json" in error["message"]
    assert jobs(pg) == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "application/vnd.dfp+json", "APPLICATION/JSON"],
)
def test_json_media_types_are_accepted(client: httpx.Client, content_type: str) -> None:
    body = json.dumps(tiny_spec()).encode()
    assert post_raw(client, body, **{"content-type": content_type}).status_code == 202


def test_bodies_that_are_not_utf8_or_not_json_are_422(pg: Backend, client: httpx.Client) -> None:
    error = refused(post_raw(client, b'{"name": "caf\xe9"}'), 422, "validation_error")
    assert "not valid UTF-8" in error["message"]
    error = refused(post_raw(client, b'{"name": "unterminated'), 422, "validation_error")
    assert "not valid JSON: Unterminated string" in error["message"]
    assert "(line 1, column 10)" in error["message"]
    assert jobs(pg) == 0


# ------------------------------------------------------------------------ unicode


@pytest.mark.parametrize(
    "name",
    ["Δ-sweep 深さ 🧪", "שלום עולם", "e\u0301te\u0301", "\u200bzero-width", "名" * 200],
)
def test_unicode_names_are_stored_and_returned_as_written(client: httpx.Client, name: str) -> None:
    job = client.post("/v1/experiments", json=tiny_spec(name=name)).json()
    assert job["name"] == name
    assert client.get(f"/v1/experiments/{job['id']}").json()["name"] == name
    listed = client.get("/v1/experiments").json()["data"]
    assert [j["name"] for j in listed if j["id"] == job["id"]] == [name]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (tiny_spec(name="名" * 201), "name", "at most 200 characters"),
        (tiny_spec(name="bell\x07"), "name", "control characters"),
        (tiny_spec(name="nul\x00"), "name", "control characters"),
        ({**tiny_spec(), "tags": ["été"]}, "tags.0", "should match pattern"),
        ({**tiny_spec(), "tags": ["🧪"]}, "tags.0", "should match pattern"),
        (tiny_spec(dataset={"kind": "npz", "path": "x\x00.npz"}), "dataset.path", "control"),
    ],
)
def test_unicode_that_cannot_be_stored_or_shown_safely_is_422(
    pg: Backend, client: httpx.Client, body: dict[str, Any], field: str, reason: str
) -> None:
    error = refused(client.post("/v1/experiments", json=body), 422, "validation_error")
    assert error["details"][0]["field"] == field and reason in error["message"], error
    assert jobs(pg) == 0


def test_a_lone_surrogate_is_422(pg: Backend, client: httpx.Client) -> None:
    body = json.dumps(tiny_spec(name="x")).replace('"x"', '"\\ud800"').encode()
    error = refused(post_raw(client, body), 422, "validation_error")
    assert error["details"][0]["field"] == "name"
    assert jobs(pg) == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tag": "a\x00b"}, "tag"),
        ({"tag": "ünï"}, "tag"),
        ({"created_after": "0001-01-01T00:00:00+14:00"}, "created_after"),
        ({"created_before": "9999-12-31T23:59:59-14:00"}, "created_before"),
        ({"cursor": "not a cursor!"}, "cursor"),
        ({"stauts": "failed"}, "stauts"),
    ],
)
def test_hostile_query_parameters_are_422(
    client: httpx.Client, params: dict[str, str], field: str
) -> None:
    error = refused(client.get("/v1/experiments", params=params), 422, "validation_error")
    details = error["details"]
    named = details[0]["field"] if isinstance(details, list) else details["field"]
    assert named == field, error


def test_hostile_result_filters_are_422(client: httpx.Client) -> None:
    job_id = client.post("/v1/experiments", json=tiny_spec()).json()["id"]
    for params, field in [
        ({"layer": "hidden.1\x00"}, "layer.0"),
        ({"run": str(2**40)}, "run.0"),
        ({"epoch": "-1"}, "epoch.0"),
    ]:
        response = client.get(f"/v1/experiments/{job_id}/results", params=params)
        assert refused(response, 422, "validation_error")["details"][0]["field"] == field


# ---------------------------------------------------------------- absurd numbers


def test_absurd_numbers_in_every_numeric_field_are_422_naming_it(
    pg: Backend, client: httpx.Client
) -> None:
    fields = numeric_fields()
    wrong = []
    for field in fields:
        for value in absurd_values(field.number):
            # JSON has no NaN or Infinity, but Python's parser (the server's) reads them.
            body = json.dumps(field.spec_with(value, tiny_spec())).encode()
            error = refused(post_raw(client, body), 422, "validation_error")
            named = error["details"][0]["field"]
            if not (named == field.path or named.startswith(f"{field.path}.")):
                wrong.append((str(field), value, error["message"]))
            assert error["message"].startswith(f"{named}: ")
    assert wrong == []
    assert len(fields) >= 50 and jobs(pg) == 0


# ------------------------------------------------------------------- callback URLs


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "http://2130706433/hook",  # 127.0.0.1 written as one number
        "http://[::ffff:127.0.0.1]/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://224.0.0.1/hook",
        "https://no-such-host.invalid/hook",
        "https://user:secret@93.184.216.34/hook",
        "ftp://93.184.216.34/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
    ],
)
def test_callback_urls_to_internal_addresses_are_422(
    pg: Backend, client: httpx.Client, url: str
) -> None:
    response = client.post("/v1/experiments", json={**tiny_spec(), "callback_url": url})
    error = refused(response, 422, "validation_error")
    first = error["details"][0]["field"] if isinstance(error["details"], list) else None
    assert first == "callback_url" or error["details"][0]["field"] == "callback_url", error
    assert jobs(pg) == 0


def test_a_public_callback_url_is_accepted(client: httpx.Client) -> None:
    url = "https://93.184.216.34:8443/dfp-hook?lab=3"
    job = client.post("/v1/experiments", json={**tiny_spec(), "callback_url": url}).json()
    assert job["callback_url"] == url


def test_callback_networks_can_be_allowed_and_webhooks_need_a_secret(tmp_path: Path) -> None:
    loopback = "http://127.0.0.1:9/hook"
    allowed = service_settings(tmp_path, webhook_allowed_networks=["127.0.0.0/8"])
    check_callback(loopback, allowed)
    with pytest.raises(InvalidRequestError, match=r"10\.0\.0\.1: loopback, private"):
        check_callback("http://10.0.0.1/hook", allowed)
    assert ipaddress.ip_network("127.0.0.0/8") in allowed.webhook_allowed_networks
    unsigned = service_settings(tmp_path, webhook_secret=None)
    with pytest.raises(InvalidRequestError, match="DFP_WEBHOOK_SECRET is not set"):
        check_callback("https://93.184.216.34/hook", unsigned)


# ------------------------------------------------------------------ dataset paths


def test_dataset_paths_cannot_escape_the_dataset_folders(
    pg: Backend, client: httpx.Client, tmp_path: Path
) -> None:
    root = pg.settings.resolved_dataset_roots()[0]
    root.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "outside.npz"
    secret.write_bytes(b"not yours")
    link = root / "innocent.npz"
    if link.is_symlink():
        link.unlink()
    os.symlink(secret, link)
    escapes = [
        ("npz", "path", str(secret)),
        ("npz", "path", "../../outside.npz"),
        ("npz", "path", f"{root}/../outside.npz"),
        ("npz", "path", "innocent.npz"),  # a link inside that points outside
        ("npz", "path", "~/data.npz"),
        ("mnist", "root", "/"),
        ("cifar10", "root", "../.."),
    ]
    for kind, key, value in escapes:
        body = tiny_spec(dataset={"kind": kind, key: value, "max_train_samples": 100})
        error = refused(client.post("/v1/experiments", json=body), 422, "validation_error")
        assert error["details"][0]["field"] == f"dataset.{key}", (value, error)
        assert "outside the server's dataset folders" in error["message"], (value, error)
    inside = str(root / "data.npz")
    (root / "data.npz").write_bytes(b"present: only the outside value is refused")
    swept = tiny_spec(
        dataset={"kind": "npz", "path": inside},
        sweep={"field": "dataset.path", "values": [inside, str(secret)]},
    )
    error = refused(client.post("/v1/experiments", json=swept), 422, "validation_error")
    assert error["details"][0]["field"] == "dataset.path" and "outside" in error["message"]
    assert jobs(pg) == 0
