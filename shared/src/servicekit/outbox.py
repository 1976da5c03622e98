"""Transactional outbox: events are written with the state change and published by a relay.

``Outbox.add()`` inserts the event in the caller's transaction and issues ``pg_notify``, which
PostgreSQL delivers at commit, so the relay wakes within milliseconds; a polling interval covers
a lost notification. The relay locks a batch with ``FOR UPDATE SKIP LOCKED`` (several relays can
run at once, each row is taken by one), publishes with confirms and marks the rows published in
the same transaction. A crash before that commit leaves the rows pending, so they are published
again: at-least-once, and consumers' inboxes make the repeat harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from servicekit import tracecontext
from servicekit.bus import HEADER_CORRELATION, HEADER_TRACEPARENT
from servicekit.db import asyncpg_dsn, bound_values
from servicekit.events import EventData, EventEnvelope, new_envelope
from servicekit.worker import NotifiedLoop

log = structlog.get_logger("servicekit.outbox")

PublishFn = Callable[..., Awaitable[None]]


def outbox_columns() -> list[Column[Any]]:
    """Fresh column objects for the outbox table."""
    return [
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("event_type", String(200), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, server_default="0"),
        # A row that failed to publish (no queue bound yet, broker error) waits until then, so
        # it cannot hold back the rows behind it.
        Column("available_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("last_error", Text, nullable=True),
    ]


def outbox_table(metadata: MetaData, name: str = "outbox") -> Table:
    """Add the outbox table to a service's metadata."""
    table = Table(name, metadata, *outbox_columns())
    Index(
        f"ix_{name}_pending",
        table.c.id,
        postgresql_where=table.c.published_at.is_(None),
    )
    return table


class Outbox:
    """Writes events into a service's outbox table inside the caller's transaction."""

    def __init__(
        self, table: Table, *, producer: str, publishes: Sequence[str] | None = None
    ) -> None:
        self.table = table
        self.producer = producer
        self.channel = f"{table.name}_pending"
        # The declared list is what the AsyncAPI document says this service publishes.
        self.publishes = frozenset(publishes) if publishes is not None else None
        # One round trip: the row, and the notification PostgreSQL delivers at commit. Built once
        # with bound parameters (building it per event made SQLAlchemy walk it for its cache key
        # every time).
        inserted = (
            table.insert()
            .values(bound_values(table, ("event_id", "event_type", "payload", "headers")))
            .returning(table.c.id)
            .cte("inserted")
        )
        self._insert = select(func.pg_notify(self.channel, literal(""))).select_from(inserted)

    async def add(
        self, session: AsyncSession, data: EventData, *, correlation_id: str | None = None
    ) -> EventEnvelope:
        """Record an event to be published once (and only if) the transaction commits."""
        if self.publishes is not None and data.event_type not in self.publishes:
            raise ValueError(
                f"{self.producer} does not declare that it publishes {data.event_type}"
            )
        envelope = new_envelope(data, producer=self.producer, correlation_id=correlation_id)
        headers = {HEADER_CORRELATION: envelope.correlation_id}
        traceparent = tracecontext.current_traceparent()
        if traceparent:
            headers[HEADER_TRACEPARENT] = traceparent
        await session.execute(
            self._insert,
            {
                "event_id": envelope.id,
                "event_type": envelope.type,
                "payload": envelope.model_dump(mode="json"),
                "headers": headers,
            },
        )
        return envelope


class OutboxRelay:
    """Publishes pending outbox rows, woken by NOTIFY at commit, with a polling fallback."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        table: Table,
        publish: PublishFn,
        batch_size: int = 100,
        poll_interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self.table = table
        self.publish = publish
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.channel = f"{table.name}_pending"
        self._loop = NotifiedLoop(
            name=f"outbox-relay:{table.name}",
            dsn=asyncpg_dsn(engine.url),
            channel=self.channel,
            step=self._step,
            batch_size=batch_size,
            poll_interval=poll_interval,
        )
        self.published_total = 0
        # Built once: a relay runs them for every batch, hundreds of times a second under load.
        t = table
        self._pending = (
            select(t.c.id, t.c.event_id, t.c.event_type, t.c.payload, t.c.headers)
            .where(t.c.published_at.is_(None), t.c.available_at <= func.now())
            .order_by(t.c.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        self._mark_published = (
            update(t)
            .where(t.c.id.in_(bindparam("ids", expanding=True)))
            .values(published_at=func.now())
        )

    async def start(self) -> None:
        """Start listening and publishing in the background."""
        await self._loop.start()

    async def stop(self, *, flush_timeout: float = 5.0) -> None:
        """Publish what is pending (bounded by ``flush_timeout``), then stop."""
        await self._loop.stop()
        if flush_timeout > 0:
            try:
                async with asyncio.timeout(flush_timeout):
                    while await self.publish_pending() > 0:
                        pass
            except Exception as exc:
                log.warning("outbox.flush_incomplete", error=str(exc))

    @property
    def running(self) -> bool:
        return self._loop.running

    async def _step(self) -> int:
        return await self.publish_pending()

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; returns how many rows it handled."""
        t = self.table
        async with self.engine.begin() as conn:
            rows = (await conn.execute(self._pending)).all()
            if not rows:
                return 0
            # Sent in row order on one channel; confirms are awaited together.
            outcomes = await asyncio.gather(
                *(
                    self.publish(
                        orjson.dumps(row.payload),
                        routing_key=row.event_type,
                        message_id=str(row.event_id),
                        event_type=row.event_type,
                        headers=row.headers,
                        correlation_id=row.headers.get(HEADER_CORRELATION),
                    )
                    for row in rows
                ),
                return_exceptions=True,
            )
            done = [row.id for row, out in zip(rows, outcomes, strict=True) if out is None]
            failed = [
                (row.id, out)
                for row, out in zip(rows, outcomes, strict=True)
                if isinstance(out, BaseException)
            ]
            if done:
                await conn.execute(self._mark_published, {"ids": done})
            for row_id, error in failed:
                # Back off per row (1 s, 2 s, 4 s … at most a minute) so a row that cannot be
                # published yet, e.g. no queue bound, does not hold back the rows behind it.
                delay = func.least(60, func.power(2, t.c.attempts)) * text("interval '1 second'")
                await conn.execute(
                    update(t)
                    .where(t.c.id == row_id)
                    .values(
                        attempts=t.c.attempts + 1,
                        last_error=f"{type(error).__name__}: {error}"[:2000],
                        available_at=func.now() + delay,
                    )
                )
        self.published_total += len(done)
        if failed:
            log.warning("outbox.publish_failed", failed=len(failed), published=len(done))
            raise failed[0][1] if isinstance(failed[0][1], Exception) else RuntimeError("publish")
        return len(rows)

    async def backlog(self) -> tuple[int, float]:
        """(pending rows, age in seconds of the oldest pending row)."""
        t = self.table
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.min(t.c.created_at)).where(t.c.published_at.is_(None))
                )
            ).one()
        count, oldest = int(row[0]), row[1]
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        return count, max(age, 0.0)
