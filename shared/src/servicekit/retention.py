"""Retention of the tables that grow by a row per event or per request.

A policy names a table, the timestamp column that ages its rows and how long a row is kept
past that timestamp. ``RetentionLoop`` applies every policy of a service in the background;
each run deletes in small batches, one short transaction each, picking rows with ``FOR UPDATE
SKIP LOCKED`` so it never waits on (or holds up) a row a request or a handler is using. Each
deleted row is counted in ``retention_rows_deleted_total{service,table}``.

Why each period is safe is stated per table in ``docs/retention.md``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy import Table, TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger("servicekit.retention")

ROWS_DELETED = Counter("retention_rows_deleted", "Rows deleted by retention.", ["service", "table"])


@dataclass(frozen=True)
class RetentionPolicy:
    """Delete a row of ``table`` once ``column`` is more than ``keep`` in the past.

    A NULL in ``column`` never matches: an outbox row not yet published, a family not revoked.
    """

    table: Table
    column: str
    keep: timedelta

    def __post_init__(self) -> None:
        if self.column not in self.table.c:
            raise ValueError(f"{self.table.name} has no column {self.column!r}")
        if self.keep < timedelta(0):
            raise ValueError("keep must not be negative")


async def purge(
    engine: AsyncEngine,
    policy: RetentionPolicy,
    *,
    service: str,
    batch_size: int = 1000,
    now: datetime | None = None,
) -> int:
    """Delete every row past ``policy``'s period, ``batch_size`` rows per transaction."""
    cutoff = (now or datetime.now(UTC)) - policy.keep
    statement = _batch_delete(engine, policy)
    deleted = 0
    while True:
        async with engine.begin() as conn:
            result = await conn.execute(statement, {"cutoff": cutoff, "batch": batch_size})
        batch = result.rowcount
        deleted += batch
        ROWS_DELETED.labels(service, policy.table.name).inc(batch)
        if batch < batch_size:
            return deleted


def _batch_delete(engine: AsyncEngine, policy: RetentionPolicy) -> TextClause:
    quote = engine.dialect.identifier_preparer.quote
    table, column = quote(policy.table.name), quote(policy.column)
    # Both names come from the service's own metadata, never from input. ctid = ANY(ARRAY(...))
    # deletes the picked rows by their physical address (a TID scan), whatever the table's key.
    return text(
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608
        f"SELECT ctid FROM {table} WHERE {column} < :cutoff "
        f"LIMIT :batch FOR UPDATE SKIP LOCKED))"
    )


class RetentionLoop:
    """Applies a service's policies every ``interval`` seconds while the service runs.

    Every instance runs it (as one of the runtime's background tasks, cancelled on stop); two
    instances purging at once skip each other's locked rows.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        policies: list[RetentionPolicy],
        *,
        service: str,
        interval: float,
        batch_size: int,
    ) -> None:
        self.engine = engine
        self.policies = policies
        self.service = service
        self.interval = interval
        self.batch_size = batch_size
        for policy in policies:  # every table shows in /metrics from the start, at 0
            ROWS_DELETED.labels(service, policy.table.name)

    async def run_once(self) -> dict[str, int]:
        """Apply every policy now; rows deleted by table."""
        deleted: dict[str, int] = {}
        for policy in self.policies:
            count = await purge(
                self.engine, policy, service=self.service, batch_size=self.batch_size
            )
            deleted[policy.table.name] = deleted.get(policy.table.name, 0) + count
        if any(deleted.values()):
            log.info("retention.purged", **{k: v for k, v in deleted.items() if v})
        return deleted

    async def run_forever(self) -> None:
        """Apply the policies every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("retention.failed", error=f"{type(exc).__name__}: {exc}")
