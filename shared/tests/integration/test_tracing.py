"""One trace from the transaction that writes an event to the handler that consumes it."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from servicekit import tracecontext
from servicekit.bus import ReceivedEvent
from servicekit.outbox import Outbox, OutboxRelay
from servicekit.testing.waiting import wait_until

from .support import outbox
from .test_messaging import start_consumer, user_event


class TestTracePropagation:
    async def test_trace_runs_from_the_writer_through_outbox_and_amqp_to_the_handler(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine, producer_outbox: Outbox
    ) -> None:
        producer = await bus_factory("producer")
        consumer_bus = await bus_factory("consumer")
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))

        seen: list[str | None] = []

        async def handler(event: ReceivedEvent, session: AsyncSession) -> None:
            seen.append(tracecontext.current_trace_id())

        await start_consumer(consumer_bus, sessions, handler)
        relay = OutboxRelay(engine=engine, table=outbox, publish=producer.publish_raw)
        await relay.start()
        with tracecontext.tracer().start_as_current_span("POST /things", kind=SpanKind.SERVER):
            request_trace = tracecontext.current_trace_id()
            async with sessions() as session, session.begin():
                await producer_outbox.add(session, user_event())

        async def handled() -> bool:
            return len(seen) == 1

        await wait_until(handled, what="handled")
        await relay.stop()
        assert seen == [request_trace]
        spans = {s.name: s for s in exporter.get_finished_spans()}
        assert spans["user.registered publish"].kind is SpanKind.PRODUCER
        assert spans["user.registered process"].kind is SpanKind.CONSUMER
        assert {
            format(s.context.trace_id, "032x")
            for s in spans.values()
            if s.name.startswith("user.registered")
        } == {request_trace}
