"""HTTP server spans (OpenTelemetry's FastAPI instrumentation, as every service installs it)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from servicekit import tracecontext
from servicekit.runtime import ServiceApp

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    tracecontext.configure_tracing("span-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def make_app() -> ServiceApp:
    app = ServiceApp()
    tracecontext.instrument_app(app)

    @app.get("/orders/{order_id}")
    async def read(order_id: str) -> dict[str, str | None]:
        return {"order_id": order_id, "trace_id": tracecontext.current_trace_id()}

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("boom")

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as client:
        return await client.get(path, headers=headers)


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


async def test_the_span_continues_the_callers_trace_and_is_named_by_route(
    exporter: InMemorySpanExporter,
) -> None:
    exporter.clear()
    response = await get(
        "/orders/o-1?expand=items", headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}
    )

    assert response.json()["trace_id"] == PARENT_TRACE  # current while the handler ran
    [span] = server_spans(exporter)
    assert span.name == "GET /orders/{order_id}"
    assert format(span.context.trace_id, "032x") == PARENT_TRACE
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_SPAN
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/orders/{order_id}"
    # The default (old) HTTP conventions; OTEL_SEMCONV_STABILITY_OPT_IN=http gives the new names.
    assert attributes.get("http.status_code", attributes.get("http.response.status_code")) == 200
    assert attributes.get("http.url", attributes.get("url.full")) == "http://svc.test/orders/o-1"
    # The query string can hold what a client searched for: no attribute keeps it.
    assert not [k for k, v in attributes.items() if "expand" in str(v)], attributes
    assert span.status.status_code is not StatusCode.ERROR


async def test_without_a_caller_trace_a_new_one_starts(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    first = (await get("/orders/o-2")).json()["trace_id"]
    second = (await get("/orders/o-3")).json()["trace_id"]

    assert first
    assert second
    assert first != second
    assert len(server_spans(exporter)) == 2


async def test_a_failing_request_is_an_error_span(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    response = await get("/broken")

    assert response.status_code == 500
    [span] = server_spans(exporter)
    assert span.name == "GET /broken"
    assert span.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in span.events)


async def test_health_checks_make_no_spans(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    assert (await get("/health/live")).status_code == 200
    assert server_spans(exporter) == []


class TestTheStandardVariables:
    def test_no_endpoint_exports_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        assert tracecontext._exporters() == []

    def test_an_endpoint_exports_over_otlp_unless_told_none(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        [exporter] = tracecontext._exporters()
        assert isinstance(exporter, OTLPSpanExporter)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        assert tracecontext._exporters() == []

    def test_console_and_unknown_exporters(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
        [exporter] = tracecontext._exporters()
        assert isinstance(exporter, ConsoleSpanExporter)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin_typo")
        with pytest.raises(ValueError, match="zipkin_typo"):
            tracecontext._exporters()

    def test_the_configured_sampler_decides_once_spans_are_listened_to(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
        provider = tracecontext._ListenedTracerProvider(resource=Resource.create({}))
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        with provider.get_tracer("t").start_as_current_span("s") as span:
            assert not span.is_recording()  # always_off, though a processor listens
            assert span.get_span_context().is_valid  # the trace id still travels
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
        provider = tracecontext._ListenedTracerProvider(resource=Resource.create({}))
        with provider.get_tracer("t").start_as_current_span("s") as span:
            assert not span.is_recording()  # nothing listens yet: dropped
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        with provider.get_tracer("t").start_as_current_span("s") as span:
            assert span.is_recording()
