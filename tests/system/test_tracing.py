"""One trace from `POST /orders` through payments and the provider call to notifications."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from servicekit.events import UserRegistered, new_envelope
from servicekit.testing.tokens import TokenMinter
from servicekit.testing.waiting import wait_until
from svctools.smtp_sink import read_messages

from .support import Databases, OrderFlow

T = TypeVar("T")


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def the_one(spans: Sequence[ReadableSpan], what: str, match: Callable[[ReadableSpan], bool]) -> Any:
    found = [s for s in spans if match(s)]
    assert len(found) == 1, f"{what}: {[(s.name, s.kind, dict(s.attributes or {})) for s in found]}"
    return found[0]


def consumed(service: str, event_type: str) -> Callable[[ReadableSpan], bool]:
    """The consumer span of ``event_type`` in one of ``service``'s queues."""

    def match(span: ReadableSpan) -> bool:
        queue = str((span.attributes or {}).get("messaging.destination.name", ""))
        return (
            span.name == f"{event_type} process"
            and span.kind is SpanKind.CONSUMER
            and f".{service}." in queue
        )

    return match


def url_of(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("url.full") or attributes.get("http.url") or "")


class TestOrderTrace:
    async def test_an_order_is_one_trace_from_the_request_through_payment_to_notifications(
        self,
        order_flow: OrderFlow,
        span_exporter: InMemorySpanExporter,
        token_minter: TokenMinter,
        databases: Databases,
        bus_factory: Callable[..., Awaitable[Any]],
    ) -> None:
        user_id = uuid.uuid4()
        email = f"trace.{uuid.uuid4().hex[:10]}@example.com"
        auth = await bus_factory("auth", exchange=order_flow.exchange)
        await auth.publish(
            new_envelope(
                UserRegistered(
                    user_id=user_id, email=email, name="Trace", registered_at=datetime.now(UTC)
                ),
                producer="auth",
            )
        )

        async def mail() -> list[Any]:
            received = await asyncio.to_thread(read_messages, order_flow.sink.maildir)
            return [m for m in received if email in m.rcpt_tos]

        await wait_until(mail, what="the welcome email (notifications knows the user)")

        created = await order_flow.orders.post(
            "/orders",
            json={
                "items": [{"sku": "TRACE-1", "quantity": 2, "unit_price": "10.50"}],
                "currency": "USD",
                "payment_token": "tok_visa",
            },
            headers={**token_minter.headers(user_id), "Idempotency-Key": str(uuid.uuid4())},
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]

        async def confirmed() -> bool:
            got = await order_flow.orders.get(
                f"/orders/{order_id}", headers=token_minter.headers(user_id)
            )
            return bool(got.json().get("status") == "confirmed")

        await wait_until(confirmed, what="the order to be confirmed")

        async def emailed() -> bool:
            return len(await mail()) >= 2

        await wait_until(emailed, what="the order confirmation email")

        def finished() -> list[ReadableSpan]:
            return list(span_exporter.get_finished_spans())

        server = the_one(
            finished(),
            "the server span of POST /orders",
            lambda s: (
                s.kind is SpanKind.SERVER
                and s.name == "POST /orders"
                and (s.attributes or {}).get("http.route") == "/orders"
            ),
        )
        order_trace = trace_id(server)

        async def notified() -> list[ReadableSpan]:
            spans = [s for s in finished() if trace_id(s) == order_trace]
            done = consumed("notifications", "order.confirmed")
            return spans if any(done(s) for s in spans) else []

        spans = await wait_until(notified, what="the order.confirmed span of notifications")

        names = sorted({s.name for s in spans})
        for service, event_type in (
            ("payments-gateway", "order.created"),
            ("orders", "payment.succeeded"),
            ("notifications", "order.confirmed"),
        ):
            the_one(spans, f"{event_type} by {service} in {names}", consumed(service, event_type))
            assert f"{event_type} publish" in names, names
        charge = the_one(
            spans,
            f"the provider call in {names}",
            lambda s: s.kind is SpanKind.CLIENT and url_of(s).endswith("/v1/charges"),
        )
        assert (charge.attributes or {}).get("http.status_code") == 201

        sql = [s for s in spans if (s.attributes or {}).get("db.system") == "postgresql"]
        touched = {str((s.attributes or {}).get("db.name")) for s in sql}
        expected = {
            url.rsplit("/", 1)[1]
            for url in (databases.orders, databases.payments, databases.notifications)
        }
        assert expected <= touched, touched
