"""The web UI's pages: login, experiments, one experiment, compare, submit.

Each page does its work through the same service functions as the JSON routes, in one unit of
work, as the owner of the browser's session. The charts' scripts read the JSON routes
themselves (`/v1/...`, authenticated by the same session cookie).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.deps import rate_limit
from api.experiments import NAME_FILTER_PATTERN
from api.state import AppState
from api.ui import security
from api.ui.spec_text import (
    FieldProblem,
    SpecTextError,
    example_names,
    example_text,
    parse_spec_text,
    validation_problems,
)
from dfp import __version__
from dfp.datasets import service as datasets
from dfp.errors import DfpError, ForbiddenError
from dfp.experiments import repository, service
from dfp.experiments.schemas import TAG_PATTERN, ExperimentCreate
from dfp.keys.sessions import VerifiedSession, open_session, verify_session
from dfp.storage.database import UnitOfWork
from dfp_engine.status import Status

T = TypeVar("T")

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PAGE_SIZE = 25
STATUSES = tuple(status.value for status in Status)
MAX_COMPARED = 8
MAX_FILTER = 200

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class LoginRequiredError(Exception):
    """No session, or one that expired or whose key was revoked."""


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.dfp
    state.schema.require()
    return state


def render(
    request: Request,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    context.setdefault("owner", None)
    context.setdefault("csrf_token", None)
    html = templates.get_template(template).render(request=request, version=__version__, **context)
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, exc: DfpError, session: VerifiedSession | None) -> HTMLResponse:
    return render(
        request,
        "error.html",
        exc.status_code,
        error=exc,
        owner=session.owner if session else None,
        csrf_token=session.csrf_token if session else None,
    )


def to_login() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=303)


def _in_session(
    state: AppState,
    request: Request,
    work: Callable[[UnitOfWork, VerifiedSession], T],
    csrf: str | None = None,
) -> T:
    """`work` in one unit of work as the session's owner; a posted form must carry the token."""
    token = security.session_token(request)
    if token is None:
        raise LoginRequiredError
    with state.db.unit_of_work() as uow:
        session = verify_session(uow.session, token)
        if session is None:
            raise LoginRequiredError
        if request.method == "POST" and not session.accepts(csrf):
            raise ForbiddenError(
                "this form lacks its CSRF token (or it belongs to another session): reload the "
                "page and try again",
                code="csrf_failed",
            )
        return work(uow, session)


async def page(
    request: Request,
    work: Callable[[UnitOfWork, VerifiedSession], Response],
    csrf: str | None = None,
) -> Response:
    """Run a page's work; no session sends the browser to the login page, errors get a page."""
    try:
        state = _state(request)
        token = security.session_token(request)
        if token is not None:
            await rate_limit(state, token.key_id)
        return await run_in_threadpool(_in_session, state, request, work, csrf)
    except LoginRequiredError:
        response = to_login()
        security.clear_session_cookie(response, request)
        return response
    except DfpError as exc:
        return error_page(request, exc, None)


async def _form(request: Request) -> dict[str, Any]:
    form = await request.form()
    return {key: form.get(key) for key in form}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# ------------------------------------------------------------------------------ login


@router.get("")
async def ui_root(request: Request) -> Response:
    """The UI's entry: the experiments list (which sends a browser without a session to login)."""
    if security.session_token(request) is None:
        return to_login()
    return RedirectResponse("/ui/experiments", status_code=303)


