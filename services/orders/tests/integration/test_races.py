"""Requests racing events and each other on the same order or user: a 4xx or one consistent end.

The handlers run as the consumer runs them (``deliver``: a transaction of their own). A round
either orders the two by construction (the event strictly before or after the requests), so
both ends of the race are always checked, or starts them together with a different stagger
each time, so over the rounds the event lands inside the requests' transactions.
"""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select

from orders_service import handlers
from orders_service.errors import OrderConcurrentlyModified
from orders_service.handlers import HandlerDeps
from orders_service.models import Order
from servicekit.bus import Handler
from servicekit.events import EventData, PaymentFailed, UserDeleted
from servicekit.testing.consuming import deliver
from tests.integration.support import Service, order_body, payment_succeeded

ROUNDS = 25
EVENT_FIRST, REQUESTS_FIRST = 0, 1  # round % 4; the other two rounds in four race the two


async def _in_order(round_: int, requests: Awaitable[Any], event: Awaitable[Any]) -> list[Any]:
    """Run ``requests`` and ``event`` as this round says: one after the other, or at once.

    Returns ``[requests' result, event's result]``; exceptions come back as values.
    """
    order = round_ % 4
    if order in (EVENT_FIRST, REQUESTS_FIRST):
        first, second = (event, requests) if order == EVENT_FIRST else (requests, event)
        done = [await _settled(first), await _settled(second)]
        return done if order == REQUESTS_FIRST else done[::-1]
    return list(await asyncio.gather(requests, event, return_exceptions=True))


async def _settled(work: Awaitable[Any]) -> Any:
    try:
        return await work
    except Exception as error:
        return error


def _bound(handler: Callable[..., Awaitable[None]], deps: HandlerDeps) -> Handler:
    return functools.partial(handler, deps=deps)


def _deps(orders: Service) -> HandlerDeps:
    return HandlerDeps(outbox=orders.runtime.outbox, order_wait=timedelta(seconds=30))


async def _statuses_of(orders: Service, user_id: uuid.UUID) -> Counter[str]:
    async with orders.runtime.sessions() as session:
        rows = await session.execute(
            select(Order.status, func.count())
            .where(Order.user_id == user_id)
            .group_by(Order.status)
        )
        return Counter({status: count for status, count in rows})


class TestPlacingAnOrderWhileTheUserIsDeleted:
    async def test_every_order_is_refused_or_cancelled_never_left_pending(
        self, orders: Service
    ) -> None:
        deps = _deps(orders)
        totals: Counter[int] = Counter()
        for round_ in range(ROUNDS):
            user_id = uuid.uuid4()
            headers = orders.auth(user_id)
            deletion = UserDeleted(user_id=user_id, deleted_at=datetime.now(UTC))
            handler = _bound(handlers.handle_user_deleted, deps)

            async def posts(headers: dict[str, str] = headers) -> list[httpx.Response]:
                # A coroutine, not a gather: nothing is sent before _in_order awaits it.
                return await asyncio.gather(
                    *(
                        orders.client.post(
                            "/orders",
                            json=order_body(),
                            headers={**headers, "Idempotency-Key": f"k-{n % 2}"},
                        )
                        for n in range(6)
                    )
                )

            responses, applied = await _in_order(
                round_,
                posts(),
                deliver(
                    orders.runtime.sessions,
                    handler,
                    deletion,
                    producer="users",
                    after=random.uniform(0, 0.05),
                ),
            )
            if isinstance(responses, BaseException):
                raise responses
            if applied is not None:
                raise applied
            for response in responses:
                assert response.status_code in (201, 401), response.text
                totals[response.status_code] += 1
            # Whatever was placed during the deletion was cancelled by it: nothing is charged.
            assert set(await _statuses_of(orders, user_id)) <= {"cancelled"}
            after = await orders.client.post("/orders", json=order_body(), headers=headers)
            assert after.status_code == 401, after.text
            assert after.json()["error"]["code"] == "account_deleted"
        assert totals[201] > 0, totals
        assert totals[401] > 0, totals


class TestCancellingWhilePaymentResultsArrive:
    async def test_cancel_racing_payment_succeeded_or_failed_ends_consistent(
        self, orders: Service
    ) -> None:
        deps = _deps(orders)
        outcomes: Counter[tuple[str, int, str]] = Counter()
        for round_ in range(ROUNDS):
            user_id = uuid.uuid4()
            placed = await orders.place(user_id)
            if round_ % 2:
                event = "payment.succeeded"
                data: EventData = payment_succeeded(placed, user_id)
                handler = _bound(handlers.handle_payment_succeeded, deps)
            else:
                event = "payment.failed"
                data = PaymentFailed(
                    payment_id=uuid.uuid4(),
                    order_id=uuid.UUID(placed["id"]),
                    user_id=user_id,
                    amount=Decimal(placed["total_amount"]),
                    currency=placed["currency"],
                    reason="declined",
                )
                handler = _bound(handlers.handle_payment_failed, deps)
            cancel, applied = await _in_order(
                round_ // 2,  # every ordering meets both events
                orders.client.post(f"/orders/{placed['id']}/cancel", headers=orders.auth(user_id)),
                deliver(
                    orders.runtime.sessions,
                    handler,
                    data,
                    producer="payments-gateway",
                    after=random.uniform(0, 0.01),
                ),
            )
            if isinstance(applied, OrderConcurrentlyModified):
                # The cancel changed the order under the handler: the consumer retries the
                # event, in a new transaction, and then applies it to the cancelled order.
                await deliver(orders.runtime.sessions, handler, data, producer="payments-gateway")
            elif applied is not None:
                raise applied
            assert isinstance(cancel, httpx.Response)
            assert cancel.status_code in (200, 409), cancel.text
            final = (await orders.get(user_id, placed["id"]))["status"]
            if cancel.status_code == 200:
                assert final in ("cancelled", "refund_pending"), final
            else:
                assert final in ("confirmed", "failed"), final
            outcomes[(event, cancel.status_code, final)] += 1
        # Cancelled before the result, and the result before the cancel (a 409 or a refund).
        assert {final for _, status, final in outcomes if status == 200} >= {"cancelled"}, outcomes
        assert {status for _, status, _ in outcomes} == {200, 409}, outcomes


class TestOneIdempotencyKeyAtOnce:
    async def test_concurrent_requests_with_one_key_place_one_order_every_round(
        self, orders: Service
    ) -> None:
        for _ in range(ROUNDS):
            user_id = uuid.uuid4()
            headers = {**orders.auth(user_id), "Idempotency-Key": uuid.uuid4().hex}
            other = order_body(currency="EUR")
            responses = await asyncio.gather(
                *(
                    orders.client.post(
                        "/orders", json=other if n == 0 else order_body(), headers=headers
                    )
                    for n in range(6)
                )
            )
            statuses = Counter(r.status_code for r in responses)
            assert set(statuses) <= {201, 409}, [r.text for r in responses]
            created = {r.json()["id"] for r in responses if r.status_code == 201}
            assert len(created) == 1
            assert sum((await _statuses_of(orders, user_id)).values()) == 1
