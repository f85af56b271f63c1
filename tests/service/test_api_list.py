"""GET /v1/experiments: newest first, filters, cursor pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from service_support import Backend, tiny_spec
from sqlalchemy import update

from dfp.storage.models import Job


def submit(client: httpx.Client, name: str, tags: list[str] | None = None) -> str:
    response = client.post("/v1/experiments", json={**tiny_spec(name=name), "tags": tags or []})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_pages_follow_cursors_newest_first_without_gaps(
    backend: Backend, alice: httpx.Client, bob: httpx.Client
) -> None:
    ids = [submit(alice, f"job-{i}") for i in range(7)]
    submit(bob, "not alice's")
    # Two jobs with the same created_at: the id breaks the tie, nothing is skipped.
    with backend.db.unit_of_work() as uow:
        same = datetime(2030, 1, 1, tzinfo=UTC)
        uow.session.execute(
            update(Job).where(Job.name.in_(["job-5", "job-6"])).values(created_at=same)
        )
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = alice.get("/v1/experiments", params=params).json()
        assert page["count"] == len(page["data"]) <= 3
        seen += [item["id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    names = [alice.get(f"/v1/experiments/{i}").json()["name"] for i in seen]
    assert names[2:] == ["job-4", "job-3", "job-2", "job-1", "job-0"]
    assert set(names[:2]) == {"job-5", "job-6"}
    item = alice.get("/v1/experiments", params={"limit": 1}).json()["data"][0]
    assert "spec" not in item and "runs" not in item  # listings never carry specs or curves


def test_filters_by_status_tag_and_creation_time(alice: httpx.Client) -> None:
    tagged = submit(alice, "a", ["mnist", "depth"])
    cancelled = submit(alice, "b", ["mnist"])
    plain = submit(alice, "c")
    alice.post(f"/v1/experiments/{cancelled}/cancel")

    def ids(**params: object) -> list[str]:
        return [item["id"] for item in alice.get("/v1/experiments", params=params).json()["data"]]

    assert ids(status="cancelled") == [cancelled]
    assert set(ids(status=["queued", "cancelled"])) == {tagged, cancelled, plain}
    assert ids(tag="depth") == [tagged]
    assert set(ids(tag="mnist")) == {tagged, cancelled}
    assert ids(tag="mnist", status="queued") == [tagged]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert ids(created_after=future) == []
    assert len(ids(created_after=past, created_before=future)) == 3


def test_bad_list_parameters_are_422(alice: httpx.Client) -> None:
    for params, field in [
        ({"limit": 0}, "limit"),
        ({"limit": 1000}, "limit"),
        ({"status": "done"}, "status.0"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"created_after": "yesterday"}, "created_after"),
    ]:
        response = alice.get("/v1/experiments", params=params)
        assert response.status_code == 422, params
        error = response.json()["error"]
        assert field in error["message"], (params, error)


def test_name_search_matches_any_part_in_any_case(alice: httpx.Client) -> None:
    for name in ("Depth-Sweep", "width_sweep", "100%-run"):
        assert alice.post("/v1/experiments", json=tiny_spec(name=name)).status_code == 202

    def names(query: str) -> list[str]:
        response = alice.get("/v1/experiments", params={"name": query})
        assert response.status_code == 200, response.text
        return sorted(e["name"] for e in response.json()["data"])

    assert names("SWEEP") == ["Depth-Sweep", "width_sweep"]
    assert names("h_s") == ["width_sweep"]  # '_' and '%' are literal, not wildcards
    assert names("%") == ["100%-run"]
    assert names("nothing") == []
    refused = alice.get("/v1/experiments", params={"name": "a\x00b"})
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "name"
