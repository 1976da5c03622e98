"""Retention on the real database: old rows go, recent ones stay, every deletion is counted."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit.retention import RetentionLoop, RetentionPolicy, purge
from tests.integration.support import inbox, outbox

NOW = datetime.now(UTC)


def deleted_metric(service: str, table: str) -> float:
    labels = {"service": service, "table": table}
    return REGISTRY.get_sample_value("retention_rows_deleted_total", labels) or 0.0


async def add_inbox_rows(engine: AsyncEngine, *, count: int, age: timedelta) -> None:
    rows = [
        {"consumer": "tests", "message_id": uuid.uuid4(), "received_at": NOW - age}
        for _ in range(count)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(inbox), rows)


async def inbox_ages(engine: AsyncEngine) -> list[timedelta]:
    async with engine.connect() as conn:
        received = (await conn.execute(select(inbox.c.received_at))).scalars().all()
    return [NOW - at for at in received]


class TestPurge:
    async def test_old_rows_go_and_recent_ones_stay_in_batches(self, engine: AsyncEngine) -> None:
        await add_inbox_rows(engine, count=25, age=timedelta(days=8))
        await add_inbox_rows(engine, count=5, age=timedelta(days=6, hours=23))
        await add_inbox_rows(engine, count=5, age=timedelta(seconds=1))
        policy = RetentionPolicy(inbox, "received_at", timedelta(days=7))
        before = deleted_metric("retention-tests", "inbox")

        deleted = await purge(engine, policy, service="retention-tests", batch_size=10, now=NOW)

        assert deleted == 25
        ages = await inbox_ages(engine)
        assert len(ages) == 10
        assert all(age < timedelta(days=7) for age in ages)
        assert deleted_metric("retention-tests", "inbox") - before == 25

    async def test_a_null_timestamp_is_never_old(self, engine: AsyncEngine) -> None:
        """An outbox row not yet published stays, however old it is."""
        long_ago = NOW - timedelta(days=30)
        rows = [
            {
                "event_id": uuid.uuid4(),
                "event_type": "user.registered",
                "payload": {},
                "headers": {},
                "created_at": long_ago,
                "published_at": published_at,
            }
            for published_at in (None, long_ago, NOW)
        ]
        async with engine.begin() as conn:
            await conn.execute(insert(outbox), rows)
        policy = RetentionPolicy(outbox, "published_at", timedelta(days=1))

        assert await purge(engine, policy, service="retention-tests", now=NOW) == 1

        async with engine.connect() as conn:
            left = (await conn.execute(select(outbox.c.published_at))).scalars().all()
        assert sorted(left, key=lambda at: at or long_ago) == [None, NOW]

    async def test_skips_rows_another_transaction_holds(self, engine: AsyncEngine) -> None:
        """A purge never waits on a row a handler is using: it takes the rest and returns."""
        await add_inbox_rows(engine, count=3, age=timedelta(days=8))
        policy = RetentionPolicy(inbox, "received_at", timedelta(days=7))
        async with engine.connect() as holder, holder.begin():
            await holder.execute(
                text("SELECT 1 FROM inbox ORDER BY received_at LIMIT 1 FOR UPDATE")
            )
            deleted = await asyncio.wait_for(
                purge(engine, policy, service="retention-tests", now=NOW), timeout=30
            )
        assert deleted == 2
        assert await purge(engine, policy, service="retention-tests", now=NOW) == 1


class TestRetentionLoop:
    async def test_applies_every_policy_and_exposes_each_table_from_the_start(
        self, engine: AsyncEngine
    ) -> None:
        await add_inbox_rows(engine, count=3, age=timedelta(days=8))
        loop = RetentionLoop(
            engine,
            [
                RetentionPolicy(inbox, "received_at", timedelta(days=7)),
                RetentionPolicy(outbox, "published_at", timedelta(days=1)),
            ],
            service="retention-loop-tests",
            interval=300,
            batch_size=100,
        )
        labels = {"service": "retention-loop-tests", "table": "outbox"}
        assert REGISTRY.get_sample_value("retention_rows_deleted_total", labels) == 0.0

        assert await loop.run_once() == {"inbox": 3, "outbox": 0}
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(inbox))).scalar() == 0
