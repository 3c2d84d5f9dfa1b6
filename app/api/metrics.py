"""Prometheus `/metrics`: this API process's HTTP traffic, plus jobs and workers read from the database.

Workers may run on other hosts with no port to scrape, so their numbers travel in their heartbeat row
(worker/stats.py) and are exposed here at scrape time, like the job counts: the database is the one
place that knows the whole system. Everything lives in a registry of our own (not prometheus_client's
global one), so building several apps in one process (tests) registers nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import get_settings
from app.core.db import read_session_scope
from app.crud import active_model_version, count_jobs_by_status, live_workers

REGISTRY = CollectorRegistry()
UNMATCHED_ROUTE = "<unmatched>"  # 404s: one label value, not one per scanned URL

HTTP_REQUESTS = Counter(
    "enhancer_http_requests",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "enhancer_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status code.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)


def route_template(scope: Scope) -> str:
    """The matched route's full path template (/v1/jobs/{job_id}), never the raw path."""
    # FastAPI >= 0.13x keeps included routers nested: scope["route"] is then the inner route without the
    # routers' prefixes, and the full template sits in the effective route context.
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    for candidate in (effective, scope.get("route")):
        path = getattr(candidate, "path", None)
        if isinstance(path, str) and path:
            return path
    return UNMATCHED_ROUTE


class MetricsMiddleware:
    """Counts and times every HTTP request; an exception that escapes the app counts as a 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            labels = (route_template(scope), scope.get("method", ""), str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)


def _stat(stats: dict[str, Any], key: str) -> float:
    value = stats.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


class DatabaseCollector(Collector):
    """Jobs by state, queue depth, workers and their generation/model numbers, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        settings = get_settings()
        up = GaugeMetricFamily("enhancer_metrics_database_up", "1 when the database answered this scrape.")
        try:
            with read_session_scope() as session:
                jobs = count_jobs_by_status(session)
                workers = live_workers(session, within_seconds=settings.worker_heartbeat_seconds * 3 + 5)
                active = active_model_version(session)
                active_id = active.id if active is not None else None
                rows = [(w.hostname, w.jobs_done, dict(w.stats or {}), w.model_version_id) for w in workers]
        except Exception:  # a scrape must answer even while the database is down: say so instead
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        by_state = GaugeMetricFamily("enhancer_jobs", "Jobs in the jobs table, by state.", labels=["state"])
        for state, count in sorted(jobs.items()):
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily(
            "enhancer_queue_depth",
            "Jobs waiting for a worker (queued in the jobs table).",
            value=jobs.get("queued", 0),
        )
        yield GaugeMetricFamily("enhancer_workers_live", "Workers with a recent heartbeat.", value=len(rows))

        active_info = GaugeMetricFamily(
            "enhancer_active_model_info",
            "The registry's active model version (value 1).",
            labels=["model_version"],
        )
        if active_id is not None:
            active_info.add_metric([active_id], 1)
        yield active_info
        yield from self._worker_metrics(rows)

    @staticmethod
    def _worker_metrics(rows: list[tuple[str, int, dict[str, Any], str | None]]) -> Iterator[Metric]:
        worker = ["worker"]
        succeeded = CounterMetricFamily(
            "enhancer_worker_jobs_succeeded", "Jobs a worker finished.", labels=worker
        )
        tokens = CounterMetricFamily("enhancer_worker_generated_tokens", "Tokens generated.", labels=worker)
        items = CounterMetricFamily(
            "enhancer_worker_generated_items", "Items run through the model.", labels=worker
        )
        seconds = CounterMetricFamily(
            "enhancer_worker_generation_seconds", "Wall time spent in generate calls.", labels=worker
        )
        tokens_rate = GaugeMetricFamily(
            "enhancer_generation_tokens_per_second",
            "Tokens per second of the worker's last batch.",
            labels=worker,
        )
        items_rate = GaugeMetricFamily(
            "enhancer_generation_items_per_second",
            "Items per second of the worker's last batch.",
            labels=worker,
        )
        model_labels = ["worker", "model_version", "backend", "device", "precision"]
        load_seconds = GaugeMetricFamily(
            "enhancer_model_load_seconds", "Seconds the worker took to load its model.", labels=model_labels
        )
        model_info = GaugeMetricFamily(
            "enhancer_worker_model_info", "The model version a worker serves (value 1).", labels=model_labels
        )
        for hostname, jobs_done, stats, version_id in rows:
            succeeded.add_metric([hostname], jobs_done)
            tokens.add_metric([hostname], _stat(stats, "tokens_total"))
            items.add_metric([hostname], _stat(stats, "items_total"))
            seconds.add_metric([hostname], _stat(stats, "generation_seconds_total"))
            tokens_rate.add_metric([hostname], _stat(stats, "last_tokens_per_second"))
            items_rate.add_metric([hostname], _stat(stats, "last_items_per_second"))
            model = stats.get("model") or {}
            version = str(model.get("version") or version_id or "")
            if version:
                labels = [
                    hostname,
                    version,
                    *(str(model.get(k, "")) for k in ("backend", "device", "precision")),
                ]
                model_info.add_metric(labels, 1)
                if "load_seconds" in model:
                    load_seconds.add_metric(labels, _stat(model, "load_seconds"))
        yield from (succeeded, tokens, items, seconds, tokens_rate, items_rate, load_seconds, model_info)


REGISTRY.register(DatabaseCollector())


def metrics_endpoint() -> Response:
    """Prometheus text exposition format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, *, dependencies: Sequence[Any] = ()) -> None:
    """Add the request middleware and GET /metrics (behind `dependencies`: who may read it) to the app."""
    app.add_middleware(MetricsMiddleware)
    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        tags=["operations"],
        include_in_schema=False,
        dependencies=list(dependencies),
    )
