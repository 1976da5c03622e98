"""Outgoing httpx calls: the traceparent always travels, client spans once spans are recorded.

Run in a fresh interpreter: whether spans are recorded is process-wide, and other tests of this
process add span processors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    import httpx
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from servicekit import tracecontext

    async def main():
        tracecontext.configure_tracing("httpx-tests")
        seen = []

        def answer(request):
            seen.append(request.headers.get("traceparent"))
            return httpx.Response(200)

        client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        tracecontext.instrument_httpx(client)

        async def call():
            with tracecontext.tracer().start_as_current_span("caller") as span:
                await client.get("http://provider.test/v1/charges")
            return format(span.get_span_context().trace_id, "032x")

        def wrapped():
            return hasattr(client._transport.handle_async_request, "__wrapped__")

        before, wrapped_before = await call(), wrapped()
        exporter = InMemorySpanExporter()
        trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
        after, wrapped_after = await call(), wrapped()
        clients = [s.name for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
        print(json.dumps({
            "seen": seen,
            "trace_ids": [before, after],
            "client_spans": clients,
            "wrapped": [wrapped_before, wrapped_after],
        }))

    asyncio.run(main())
    """
)


def run_script() -> dict[str, list[Any]]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, list[Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_traceparent_travels_before_and_client_spans_start_once_recorded() -> None:
    result = run_script()

    before, after = result["trace_ids"]
    sent_before, sent_after = result["seen"]
    # Nothing listening yet: the transport is not wrapped (the instrumentation costs every call
    # it wraps), but the caller's trace goes to the server.
    assert result["wrapped"] == [False, True]
    assert sent_before is not None
    assert sent_before.split("-")[1] == before
    # Once a processor listens, the instrumentation is installed and records the call.
    assert sent_after is not None
    assert sent_after.split("-")[1] == after
    assert len(result["client_spans"]) == 1
