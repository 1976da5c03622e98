"""OpenTelemetry tracing across HTTP, SQL, Redis, the provider call, the outbox and AMQP.

``configure_tracing`` installs the SDK once per process. Spans are always created (so the W3C
``traceparent`` always travels and log lines carry a trace id); they are exported over OTLP only
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set.

The outbox stores the ``traceparent`` of the transaction that wrote the event; the relay
publishes under a producer span that is its child, and a consumer processes the message under a
consumer span continuing the same trace, so one trace runs from ``POST /orders`` to the email.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind

TRACER_NAME = "servicekit"
_instrumented_redis = False


def configure_tracing(service: str) -> None:
    """Install the SDK tracer provider unless one is installed already (tests install theirs)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def instrument_app(app: Any) -> None:
    """Server spans for every request except health checks and metrics."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="health/live,health/ready,metrics")


def instrument_engine(engine: Any) -> None:
    """Spans for every SQL statement of an AsyncEngine."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # The instrumentation's declared range stops below SQLAlchemy 2.1; its engine events work
    # unchanged there, so the dependency check is skipped rather than losing SQL spans.
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)


def instrument_redis() -> None:
    """Spans for Redis commands (process-wide, once)."""
    global _instrumented_redis
    if _instrumented_redis:
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument()
    _instrumented_redis = True


def instrument_httpx(client: Any) -> None:
    """Client spans (and traceparent propagation) for an httpx.AsyncClient."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client)


def tracer() -> trace.Tracer:
    """The tracer for the shared library's own spans."""
    return trace.get_tracer(TRACER_NAME)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, if there is one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits, or None."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def _context_from(headers: Mapping[str, Any]) -> otel_context.Context:
    carrier = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in headers.items()}
    return propagate.extract(carrier)


@contextlib.contextmanager
def producer_span(
    event_type: str, *, destination: str, message_id: str, headers: dict[str, Any]
) -> Iterator[Span]:
    """A span around a publish, child of the message's stored traceparent (or the current span).

    Writes the new span's traceparent into ``headers`` so the consumer continues the trace.
    """
    parent = _context_from(headers) if "traceparent" in headers else None
    with tracer().start_as_current_span(
        f"{event_type} publish",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": destination,
            "messaging.message.id": message_id,
            "messaging.rabbitmq.destination.routing_key": event_type,
        },
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        headers.update(carrier)
        yield span


@contextlib.contextmanager
def consumer_span(
    event_type: str, *, queue: str, message_id: str, headers: Mapping[str, Any]
) -> Iterator[Span]:
    """A span around handling a message, continuing the trace its headers carry."""
    with tracer().start_as_current_span(
        f"{event_type} process",
        context=_context_from(headers),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": queue,
            "messaging.message.id": message_id,
        },
    ) as span:
        yield span