def _login_page(request: Request, status_code: int = 200, error: str | None = None) -> Response:
    nonce = security.new_login_nonce()
    response = render(request, "login.html", status_code, login_nonce=nonce, error=error)
    security.set_login_nonce(response, request, nonce)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    """Exchange an API key for a session cookie; the key itself is not kept by the browser."""
    form = await _form(request)
    api_key = _text(form.get("api_key")).strip()
    if not security.login_nonce_matches(request, _text(form.get("login_nonce"))):
        return _login_page(request, 403, "The login form expired: please enter your key again.")
    if not api_key:
        return _login_page(request, 422, "api_key: enter your API key (dfp keys create).")
    try:
        state = _state(request)
        await rate_limit(state, api_key)
    except DfpError as exc:
        return _login_page(request, exc.status_code, exc.message)
    lifetime = state.settings.ui_session_seconds

    def work() -> Any:
        with state.db.unit_of_work() as uow:
            return open_session(uow.session, api_key, lifetime)

    token = await run_in_threadpool(work)
    if token is None:
        return _login_page(request, 401, "api_key: invalid or revoked API key.")
    response = RedirectResponse("/ui/experiments", status_code=303)
    security.set_session_cookie(response, request, token, lifetime)
    response.delete_cookie(security.LOGIN_COOKIE, path="/ui/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the browser's session (the cookie is cleared; the key stays valid)."""
    form = await _form(request)
    result = await page(request, lambda uow, session: to_login(), _text(form.get("csrf_token")))
    if result.status_code == 303:
        security.clear_session_cookie(result, request)
    return result


# ------------------------------------------------------------------------ experiments


def _list_filters(request: Request) -> tuple[dict[str, Any], list[str]]:
    """The list's filters from the query string, blanks meaning 'any', and what is wrong."""
    params = request.query_params
    problems: list[str] = []
    statuses = [s for s in params.getlist("status") if s]
    for status in statuses:
        if status not in STATUSES:
            problems.append(f"status: '{status}' is not one of {', '.join(STATUSES)}")
    tag = params.get("tag", "").strip() or None
    if tag is not None and (len(tag) > 64 or not re.match(TAG_PATTERN, tag)):
        problems.append("tag: letters, digits and . _ : / = - (at most 64)")
    name = params.get("name", "").strip() or None
    if name is not None and (len(name) > MAX_FILTER or not re.match(NAME_FILTER_PATTERN, name)):
        problems.append(f"name: at most {MAX_FILTER} characters, none of them control characters")
    cursor = params.get("cursor") or None
    filters = {"status": statuses, "tag": tag, "name": name, "cursor": cursor}
    return filters, problems


@router.get("/experiments")
async def experiments_page(request: Request) -> Response:
    """Your experiments, newest first, a page at a time, with filters and live progress."""
    return await _jobs_page(request, service.EXPERIMENT, "experiments.html")


def _experiment_context(uow: UnitOfWork, owner: str, experiment_id: uuid.UUID) -> dict[str, Any]:
    job = service.get_job(uow.session, owner, experiment_id)
    runs = repository.runs_of(uow.session, job.id)
    experiment = service.experiment_public(uow.session, job, runs)
    sweep = job.spec.get("sweep") or None
    return {
        "experiment": experiment,
        "spec_yaml": yaml.safe_dump(job.spec, sort_keys=False, allow_unicode=True),
        "sweep_field": sweep.get("field") if isinstance(sweep, dict) else None,
        "page_data": {
            "experiment": experiment.model_dump(mode="json"),
            "sweep_field": sweep.get("field") if isinstance(sweep, dict) else None,
        },
    }


@router.get("/experiments/{experiment_id}")
async def experiment_page(request: Request, experiment_id: uuid.UUID) -> Response:
    """One experiment: live status, spec, reproducibility, runs, interactive charts."""

    def work(uow: UnitOfWork, session: VerifiedSession) -> Response:
        try:
            context = _experiment_context(uow, session.owner, experiment_id)
        except DfpError as exc:
            return error_page(request, exc, session)
        return render(
            request,
            "experiment.html",
            owner=session.owner,
            csrf_token=session.csrf_token,
            **context,
        )

    return await page(request, work)


def _after_action(
    request: Request,
    action: Callable[[UnitOfWork, str], Any],
    redirect: str,
) -> Callable[[UnitOfWork, VerifiedSession], Response]:
    def work(uow: UnitOfWork, session: VerifiedSession) -> Response:
        try:
            action(uow, session.owner)
        except DfpError as exc:
            return error_page(request, exc, session)
        return RedirectResponse(redirect, status_code=303)

    return work


@router.post("/experiments/{experiment_id}/cancel")
async def cancel_experiment(request: Request, experiment_id: uuid.UUID) -> Response:
    form = await _form(request)
    work = _after_action(
        request,
        lambda uow, owner: service.cancel(uow, owner, experiment_id),
        f"/ui/experiments/{experiment_id}",
    )
    return await page(request, work, _text(form.get("csrf_token")))


@router.post("/experiments/{experiment_id}/delete")
async def delete_experiment(request: Request, experiment_id: uuid.UUID) -> Response:
    form = await _form(request)
    work = _after_action(
        request,
        lambda uow, owner: service.delete(uow, owner, experiment_id),
        "/ui/experiments",
    )
    return await page(request, work, _text(form.get("csrf_token")))


# -------------------------------------------------------------- datasets, analyses


@router.get("/datasets")
async def datasets_page(request: Request) -> Response:
    """Your uploaded datasets, newest first: the arrays each holds, to name in specs."""
    cursor = request.query_params.get("cursor") or None

    def work(uow: UnitOfWork, session: VerifiedSession) -> Response:
        listing = datasets.list_datasets(uow.session, session.owner, limit=PAGE_SIZE, cursor=cursor)
        return render(
            request,
            "datasets.html",
            owner=session.owner,
            csrf_token=session.csrf_token,
            listing=listing,
            cursor=cursor,
        )

    return await page(request, work)


@router.get("/analyses")
async def analyses_page(request: Request) -> Response:
    """Your analyses of uploaded representations, newest first, with live progress."""
    return await _jobs_page(request, service.ANALYSIS, "analyses.html")


async def _jobs_page(request: Request, kind: str, template: str) -> Response:
    """A page of the owner's jobs of one kind, with the list's filters."""
    filters, problems = _list_filters(request)

    def work(uow: UnitOfWork, session: VerifiedSession) -> Response:
        listing = None
        if not problems:
            listing = service.list_experiments(
                uow.session,
                session.owner,
                limit=PAGE_SIZE,
                cursor=filters["cursor"],
                kind=kind,
                status=filters["status"],
                tag=filters["tag"],
                name=filters["name"],
            )
        query = [("status", s) for s in filters["status"]]
        query += [(k, filters[k]) for k in ("tag", "name") if filters[k]]
        return render(
            request,
            template,
            200 if not problems else 422,
            owner=session.owner,
            csrf_token=session.csrf_token,
            listing=listing,
            filters=filters,
            problems=problems,
            statuses=STATUSES,
            query=query,
        )

    return await page(request, work)


# ---------------------------------------------------------------------------- compare


def _compared_ids(request: Request) -> list[uuid.UUID]:
    values = [v for v in request.query_params.getlist("id") if v]
    ids: list[uuid.UUID] = []
    for value in values[:MAX_COMPARED]:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            raise DfpError(
                f"id: '{value[:40]}' is not an experiment id", status_code=422, code="invalid_id"
            ) from None
    return list(dict.fromkeys(ids))


@router.get("/compare")
async def compare_page(request: Request) -> Response:
    """Two or more experiments side by side: steps to target and the summary layer's peaks."""

    def work(uow: UnitOfWork, session: VerifiedSession) -> Response:
        try:
            ids = _compared_ids(request)
            jobs = [service.get_job(uow.session, session.owner, i) for i in ids]
        except DfpError as exc:
            return error_page(request, exc, session)
        compared = [
            {
                "id": str(job.id),
                "name": job.name,
                "status": job.status,
                "sweep_field": (job.spec.get("sweep") or {}).get("field"),
                "summary": job.summary or [],
            }
            for job in jobs
        ]
        return render(
            request,
            "compare.html",
            owner=session.owner,
            csrf_token=session.csrf_token,
            compared=compared,
        )

    return await page(request, work)


# ----------------------------------------------------------------------------- submit


def _submit_page(
    request: Request,
    session: VerifiedSession,
    *,
    text: str = "",
    tags: str = "",
    problems: list[FieldProblem] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "submit.html",
        status_code,
        owner=session.owner,
        csrf_token=session.csrf_token,
        spec_text=text,
        tags=tags,
        problems=problems or [],
        examples=example_names(),
    )


@router.get("/submit")
async def submit_form(request: Request) -> Response:
    """Paste or upload a spec, or start from an example."""
    example = request.query_params.get("example", "")

    def work(uow: UnitOfWork, session: VerifiedSession) -> Response:
        text = example_text(example) if example else ""
        if text is None:
            problem = FieldProblem("example", f"no example named '{example[:64]}'")
            return _submit_page(request, session, problems=[problem], status_code=404)
        return _submit_page(request, session, text=text)

    return await page(request, work)


def _submission(text: str, tags: str) -> ExperimentCreate:
    document = parse_spec_text(text)
    tag_list = [t for t in (part.strip() for part in tags.split(",")) if t]
    if tag_list:
        document = {**document, "tags": tag_list}
    try:
        return ExperimentCreate.model_validate(document)
    except ValidationError as exc:
        raise SpecTextError(validation_problems(text, exc)) from None


@router.post("/submit")
async def submit(request: Request) -> Response:
    """Validate the spec on the server, queue it, and go to its page; errors name the field."""
    form = await _form(request)
    upload = form.get("spec_file")
    text = _text(form.get("spec_text"))
    if isinstance(upload, UploadFile) and upload.filename:
        raw = await upload.read()
        text = raw.decode("utf-8", errors="replace")
    tags = _text(form.get("tags"))

    def work(uow: UnitOfWork, session: VerifiedSession) -> Response:
        state: AppState = request.app.state.dfp
        try:
            body = _submission(text, tags)
            submission = service.submit(
                uow,
                session.owner,
                body,
                settings=state.settings,
                dispatcher=state.dispatcher,
            )
        except SpecTextError as exc:
            return _submit_page(
                request, session, text=text, tags=tags, problems=exc.problems, status_code=422
            )
        except DfpError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            field = str(details.get("field") or details.get("limit") or "spec")
            problems = [FieldProblem(field, exc.message)]
            return _submit_page(
                request,
                session,
                text=text,
                tags=tags,
                problems=problems,
                status_code=exc.status_code,
            )
        return RedirectResponse(f"/ui/experiments/{submission.job.id}", status_code=303)

    return await page(request, work, _text(form.get("csrf_token")))
