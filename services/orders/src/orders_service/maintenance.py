"""Background upkeep of the orders service: forgetting expired idempotency records."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orders_service.models import utc_now
from orders_service.repository import OrderRepository
from servicekit.logging import get_logger
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
