"""OpenTelemetry tracing across HTTP, SQL, Redis, the provider call, the outbox and AMQP.

``configure_tracing`` installs the SDK once per process and reads the standard variables:
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``; ``otlp`` by default once
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, else ``none``),
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, the exporter's own ``OTEL_EXPORTER_OTLP_*``
and ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` / ``OTEL_PYTHON_EXCLUDED_URLS`` (health checks and
scrapes by default). Spans are always created, so the W3C ``traceparent`` always travels and log
lines carry a trace id; while no span processor is installed (no exporter, no test listening)
they are not recorded, because recording attributes nobody reads costs a good part of every
request. For the same reason the SQL and Redis instrumentations are installed only once
something listens (``when_listened``).

The spans come from OpenTelemetry's maintained instrumentations: FastAPI (server), asyncpg
(SQL), redis-py, httpx (client). Only the messaging pair is our own, because no library does it:
the outbox stores the ``traceparent`` of the transaction that wrote the event, and the relay
publishes under a producer span that continues it, hours later if the broker was down.
(``opentelemetry-instrumentation-aio-pika`` would start a fresh trace at the publish, and its
declared range stops below aio-pika 10.)

The outbox stores the ``traceparent`` of the transaction that wrote the event; the relay
publishes under a producer span that is its child, and a consumer processes the message under a
consumer span continuing the same trace, so one trace runs from ``POST /orders`` to the email.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

TRACER_NAME = "servicekit"
# The URL attributes of server spans, old and new semantic conventions; the query is dropped.
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target")
_until_listened: list[Callable[[], None]] = []


class _RecordWhenListened(Sampler):
    """The configured sampler once a span processor is installed; until then drop every span.

    A dropped span still has a valid context: trace ids are generated, propagated in
    ``traceparent`` and put in log lines, exactly as before; only the recording is skipped.
    """

    def __init__(self, configured: Sampler) -> None:
        self.configured = configured
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
        decide = self.configured if self.listened else ALWAYS_OFF
        return decide.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RecordWhenListened({self.configured.get_description()})"


class _ListenedTracerProvider(TracerProvider):
    """The SDK provider, telling its sampler when the first span processor arrives."""

    def __init__(self, *, resource: Resource) -> None:
        super().__init__(resource=resource)  # the sampler OTEL_TRACES_SAMPLER names
        self._listening = _RecordWhenListened(self.sampler)
        self.sampler = self._listening

    @property
    def listened(self) -> bool:
        return self._listening.listened

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        if not self._listening.listened:
            self._listening.listened = True
            waiting = list(_until_listened)
            _until_listened.clear()
            for install in waiting:
                install()


def spans_recorded() -> bool:
    """False while this process's spans are dropped (see ``_RecordWhenListened``): cheap to ask."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, _ListenedTracerProvider) or provider.listened


def when_listened(install: Callable[[], None]) -> None:
    """Run ``install`` once spans are recorded: now if they are, else at the first processor.

    For instrumentation that costs every call it wraps even when its spans are dropped.
    """
    provider = trace.get_tracer_provider()
    if isinstance(provider, _ListenedTracerProvider) and not provider.listened:
        _until_listened.append(install)
    else:
        install()


def configure_tracing(service: str) -> None:
    """Install the SDK tracer provider unless one is installed already (tests install theirs)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = _ListenedTracerProvider(resource=Resource.create({"service.name": service}))
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _exporters() -> list[SpanExporter]:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    names = os.environ.get("OTEL_TRACES_EXPORTER") or ("otlp" if endpoint else "none")
    exporters: list[SpanExporter] = []
    for name in (part.strip() for part in names.split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", ""):
            raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r}")
    return exporters


def instrument_app(app: Any) -> None:
    """SERVER spans for every request of a FastAPI app (OpenTelemetry's FastAPI instrumentation).

    Named and attributed by the HTTP conventions (``GET /orders/{order_id}``, ``http.route``);
    the URL attributes keep the path but not the query string, which can carry what a client
    searched for. Health checks and scrapes are not traced unless the standard variables say
    otherwise.
    """
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    configured = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS"
    )
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=None if configured else "/health,/metrics",
        server_request_hook=_without_query,
        exclude_spans=["receive", "send"],
    )


def _without_query(span: Span, scope: dict[str, Any]) -> None:
    if not span.is_recording() or not scope.get("query_string"):
        return
    attributes = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str):
            span.set_attribute(name, value.split("?", 1)[0])
    if "url.query" in attributes:
        span.set_attribute("url.query", "")


def instrument_asyncpg() -> None:
    """Spans for every SQL statement (process-wide, once, from when spans are recorded).

    asyncpg's own instrumentation: SQLAlchemy's declares support below 2.1 only. A span carries
    the statement as sent, with ``$1`` placeholders; parameters are not captured.
    """

    def install() -> None:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        instrumentor = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:  # a singleton: once per process
            instrumentor.instrument()

    when_listened(install)


def instrument_redis() -> None:
    """Spans for Redis commands (process-wide, once, from when spans are recorded)."""

    def install() -> None:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        instrumentor = RedisInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:  # a singleton: once per process
            instrumentor.instrument()

    when_listened(install)


def instrument_httpx(client: Any) -> None:
    """traceparent propagation for an httpx.AsyncClient, and client spans once recorded.

    The instrumentation costs about 300 µs of CPU per request (a quarter of what httpx itself
    costs) even while its spans are dropped; until something listens, a request hook only puts
    the current ``traceparent`` on each request. Once installed, the instrumentation writes it
    again from its client span.
    """

    async def put_traceparent(request: Any) -> None:
        propagate.inject(request.headers)

    client.event_hooks["request"].append(put_traceparent)
    client_ref = weakref.ref(client)

    def install() -> None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        live = client_ref()
        if live is not None:
            HTTPXClientInstrumentor.instrument_client(live)

    when_listened(install)


_tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The tracer for the shared library's own spans (one per tracer provider)."""
    global _tracer
    provider = trace.get_tracer_provider()
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer(TRACER_NAME))
    return _tracer[1]


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
