"""OpenTelemetry tracing across HTTP, SQL, Redis, the provider call, the outbox and AMQP.

``configure_tracing`` installs the SDK once per process. Spans are always created (so the W3C
``traceparent`` always travels and log lines carry a trace id); they are exported over OTLP only
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set. While no
span processor is installed (no exporter, no test listening) spans are not recorded: recording
attributes and events nobody reads cost a good part of every request. For the same reason the
SQL and Redis instrumentations are installed only once something listens (``when_listened``),
and HTTP server spans come from ``ServerSpanMiddleware``, which does no attribute work for a
span that is not recorded.

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
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind, StatusCode
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACER_NAME = "servicekit"
_instrumented_redis = False
_until_listened: list[Callable[[], None]] = []


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
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


class ServerSpanMiddleware:
    """A SERVER span around every HTTP request but health checks and scrapes (pure ASGI).

    It continues the caller's W3C trace context and is current while the request runs, so log
    lines carry its trace id and the outbox stores its ``traceparent``. Named and attributed like
    the OpenTelemetry HTTP conventions (``GET /orders/{order_id}``, ``http.route``,
    ``http.response.status_code``, ``url.full``) — but only when the span is recorded.
    """

    def __init__(
        self, app: ASGIApp, *, skip_prefixes: Sequence[str] = ("/health", "/metrics")
    ) -> None:
        self.app = app
        self.skip = tuple(skip_prefixes)
        self.fields = {name.encode() for name in propagate.get_global_textmap().fields}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip):
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in self.fields
        }
        parent = propagate.extract(carrier) if carrier else None
        method: str = scope["method"]
        span = tracer().start_span(method, context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        if not span.is_recording():
            try:
                await self.app(scope, receive, send)
            finally:
                otel_context.detach(token)
                span.end()
            return

        status: int | None = None

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except BaseException as exc:
            span.record_exception(exc)
            status = status or 500
            raise
        finally:
            otel_context.detach(token)
            _describe_server_span(span, scope, status)
            span.end()


def _describe_server_span(span: Span, scope: Scope, status: int | None) -> None:
    route = getattr(scope.get("route"), "path", None)
    method: str = scope["method"]
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
    query = scope.get("query_string", b"").decode("latin-1")
    url = f"{scope.get('scheme', 'http')}://{host or 'unknown'}{scope.get('root_path', '')}"
    url += scope["path"] + (f"?{query}" if query else "")
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "url.full": url,
    }
    if route:
        attributes["http.route"] = route
        span.update_name(f"{method} {route}")
    if status is not None:
        attributes["http.response.status_code"] = status
    span.set_attributes(attributes)
    if status is None or status >= 500:
        span.set_status(StatusCode.ERROR)


def instrument_engine(engine: Any) -> None:
    """Spans for every SQL statement of an AsyncEngine (from when spans are recorded)."""
    engine_ref = weakref.ref(engine)

    def install() -> None:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        live = engine_ref()
        if live is not None:
            # The instrumentation's declared range stops below SQLAlchemy 2.1; its engine events
            # work unchanged there, so the dependency check is skipped rather than losing spans.
            SQLAlchemyInstrumentor().instrument(engine=live.sync_engine, skip_dep_check=True)

    when_listened(install)


def instrument_redis() -> None:
    """Spans for Redis commands (process-wide, once, from when spans are recorded)."""

    def install() -> None:
        global _instrumented_redis
        if _instrumented_redis:
            return
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument()
        _instrumented_redis = True

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
