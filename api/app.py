"""The FastAPI application: `create_app()` (uvicorn's factory) wires settings into routes."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from api import analyses, datasets, events, experiments, health, openapi, webhooks
from api.deps import reject_unknown_query
from api.errors import install_error_handlers
from api.metrics import LatencyMiddleware, create_registry
from api.rate_limit import create_rate_limiter
from api.request_body import RequestBodyGuard
from api.state import AppState, SchemaGate
from api.ui import pages as ui_pages
from api.ui.security import PageHeaders
from dfp import __version__
from dfp.queues.celery_app import create_celery
from dfp.queues.dispatch import CeleryDispatcher
from dfp.settings import Settings, get_settings
from dfp.storage.database import Database

log = logging.getLogger("api")

DESCRIPTION = """Submit Deep Frequency Principle experiments and fetch per-layer frequency ratios.

Every request except `/healthz`, `/readyz` and this documentation needs
`Authorization: Bearer <key>` (create one with `dfp keys create --owner NAME`); each key may
send a limited number of requests per minute (429 with `Retry-After` beyond it).
Request bodies are JSON (`Content-Type: application/json`) of limited size (413 beyond it),
except dataset uploads (`multipart/form-data`, limited by DFP_MAX_DATASET_BYTES).
Errors share one shape: `{"error": {"code", "message", "details"}}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: the environment's `DFP_*` variables)."""
    settings = settings or get_settings()
    db = Database.from_settings(settings)
    state = AppState(
        settings=settings,
        db=db,
        dispatcher=CeleryDispatcher(create_celery(settings)),
        schema=SchemaGate(db),
        rate_limiter=create_rate_limiter(settings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Requests do their database work in these threads; more threads than database
        # connections only adds contention for the GIL.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        # What start-up built (~160k objects) lives as long as the process: frozen, the garbage
        # collector's full passes skip it instead of stalling every request for ~0.1 s each.
        gc.collect()
        gc.freeze()
        schema = state.schema.check()
        if schema is None:
            log.error("database unreachable at start-up: %s", state.schema.error)
        elif schema.is_current:
            log.info("dfp API ready: %s", schema.describe())
        yield
        await state.rate_limiter.close()
        db.dispose()

    app = FastAPI(
        title="dfp",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.dfp = state
    registry, latency = create_registry(state)
    app.state.registry = registry
    install_error_handlers(app)
    app.include_router(experiments.router)
    events.install(app)
    app.include_router(datasets.router)
    app.include_router(analyses.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    # The web UI: pages on the same services, their assets served by dfp itself.
    app.include_router(ui_pages.router)
    app.mount("/ui/static", StaticFiles(directory=ui_pages.STATIC_DIR), name="ui-static")
    app.add_middleware(PageHeaders)
    openapi.install(app)
    # Bodies are checked before routing; the latency middleware times refusals too.
    upload_limit = settings.max_dataset_bytes + datasets.FORM_OVERHEAD_BYTES
    app.add_middleware(
        RequestBodyGuard,
        max_bytes=settings.max_body_bytes,
        uploads={datasets.UPLOAD_PATH: upload_limit},
    )
    app.add_middleware(LatencyMiddleware, histogram=latency)
    return app
