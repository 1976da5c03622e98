"""Operator actions on the DLQ and the outbox, on the real broker and database."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from servicekit import operations
from servicekit.bus import ReceivedEvent
from servicekit.db import create_engine
from servicekit.events import UserRegistered, new_envelope
from servicekit.outbox import Outbox
from servicekit.testing.rabbitnodes import free_port
from servicekit.testing.waiting import wait_until

from .support import count_effects, metadata, record_effect
from .test_messaging import start_consumer, user_event


class TestDeadLetterOperations:
    async def test_list_then_redrive_processes_the_message_once(
        self, bus_factory: Any, sessions: Any, engine: AsyncEngine, infra: Any
    ) -> None:
        bus = await bus_factory("svc")
        broken = {"on": True}

        async def sometimes_broken(event: ReceivedEvent, session: AsyncSession) -> None:
            if broken["on"]:
                raise RuntimeError("downstream bug")
            await record_effect(event, session)

        consumer = await start_consumer(bus, sessions, sometimes_broken, retry_delays_ms=(50,))
        envelope = new_envelope(user_event("parked"), producer="auth")
        await bus.publish(envelope)

        async def parked() -> bool:
            return len(await operations.list_parked(infra.amqp_url, consumer.queue_name)) == 1

        await wait_until(parked, timeout=10, what="parked")
        listed = await operations.list_parked(infra.amqp_url, consumer.queue_name)
        assert listed[0].message_id == str(envelope.id)
        assert listed[0].event_type == "user.registered"
        assert "downstream bug" in listed[0].reason
        assert listed[0].attempts == 2
        # Listing leaves it where it is.
        assert len(await operations.list_parked(infra.amqp_url, consumer.queue_name)) == 1

        broken["on"] = False  # the bug is fixed
        moved = await operations.redrive(infra.amqp_url, consumer.queue_name, str(envelope.id))
        assert [m.message_id for m in moved] == [str(envelope.id)]

        async def applied() -> bool:
            return await count_effects(engine, envelope.id) == 1

        await wait_until(applied, what="applied")
        assert await operations.list_parked(infra.amqp_url, consumer.queue_name) == []

    async def test_a_cluster_address_list_is_served_by_the_node_that_answers(
        self, bus_factory: Any, sessions: Any, infra: Any
    ) -> None:
        bus = await bus_factory("svc")
        consumer = await start_consumer(bus, sessions)
        await bus.publish_raw(
            b"not json", routing_key="user.registered", message_id="bad", event_type="?", headers={}
        )
        nobody = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
        nodes = f"{nobody},{infra.amqp_url}"

        async def parked() -> bool:
            return len(await operations.list_parked(nodes, consumer.queue_name)) == 1

        await wait_until(parked, timeout=10, what="parked")

    async def test_purge_one_by_id(self, bus_factory: Any, sessions: Any, infra: Any) -> None:
        bus = await bus_factory("svc")
        consumer = await start_consumer(bus, sessions)
        bad = [b"{broken", b"[]"]
        for index, body in enumerate(bad):
            await bus.publish_raw(
                body,
                routing_key="user.registered",
                message_id=f"bad-{index}",
                event_type="user.registered",
                headers={},
            )

        async def both_parked() -> bool:
            return len(await operations.list_parked(infra.amqp_url, consumer.queue_name)) == 2

        await wait_until(both_parked, what="both parked")
        dropped = await operations.purge(infra.amqp_url, consumer.queue_name, "bad-0")
        assert [m.message_id for m in dropped] == ["bad-0"]
        left = await operations.list_parked(infra.amqp_url, consumer.queue_name)
        assert [m.message_id for m in left] == ["bad-1"]


class TestOutboxBacklog:
    async def test_backlog_counts_unpublished_rows(
        self, sessions: Any, database_url: str, producer_outbox: Outbox
    ) -> None:
        assert await operations.outbox_backlog(database_url) == (0, 0.0)
        async with sessions() as session, session.begin():
            await producer_outbox.add(session, user_event())
            await producer_outbox.add(
                session, UserRegistered.model_validate(user_event().model_dump())
            )
        pending, age = await operations.outbox_backlog(database_url)
        assert pending == 2
        assert age >= 0


class TestCli:
    def test_outbox_backlog_and_dlq_list_commands(
        self, database_url: str, infra: Any, capsys: Any
    ) -> None:
        from servicekit.cli import run_cli
        from servicekit.settings import ServiceSettings

        class Settings(ServiceSettings):
            service_name: str = "svc"
            port: int = 9999
            database_url: str = ""

        def settings() -> ServiceSettings:
            return Settings(
                database_url=database_url,
                amqp_url=infra.amqp_url,
                events_exchange=f"{infra.amqp_prefix}cli.events",
            )

        async def create_tables() -> None:
            engine = create_engine(database_url)
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            await engine.dispose()

        asyncio.run(create_tables())
        common = {"prog": "svc", "settings_factory": settings, "script_location": "unused"}
        assert run_cli(argv=["outbox-backlog"], **common) == 0
        assert "pending" in capsys.readouterr().out
        assert run_cli(argv=["dlq-list", "nothing-here"], **common) == 1
        assert "there is no queue" in capsys.readouterr().out
        assert run_cli(argv=["dlq-purge", "nothing-here"], **common) == 2
