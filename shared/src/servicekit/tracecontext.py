"""OpenTelemetry tracing across HTTP, SQL, Redis, the provider call, the outbox and AMQP.

``configure_tracing`` installs the SDK once per process. Spans are always created (so the W3C
``traceparent`` always travels and log lines carry a trace id); they are exported over OTLP only
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set. While no
span processor is installed (no exporter, no test listening) spans are not recorded: recording
attributes and events nobody reads cost a good part of every request.

The outbox stores the ``traceparent`` of the transaction that wrote the event; the relay
publishes under a producer span that is its child, and a consumer processes the message under a
consumer span continuing the same trace, so one trace runs from ``POST /orders`` to the email.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

TRACER_NAME = "servicekit"
_instrumented_redis = False


class _RecordWhenListened(Sampler):
    """Record (and sample) spans once a span processor is installed; until then drop them.

    A dropped span still has a valid context: trace ids are generated, propagated in
    ``traceparent`` and put in log lines, exactly as before; only the recording is skipped.
    """

    def __init__(self) -> None:
        self.listened = False

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        decide = ALWAYS_ON if self.listened else ALWAYS_OFF
        return decide.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "RecordWhenListened"


class _ListenedTracerProvider(TracerProvider):
    """The SDK provider, telling its sampler when the first span processor arrives."""

    def __init__(self, *, resource: Resource) -> None:
        self._listening = _RecordWhenListened()
        super().__init__(resource=resource, sampler=self._listening)

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self._listening.listened = True


def configure_tracing(service: str) -> None:
    """Install the SDK tracer provider unless one is installed already (tests install theirs)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = _ListenedTracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def instrument_app(app: Any) -> None:
    """Server spans for every request except health checks and metrics.

    One span per request: the per-message ``http receive`` / ``http send`` child spans say
    nothing the server span does not, and cost as much as it does.
    """
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls="health/live,health/ready,metrics",
        exclude_spans=["receive", "send"],
    )


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
