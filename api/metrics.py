"""Prometheus metrics: request latency (middleware), jobs by status and queue depth (at scrape)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.state import AppState
from dfp.experiments import repository
from dfp.queues import CPU_QUEUE, GPU_QUEUE
from dfp_engine.status import Status

log = logging.getLogger(__name__)


class ServiceCollector(Collector):
    """Reads the numbers that live elsewhere (database, broker) when Prometheus scrapes."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("dfp_jobs", "Experiments by status", labels=["status"])
        try:
            with self.state.db.unit_of_work() as uow:
                counts = repository.jobs_by_status(uow.session)
            for status in Status:
                jobs.add_metric([status.value], counts.get(status, 0))
        except Exception as exc:
            log.warning("metrics: cannot count jobs: %s", exc)
        yield jobs
        depth = GaugeMetricFamily(
            "dfp_queue_depth", "Run messages waiting in the broker", labels=["queue"]
        )
        for queue in (CPU_QUEUE, GPU_QUEUE):
            try:
                depth.add_metric([queue], self.state.dispatcher.depth(queue))
            except Exception as exc:
                log.warning("metrics: cannot read queue %s: %s", queue, exc)
        yield depth


def create_registry(state: AppState) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry(auto_describe=False)
    latency = Histogram(
        "dfp_http_request_duration_seconds",
        "HTTP request latency by route template",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    )
    registry.register(ServiceCollector(state))
    return registry, latency


class LatencyMiddleware:
    """Times each request; labels use the route template, so ids do not explode the series."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        observed = False

        def observe() -> None:
            nonlocal observed
            observed = True
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # An event stream lasts as long as its experiment: time until it opens.
                if (b"content-type", b"text/event-stream") in message.get("headers", []):
                    observe()
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            if not observed:
                observe()
