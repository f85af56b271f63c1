"""The web UI in a real headless Chromium (Debian's, driven by Playwright) against a live server
on PostgreSQL and Redis, with a real Celery worker for the live-progress test."""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from service_support import (
    REPO,
    Backend,
    LiveServer,
    analysed_checkpoints,
    get_json,
    run_result,
    service_settings,
    start_worker,
    stop_process,
    tiny_spec,
)

from api.app import create_app
from dfp.experiments import lifecycle, repository
from dfp.keys.service import revoke_key
from dfp.queues.celery_app import create_celery
from dfp.queues.dispatch import CeleryDispatcher
from dfp.storage.database import Database
from dfp.storage.types import utcnow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = REPO / "docs"
# The page-time budget of the issue: the large experiment's page interactive within 1 s.
INTERACTIVE_BUDGET_MS = 1000


@pytest.fixture(scope="module")
def ui(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A live API (with the UI) on the session's PostgreSQL and Redis, sweeps up to 32 runs."""
    data_dir = tmp_path_factory.mktemp("ui-backend")
    settings = service_settings(
        data_dir, database_url=pg_url, broker_url=redis_url, max_sweep_size=32
    )
    server = LiveServer(create_app(settings)).start()
    db = Database.from_settings(settings)
    backend = Backend("postgresql", settings, db, CeleryDispatcher(create_celery(settings)), server)
    backend.clean()
    yield backend
    server.stop()
    db.dispose()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium missing: scripts/ensure-chromium.sh installs it"
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test, 1280 px wide."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def login(page: Page, ui: Backend, key: str) -> None:
    """Log in as a person would: /ui, the key into the one field, Enter."""
    page.goto(f"{ui.url}/ui")
    assert page.url == f"{ui.url}/ui/login"
    page.fill("input[name=api_key]", key)
    page.press("input[name=api_key]", "Enter")
    page.wait_for_url(f"{ui.url}/ui/experiments")


def submit(ui: Backend, key: str, **overrides: Any) -> dict[str, Any]:
    spec = tiny_spec(**overrides)
    with ui.client(key) as client:
        response = client.post("/v1/experiments", json=spec)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def store_results(
    ui: Backend, job: dict[str, Any], *, epochs: list[int], layers: int, n_deltas: int
) -> None:
    """Every run of a job finished the way a worker stores it, with real analysed curves."""
    from dfp_engine.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate(job["spec"])
    with ui.db.reading() as session:
        run_ids = [run.id for run in repository.runs_of(session, uuid.UUID(job["id"]))]
    for index, run_id in enumerate(run_ids):
        with ui.db.unit_of_work() as uow:
            lease = lifecycle.claim_run(uow.session, run_id, worker="test:1", settings=ui.settings)
        assert lease is not None
        checkpoints = analysed_checkpoints(epochs, layers=layers, n_deltas=n_deltas, seed=index)
        with ui.db.unit_of_work() as uow:
            assert lifecycle.finish_run(
                uow.session,
                lease,
                # Reached the target later the larger the swept value (as in the paper's sweeps).
                run_result(index, checkpoints).model_copy(
                    update={"steps_to_target": 300 + 40 * index, "epochs_to_target": 100 + index}
                ),
                {"device": "cpu", "seed": 3},
                spec.summary_layers(),
            )


def chart_paths(page: Page, chart: str) -> int:
    return page.locator(f"#{chart} svg path.line").count()


def wait_ready(page: Page) -> float:
    """Milliseconds from navigation start until the page's charts were drawn."""
    page.wait_for_selector("html[data-ready=true]", state="attached")
    return float(page.evaluate("Number(document.documentElement.dataset.readyMs)"))


# ------------------------------------------------------------------------------ tests


def test_login_list_and_experiment_page(ui: Backend, page: Page, context: BrowserContext) -> None:
    key = ui.key("ui-alice")
    job = submit(ui, key, name="depth-sweep", sweep={"field": "model.depth", "values": [1, 2, 3]})
    with ui.client(key) as client:
        client.post("/v1/experiments", json={**tiny_spec(name="other"), "tags": ["paper"]})
    store_results(ui, job, epochs=[0, 2, 4], layers=3, n_deltas=12)

    login(page, ui, key)
    rows = page.locator("#experiments tbody tr")
    assert rows.count() == 2
    row = page.locator(f"#experiments tr[data-id='{job['id']}']")
    assert "depth-sweep" in row.inner_text()
    assert "succeeded" in row.inner_text()

    # Filters: the tag, a name search, a status.
    page.goto(f"{ui.url}/ui/experiments?tag=paper")
    assert page.locator("#experiments tbody tr").count() == 1
    assert "other" in page.locator("#experiments tbody").inner_text()
    page.goto(f"{ui.url}/ui/experiments?name=DEPTH")
    assert page.locator("#experiments tbody tr").count() == 1
    page.goto(f"{ui.url}/ui/experiments?status=queued")
    assert "other" in page.locator("#experiments tbody").inner_text()

    page.goto(f"{ui.url}/ui/experiments")
    page.click("text=depth-sweep")
    page.wait_for_url(f"{ui.url}/ui/experiments/{job['id']}")
    wait_ready(page)
    assert page.locator("#status").inner_text() == "succeeded"
    for chart in ("chart-rdf", "chart-lfr", "chart-peaks", "chart-loss", "chart-steps"):
        assert chart_paths(page, chart) + page.locator(f"#{chart} circle").count() > 0, chart
    assert chart_paths(page, "chart-rdf") == 3  # one line per layer
    assert "model:" in page.locator("pre.spec").inner_text()
    assert page.locator("#runs tbody tr").count() == 3
    # The slider moves over checkpoints and redraws.
    page.fill("#checkpoint", "0")
    page.dispatch_event("#checkpoint", "input")
    assert "epoch 0" in page.locator("#checkpoint-label").inner_text()
    # Downloads are the API's own URLs, served to the session.
    csv = page.request.get(f"{ui.url}/v1/experiments/{job['id']}/results.csv")
    assert csv.status == 200
    assert csv.text().startswith("run,sweep_value,epoch")

    # The key is nowhere a script can read; the session cookie is HttpOnly and SameSite=Strict.
    storage = page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert key not in storage
    assert key not in page.content()
    assert "dfp_session" not in page.evaluate("document.cookie")
    (cookie,) = [c for c in context.cookies() if c["name"] == "dfp_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert key not in cookie["value"]
    response = page.request.get(f"{ui.url}/ui/experiments")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp


def test_another_owners_experiment_is_404(ui: Backend, page: Page) -> None:
    theirs = submit(ui, ui.key("ui-bob"), name="bobs")
    login(page, ui, ui.key("ui-carol"))
    response = page.goto(f"{ui.url}/ui/experiments/{theirs['id']}")
    assert response is not None
    assert response.status == 404
    assert "no experiment" in page.inner_text("main")
    assert page.request.get(f"{ui.url}/v1/experiments/{theirs['id']}").status == 404
    assert "bobs" not in page.goto(f"{ui.url}/ui/experiments").text()  # type: ignore[union-attr]


def test_submit_shows_the_field_error_then_lands_on_the_page(ui: Backend, page: Page) -> None:
    login(page, ui, ui.key("ui-dave"))
    page.click("text=New experiment")
    page.wait_for_url(f"{ui.url}/ui/submit")
    bad = (
        "name: bad\n"
        "dataset: {kind: synthetic_1d, expression: cos(3*x), n_points: 24}\n"
        "model:\n  kind: mlp\n  depth: 0\n  width: 8\n"
        "training: {epochs: 4, device: cpu}\n"
    )
    page.fill("#spec_text", bad)
    page.click("#submit-form button[type=submit]")
    error = page.locator("#spec-errors li[data-field='model.depth']")
    assert error.count() == 1
    assert "line 5" in error.inner_text()
    assert "greater than or equal to 1" in error.inner_text()
    assert page.get_attribute("#spec_text", "aria-invalid") == "true"
    assert page.input_value("#spec_text") == bad  # what was typed stays, to be fixed
    page.screenshot(path=str(DOCS / "ui_submit.png"), full_page=True)

    page.fill("#spec_text", bad.replace("depth: 0", "depth: 2"))
    page.fill("#tags", "ui, smoke")
    page.click("#submit-form button[type=submit]")
    page.wait_for_url(f"{ui.url}/ui/experiments/*")
    experiment_id = page.url.rsplit("/", 1)[1]
    assert page.locator("h1").inner_text().startswith("bad")
    with ui.client(ui.key("ui-dave")) as client:
        stored = get_json(client, f"/v1/experiments/{experiment_id}")
    assert stored["tags"] == ["smoke", "ui"]
    assert stored["spec"]["model"]["depth"] == 2


def test_cancel_then_delete(ui: Backend, page: Page) -> None:
    key = ui.key("ui-erin")
    job = submit(ui, key, name="to-cancel")  # no worker runs: it stays queued
    login(page, ui, key)
    page.goto(f"{ui.url}/ui/experiments/{job['id']}")
    assert page.locator("#status").inner_text() == "queued"
    page.click("#cancel-form button")
    page.wait_for_url(f"{ui.url}/ui/experiments/{job['id']}")
    assert page.locator("#status").inner_text() == "cancelled"
    with ui.client(key) as client:
        assert get_json(client, f"/v1/experiments/{job['id']}")["status"] == "cancelled"
    page.click("#delete-form button")
    page.wait_for_url(f"{ui.url}/ui/experiments")
    with ui.client(key) as client:
        assert client.get(f"/v1/experiments/{job['id']}").status_code == 404


def test_state_changes_without_the_csrf_token_are_refused(ui: Backend, page: Page) -> None:
    key = ui.key("ui-frank")
    job = submit(ui, key, name="guarded")
    login(page, ui, key)
    cancel = f"{ui.url}/ui/experiments/{job['id']}/cancel"
    # The browser's cookie goes with these requests, the form's token does not.
    assert page.request.post(cancel, form={}).status == 403
    assert page.request.post(cancel, form={"csrf_token": "forged"}).status == 403
    assert page.request.post(f"{ui.url}/ui/experiments/{job['id']}/delete", form={}).status == 403
    api_cancel = f"{ui.url}/v1/experiments/{job['id']}/cancel"
    refused = page.request.post(api_cancel)
    assert refused.status == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    submitted = page.request.post(
        f"{ui.url}/ui/submit", multipart={"spec_text": "name: x", "csrf_token": ""}
    )
    assert submitted.status == 403
    with ui.client(key) as client:
        assert get_json(client, f"/v1/experiments/{job['id']}")["status"] == "queued"
    # With the page's token the same request goes through.
    page.goto(f"{ui.url}/ui/experiments/{job['id']}")
    token = page.get_attribute("meta[name=csrf-token]", "content")
    assert token
    accepted = page.request.post(api_cancel, headers={"X-CSRF-Token": token})
    assert accepted.status == 200
    assert accepted.json()["status"] == "cancelled"


def test_logout_and_revocation_end_the_session(ui: Backend, page: Page) -> None:
    key = ui.key("ui-grace")
    login(page, ui, key)
    page.click("text=Log out")
    page.wait_for_url(f"{ui.url}/ui/login")
    page.goto(f"{ui.url}/ui/experiments")
    assert page.url == f"{ui.url}/ui/login"

    login(page, ui, key)
    with ui.db.unit_of_work() as uow:
        revoke_key(uow.session, key)
    page.goto(f"{ui.url}/ui/experiments")
    assert page.url == f"{ui.url}/ui/login"
    page.fill("input[name=api_key]", key)
    page.press("input[name=api_key]", "Enter")
    assert "invalid or revoked" in page.inner_text("#login-error")


def test_login_refuses_a_wrong_key_and_a_form_from_elsewhere(ui: Backend, page: Page) -> None:
    page.goto(f"{ui.url}/ui/login")
    page.fill("input[name=api_key]", "dfp_000000000000_not-a-real-key-at-all")
    page.press("input[name=api_key]", "Enter")
    assert "invalid or revoked" in page.inner_text("#login-error")
    assert page.url == f"{ui.url}/ui/login"
    # A login posted without the form's nonce (another site's form) is refused.
    with httpx.Client(base_url=ui.url) as client:
        response = client.post("/ui/login", data={"api_key": ui.key("ui-heidi")})
    assert response.status_code == 403
    assert "dfp_session" not in response.cookies


def test_progress_updates_live_while_it_runs(ui: Backend, page: Page, tmp_path: Path) -> None:
    key = ui.key("ui-ivan")
    worker = start_worker(ui.settings, tmp_path / "worker.log")
    try:
        job = submit(
            ui,
            key,
            name="live",
            dataset={"kind": "synthetic_1d", "expression": "cos(3*x)", "n_points": 64},
            model={"kind": "mlp", "depth": 3, "width": 32, "activation": "tanh"},
            training={"optimizer": "adam", "lr": 0.001, "epochs": 4000, "device": "cpu"},
            analysis={"checkpoints": {"every": 1000}, "deltas": {"auto": 8}, "n_samples": 64},
        )
        login(page, ui, key)
        page.goto(f"{ui.url}/ui/experiments/{job['id']}")
        expect(page.locator("#status")).to_have_text("running", timeout=60_000)
        seen = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 3:
            if page.locator("#status").inner_text() != "running":
                break
            seen.add(page.locator("#progress-text").inner_text())
            time.sleep(0.2)
        assert len(seen) >= 3, f"progress did not move while running: {seen}"
        expect(page.locator("#status")).to_have_text("succeeded", timeout=120_000)
        assert page.locator("#progress-text").inner_text().startswith("100 %")
        expect(page.locator("#chart-rdf svg path.line")).to_have_count(4)
        assert not page.locator("#delete-form").is_hidden()
    finally:
        stop_process(worker)


def _large_experiment(ui: Backend, key: str) -> str:
    """20 runs x 10 checkpoints x 6 layers x 100 δ, stored as a worker stores them."""
    job = submit(
        ui,
        key,
        name="width-sweep-large",
        sweep={"field": "model.width", "values": list(range(4, 24))},
        analysis={"checkpoints": {"every": 100}, "deltas": {"auto": 100}},
        tags=["paper", "fig3"],
    )
    store_results(ui, job, epochs=list(range(0, 1000, 100)), layers=6, n_deltas=100)
    return str(job["id"])


def test_large_experiment_page_is_interactive_within_a_second(ui: Backend, page: Page) -> None:
    key = ui.key("ui-judy")
    experiment_id = _large_experiment(ui, key)
    with ui.client(key) as client:
        result = get_json(client, f"/v1/experiments/{experiment_id}/results")
    assert len(result["runs"]) == 20
    assert {len(run["checkpoints"]) for run in result["runs"]} == {10}
    assert {len(cp["layers"]) for run in result["runs"] for cp in run["checkpoints"]} == {6}
    assert {len(layer["lfr"]) for layer in result["runs"][0]["checkpoints"][0]["layers"]} == {100}

    login(page, ui, key)
    url = f"{ui.url}/ui/experiments/{experiment_id}"
    times = []
    complete = []
    for _ in range(5):
        page.goto(url)
        times.append(wait_ready(page))
        page.wait_for_selector("html[data-complete=true]", state="attached")
        complete.append(float(page.evaluate("Number(document.documentElement.dataset.completeMs)")))
    fetches = page.evaluate(
        "performance.getEntriesByType('resource').filter((e) => e.name.includes('/results'))"
        ".map((e) => [e.name.split('?')[1], Math.round(e.duration), e.encodedBodySize])"
    )
    print(
        f"\nlarge experiment page: interactive after {times} ms, every chart complete after "
        f"{complete} ms; results fetches (query, ms, bytes) {fetches}"
    )
    assert chart_paths(page, "chart-rdf") == 6
    assert chart_paths(page, "chart-loss") == 20
    assert page.locator("#chart-steps circle").count() == 20
    assert statistics.median(times) < INTERACTIVE_BUDGET_MS, times
    # Interactive: a checkpoint moved with the keyboard redraws the curves at once.
    before = page.locator("#chart-rdf path.line").first.get_attribute("d")
    page.focus("#checkpoint")
    page.keyboard.press("Home")
    assert "epoch 0" in page.locator("#checkpoint-label").inner_text()
    assert page.locator("#chart-rdf path.line").first.get_attribute("d") != before
    page.select_option("#run-select", "7")
    expect(page.locator("#checkpoint-label")).to_have_text(re.compile("^epoch 900"))
    page.hover("#chart-rdf svg", position={"x": 300, "y": 150})
    assert page.locator("#chart-rdf .cross[visibility=visible]").count() == 1
    page.screenshot(path=str(DOCS / "ui_experiment.png"), full_page=True)

    # Narrow window: nothing wider than the screen but the tables' own scrolling.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(url)
    wait_ready(page)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1


def _insert_finished_jobs(ui: Backend, owner: str, count: int) -> None:
    now = utcnow()
    with ui.db.unit_of_work() as uow:
        for i in range(count):
            created = now - timedelta(seconds=count - i)
            repository.insert_job(
                uow.session,
                {
                    "id": uuid.uuid4(),
                    "owner": owner,
                    "name": f"bulk-{i:04d}",
                    "status": "succeeded" if i % 3 else "failed",
                    "spec": tiny_spec(name=f"bulk-{i:04d}"),
                    "spec_hash": f"{i:064x}",
                    "request_hash": f"{i:064x}",
                    "idempotency_key": None,
                    "callback_url": None,
                    "queue": "cpu",
                    "n_runs": 1,
                    "cancel_requested": False,
                    "created_at": created,
                    "updated_at": created,
                    "finished_at": created,
                },
                ["bulk"] if i % 2 else [],
                [{"index": 0, "status": "succeeded", "queue": "cpu", "finished_at": created}],
            )


def test_a_thousand_experiments_are_paged(ui: Backend, page: Page) -> None:
    key = ui.key("ui-ken")
    _insert_finished_jobs(ui, "ui-ken", 1000)
    _large_experiment(ui, key)
    login(page, ui, key)
    started = time.perf_counter()
    page.goto(f"{ui.url}/ui/experiments")
    first_ms = (time.perf_counter() - started) * 1000
    rows = page.locator("#experiments tbody tr")
    assert rows.count() == 25
    first = rows.nth(1).get_attribute("data-id")
    page.screenshot(path=str(DOCS / "ui_experiments.png"), full_page=False)
    seen = set()
    for _ in range(3):
        names = page.locator("#experiments tbody tr td:nth-child(2)").all_inner_texts()
        assert len(names) == 25
        assert not seen & set(names)
        seen |= set(names)
        started = time.perf_counter()
        page.click("#next-page")
        page.wait_for_load_state()
        next_ms = (time.perf_counter() - started) * 1000
    assert page.locator("#experiments tbody tr").nth(1).get_attribute("data-id") != first
    print(f"\n1000-experiment list: first page {first_ms:.0f} ms, a later page {next_ms:.0f} ms")
    assert first_ms < INTERACTIVE_BUDGET_MS and next_ms < INTERACTIVE_BUDGET_MS
    # Filters combine with paging: only failed ones, newest first.
    page.goto(f"{ui.url}/ui/experiments?status=failed&tag=bulk")
    statuses = set(page.locator("#experiments tbody [data-field=status]").all_inner_texts())
    assert statuses == {"failed"}
    page.goto(f"{ui.url}/ui/experiments?name=bulk-0999")
    assert page.locator("#experiments tbody tr").count() == 1

    # Compare two experiments side by side: ticked in the list, then "Compare selected".
    page.goto(f"{ui.url}/ui/experiments")
    boxes = page.locator("#experiments tbody input[type=checkbox]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("text=Compare selected")
    page.wait_for_url(f"{ui.url}/ui/compare?*")
    page.wait_for_selector("html[data-ready=true]", state="attached")
    assert page.locator(".compare-grid section").count() == 2
    assert page.locator("#chart-compare-steps circle").count() == 20
    page.screenshot(path=str(DOCS / "ui_compare.png"), full_page=True)


def test_datasets_and_analyses_pages(ui: Backend, page: Page) -> None:
    import numpy as np

    from dfp.client import Client

    key = ui.key("ui-lena")
    rng = np.random.default_rng(0)
    with Client(ui.url, key, settings=ui.settings) as client:
        dataset = client.upload_dataset(
            {"h1": rng.normal(size=(40, 5)), "y": rng.integers(0, 3, size=40)}, name="reps"
        )
        analysis = client.analyze(dataset.id, features=["h1"], targets="y", name="layer-check")
    login(page, ui, key)
    page.click("nav >> text=Datasets")
    page.wait_for_url(f"{ui.url}/ui/datasets")
    row = page.locator(f"#datasets tr[data-id='{dataset.id}']")
    assert "reps" in row.inner_text()
    assert "h1 40×5" in row.inner_text()
    page.click("nav >> text=Analyses")
    page.wait_for_url(f"{ui.url}/ui/analyses")
    row = page.locator(f"#analyses tr[data-id='{analysis.id}']")
    assert "layer-check" in row.inner_text()
    assert row.locator("[data-field=status]").inner_text() == "queued"  # no worker runs here
    results = page.request.get(f"{ui.url}/v1/analyses/{analysis.id}/results")
    assert results.status == 200
    # Experiments and analyses are listed apart.
    page.goto(f"{ui.url}/ui/experiments")
    assert "layer-check" not in page.inner_text("#experiments")
