"""Prometheus metrics every service exposes on ``GET /metrics`` (its own port, not the gateway).

One uvicorn worker per instance is the deployment model (scale with instances), so the default
in-process registry is enough; with several workers in one container, point
``PROMETHEUS_MULTIPROC_DIR`` at a shared directory and the endpoint aggregates them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import Scope

from servicekit.breaker import State

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests handled.", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency.",
    ["service", "method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
EVENTS_PUBLISHED = Counter(
    "events_published_total", "Events published from the outbox.", ["service", "event_type"]
)
EVENTS_CONSUMED = Counter(
    "events_consumed_total",
    "Events consumed, by outcome (handled, duplicate).",
    ["service", "queue", "event_type", "outcome"],
)
EVENTS_RETRIED = Counter(
    "events_retried_total", "Events sent to a retry queue.", ["service", "queue", "event_type"]
)
EVENTS_DEAD_LETTERED = Counter(
    "events_dead_lettered_total", "Events parked in a DLQ.", ["service", "queue", "event_type"]
)
HANDLER_LATENCY = Histogram(
    "event_handler_duration_seconds",
    "Event handler latency (handler and its transaction).",
    ["service", "queue", "event_type"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
OUTBOX_PENDING = Gauge("outbox_pending_events", "Outbox rows not yet published.", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_pending_age_seconds", "Age of the oldest unpublished outbox row.", ["service"]
)
BREAKER_STATE = Gauge(
    "circuit_breaker_state", "Circuit state: 0 closed, 1 half-open, 2 open.", ["service", "breaker"]
)
BREAKER_TRANSITIONS = Counter(
    "circuit_breaker_transitions_total",
    "Circuit state changes.",
    ["service", "breaker", "from_state", "to_state"],
)
CACHE_REQUESTS = Counter(
    "cache_requests_total",
    "Cache lookups by result (hit, miss, error).",
    ["service", "cache", "result"],
)
LOGIN_THROTTLED = Counter(
    "auth_login_throttled_total", "Logins refused by throttling.", ["service", "scope"]
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "outbox_publish_failures_total",
    "Outbox rows whose publish failed; each is kept and retried with backoff.",
    ["service", "event_type"],
)
SWEPT = Counter(
    "sweeper_items_total",
    "Work found stalled by a sweeper and moved on, by sweeper and outcome.",
    ["service", "sweeper", "outcome"],
)
CONSUMERS_ACTIVE = Gauge("consumers_active", "Queues this instance is consuming from.", ["service"])

_STATE_VALUE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


def observe_http(service: str, method: str, scope: Scope, status: int, seconds: float) -> None:
    """Record one HTTP request by its route template (never the raw path)."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        # Only static routes (docs, OpenAPI) lack a template; unknown paths would explode the
        # label space, so they share one label.
        template = scope["path"] if status != 404 else "unmatched"
    key = (service, method, template, status)
    series = _http_series.get(key)
    if series is None:
        series = (
            HTTP_REQUESTS.labels(service, method, template, str(status)),
            HTTP_LATENCY.labels(service, method, template),
        )
        if len(_http_series) < _MAX_REMEMBERED_SERIES:
            _http_series[key] = series
    series[0].inc()
    series[1].observe(seconds)


# Label lookups take a lock and build a key per call; the few series a service uses are kept.
_MAX_REMEMBERED_SERIES = 2048
_http_series: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}


class ConsumerMetrics:
    """A consumer observer recording handled, duplicate, retried and parked events."""

    def __init__(self, service: str) -> None:
        self.service = service

    def expose(self, queue: str, event_types: Iterable[str]) -> None:
        """Export a queue's series at zero from the start, so rates and alerts see no gaps."""
        for event_type in event_types:
            for outcome in ("handled", "duplicate"):
                EVENTS_CONSUMED.labels(self.service, queue, event_type, outcome)
            EVENTS_RETRIED.labels(self.service, queue, event_type)
            EVENTS_DEAD_LETTERED.labels(self.service, queue, event_type)

    def on_handled(self, queue: str, event_type: str, seconds: float) -> None:
        EVENTS_CONSUMED.labels(self.service, queue, event_type, "handled").inc()
        HANDLER_LATENCY.labels(self.service, queue, event_type).observe(seconds)

    def on_duplicate(self, queue: str, event_type: str) -> None:
        EVENTS_CONSUMED.labels(self.service, queue, event_type, "duplicate").inc()

    def on_retry(self, queue: str, event_type: str, reason: str) -> None:
        EVENTS_RETRIED.labels(self.service, queue, event_type).inc()

    def on_dead_letter(self, queue: str, event_type: str, reason: str) -> None:
        EVENTS_DEAD_LETTERED.labels(self.service, queue, event_type).inc()


def breaker_observer(service: str, breaker_name: str) -> Callable[[str, State, State], None]:
    """An ``on_state_change`` callback for CircuitBreaker that records state and transitions."""
    BREAKER_STATE.labels(service, breaker_name).set(0)

    def on_change(name: str, old: State, new: State) -> None:
        BREAKER_STATE.labels(service, name).set(_STATE_VALUE[new])
        BREAKER_TRANSITIONS.labels(service, name, old.value, new.value).inc()

    return on_change


def metrics_router() -> APIRouter:
    """``GET /metrics`` in the Prometheus text format (left out of the OpenAPI document)."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        registry: CollectorRegistry = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
