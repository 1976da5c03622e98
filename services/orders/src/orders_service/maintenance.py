"""Background upkeep of the orders service: expired idempotency records, orders in flight.

Two order states wait on payments-gateway: ``pending`` (for the charge's outcome) and
``refund_pending`` (for the refund's). Every event between the two services travels
at-least-once, so both end by themselves; the sweeper here is the bound for what no hop can
promise (a message deleted by hand, a queue purged, a restore from backup). See
``docs/delivery.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orders_service.domain import OrderStatus
from orders_service.models import utc_now
from orders_service.repository import OrderRepository
from orders_service.service import rerequest_refund
from servicekit.logging import get_logger
from servicekit.metrics import SWEPT
from servicekit.outbox import Outbox
from servicekit.runtime import ServiceRuntime

log = get_logger(__name__)


async def purge_expired_idempotency_records(
    *, sessions: async_sessionmaker[AsyncSession], ttl: timedelta
) -> int:
    """Delete idempotency records older than ``ttl`` in one transaction; returns how many."""
    async with sessions() as session, session.begin():
        purged = await OrderRepository(session).purge_idempotency_records(
            created_before=utc_now() - ttl
        )
    if purged:
        log.info("order.idempotency_records_purged", purged=purged)
    return purged


class IdempotencyJanitor:
    """Purges expired idempotency records every ``interval`` while the service runs.

    Every instance runs one; the deletes are idempotent, so running several at once is harmless.
    """

    def __init__(self, *, ttl: timedelta, interval: float) -> None:
        self.ttl = ttl
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self, runtime: ServiceRuntime) -> None:
        """``on_start`` hook: begin purging in the background."""
        self._task = asyncio.create_task(self._run(runtime), name="idempotency-janitor")

    async def stop(self, _: ServiceRuntime) -> None:
        """``on_stop`` hook: stop purging."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, runtime: ServiceRuntime) -> None:
        while True:
            try:
                await purge_expired_idempotency_records(sessions=runtime.sessions, ttl=self.ttl)
            except Exception as exc:
                # The database may be briefly away; the next round tries again.
                log.warning("order.idempotency_purge_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval)


async def reannounce_stalled_orders(
    *, sessions: async_sessionmaker[AsyncSession], stalled_after: timedelta, limit: int
) -> dict[str, int]:
    """Publish ``order.created`` again for orders pending longer than ``stalled_after``.

    payments-gateway makes one payment per order (unique) and charges it with the payment id as
    the idempotency key, so a repeated announcement charges nothing twice: it either reaches a
    payment that is already settled or waiting (and changes nothing) or it starts the one whose
    announcement was lost. At most one re-announcement per ``stalled_after`` per order.
    """
    cutoff = utc_now() - stalled_after
    async with sessions() as session, session.begin():
        repository = OrderRepository(session)
        stalled = await repository.in_flight(
            OrderStatus.PENDING, unchanged_since=cutoff, limit=limit
        )
        ids = [order.id for order in stalled]
        requeued = await repository.republish_order_created(ids, published_before=cutoff)
        rest = [order_id for order_id in ids if order_id not in requeued]
        missing = set(rest) - await repository.announced(rest)
    for order_id in requeued:
        log.warning("order.reannounced", order_id=str(order_id))
    for order_id in missing:
        # Its outbox row is gone (older than the outbox retention): an operator must look.
        log.error("order.announcement_missing", order_id=str(order_id))
    return {"reannounced": len(requeued), "missing": len(missing)}


async def rerequest_stalled_refunds(
    *,
    sessions: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    stalled_after: timedelta,
    limit: int,
) -> int:
    """Ask again for the refund of orders ``refund_pending`` longer than ``stalled_after``.

    payments-gateway refunds with the key ``refund-<payment id>`` and a guarded
    succeeded → refunded update, so a repeated request refunds nothing twice.
    """
    cutoff = utc_now() - stalled_after
    async with sessions() as session:
        stalled = await OrderRepository(session).in_flight(
            OrderStatus.REFUND_PENDING, unchanged_since=cutoff, limit=limit
        )
    rerequested = 0
    for order in stalled:
        async with sessions() as session, session.begin():
            if await rerequest_refund(session=session, outbox=outbox, order=order):
                rerequested += 1
    return rerequested


class InFlightSweeper:
    """Every ``interval``: re-announces stalled pending orders and re-requests stalled refunds.

    Every instance runs one. Two instances sweeping at once re-announce an order at most once
    (the outbox row is re-queued by one UPDATE) and re-request a refund at most once per round
    (the order's version guards the write); a repeat would be harmless anyway.
    """

    def __init__(
        self,
        *,
        outbox: Outbox,
        interval: float,
        pending_after: timedelta,
        refund_after: timedelta,
        batch: int = 100,
    ) -> None:
        self.outbox = outbox
        self.interval = interval
        self.pending_after = pending_after
        self.refund_after = refund_after
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    async def start(self, runtime: ServiceRuntime) -> None:
        """``on_start`` hook: begin sweeping in the background."""
        service = runtime.settings.service_name
        for sweeper, outcome in (
            ("pending_orders", "reannounced"),
            ("pending_orders", "missing"),
            ("refund_pending_orders", "rerequested"),
        ):
            SWEPT.labels(service, sweeper, outcome)
        self._task = asyncio.create_task(self._run(runtime), name="in-flight-sweeper")

    async def stop(self, _: ServiceRuntime) -> None:
        """``on_stop`` hook: stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self, runtime: ServiceRuntime) -> None:
        """One round of both sweeps, counted in ``sweeper_items_total``."""
        service = runtime.settings.service_name
        announced = await reannounce_stalled_orders(
            sessions=runtime.sessions, stalled_after=self.pending_after, limit=self.batch
        )
        for outcome, count in announced.items():
            SWEPT.labels(service, "pending_orders", outcome).inc(count)
        rerequested = await rerequest_stalled_refunds(
            sessions=runtime.sessions,
            outbox=self.outbox,
            stalled_after=self.refund_after,
            limit=self.batch,
        )
        SWEPT.labels(service, "refund_pending_orders", "rerequested").inc(rerequested)

    async def _run(self, runtime: ServiceRuntime) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep(runtime)
            except Exception as exc:
                # The database may be briefly away; the next round tries again.
                log.warning("order.sweep_failed", error=f"{type(exc).__name__}: {exc}")
