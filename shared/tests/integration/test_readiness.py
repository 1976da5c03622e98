"""Readiness follows the database: a service that lost it says so and stops consuming.

A TCP proxy between the service and the real PostgreSQL plays the outage: cutting it drops the
open connections and refuses new ones, restoring it lets them through again. The events
published meanwhile wait in the service's queue and are applied once, exactly once, after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from servicekit.bus import ReceivedEvent
from servicekit.events import UserRegistered, new_envelope
from servicekit.logging import reset_logging
from servicekit.revocation import revocations
from servicekit.runtime import ConsumerSpec, ServiceRuntime, create_service_app
from servicekit.settings import ServiceSettings
from servicekit.testing.plugin import Infra, serve_app
from servicekit.testing.waiting import wait_until

from .support import count_effects, effects, inbox, outbox, record_effect
from .test_messaging import user_event

PURPOSE = "effects"
BACKLOG = 20


class Settings(ServiceSettings):
    service_name: str = "readiness-test"
    port: int = 9999
    database_url: str = ""


class TcpProxy:
    """Forwards loopback connections to a server until it is cut (then refuses them)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (on the same port again after a cut)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and reset every open connection, as a database crash would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for client, upstream in self._links:
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        link = (client_w, upstream_w)
        self._links.add(link)
        for reader, writer in ((client_r, upstream_w), (upstream_r, client_w)):
            pipe = asyncio.create_task(self._pipe(reader, writer))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


async def queue_counts(amqp_url: str, queue: str) -> tuple[int, int]:
    """Messages ready in a queue and its consumers, from a passive declare."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)


async def bystander_effect(event: ReceivedEvent, session: AsyncSession) -> None:
    """The other service's handler: the same event, an effect of its own."""
    data = event.payload(UserRegistered)
    await session.execute(
        effects.insert().values(event_id=event.envelope.id, user_id=data.user_id, note="other")
    )


async def count_notes(engine: AsyncEngine, note: str) -> int:
    query = select(func.count()).select_from(effects).where(effects.c.note == note)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(database_url)
    running = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await running.start()
    yield running
    await running.cut()


@pytest.fixture
async def tables(engine: AsyncEngine) -> AsyncEngine:
    """The messaging tables (emptied) plus the runtime's own revocations table."""
    async with engine.begin() as conn:
        await conn.run_sync(revocations.metadata.create_all)
    return engine


@pytest.fixture
def make_runtime(infra: Infra, exchange_name: str) -> Callable[..., ServiceRuntime]:
    def make(name: str, database_url: str, spec: ConsumerSpec) -> ServiceRuntime:
        settings = Settings(
            service_name=name,
            database_url=database_url,
            amqp_url=infra.amqp_url,
            redis_url=infra.redis_url,
            events_exchange=exchange_name,
            jwks_url=None,
            retry_delays_ms=[1000, 2000, 4000],
        )
        return ServiceRuntime(settings, outbox_table=outbox, inbox_table=inbox, consumers=[spec])

    return make


@pytest.fixture
def restore_logging() -> Any:
    yield
    reset_logging()


class TestDatabaseOutage:
    async def test_unready_and_not_consuming_while_down_then_drains_the_backlog_once(
        self,
        infra: Infra,
        database_url: str,
        tables: AsyncEngine,
        proxy: TcpProxy,
        make_runtime: Callable[..., ServiceRuntime],
        bus_factory: Callable[..., Awaitable[Any]],
        restore_logging: None,
    ) -> None:
        proxied_url = (
            make_url(database_url)
            .set(host="127.0.0.1", port=proxy.port)
            .render_as_string(hide_password=False)
        )
        runtime = make_runtime(
            "readiness-test", proxied_url, ConsumerSpec(PURPOSE, {"user.registered": record_effect})
        )
        other = make_runtime(
            "bystander", database_url, ConsumerSpec(PURPOSE, {"user.registered": bystander_effect})
        )
        app = create_service_app(runtime=runtime, title="readiness-test", prefix="/test")
        other_app = create_service_app(runtime=other, title="bystander", prefix="/other")
        async with serve_app(app) as client, serve_app(other_app) as other_client:
            queue = runtime.bus.queue_name(PURPOSE)
            publisher = await bus_factory("publisher")
            first = await ready(client)
            assert first.status_code == 200, first.text

            await proxy.cut()

            async def unready() -> bool:
                return (await ready(client)).status_code == 503

            await wait_until(unready, what="readiness to report the database down")
            body = (await ready(client)).json()
            assert body["status"] == "unavailable"
            assert body["checks"]["database"].startswith("fail")
            assert body["checks"]["broker"] == "ok"

            async def paused() -> bool:
                _, consumers = await queue_counts(infra.amqp_url, queue)
                return consumers == 0 and not any(c.consuming for c in runtime.running_consumers)

            await wait_until(paused, what="the consumers to stop")

            sent = [
                new_envelope(user_event(f"backlog-{i}"), producer="tests") for i in range(BACKLOG)
            ]
            for envelope in sent:
                await publisher.publish(envelope)

            async def others_applied() -> bool:
                return await count_notes(tables, "other") == BACKLOG

            await wait_until(others_applied, what="the other service to apply every event")
            assert (await ready(other_client)).status_code == 200
            await asyncio.sleep(1.0)
            waiting, consumers = await queue_counts(infra.amqp_url, queue)
            assert (waiting, consumers) == (BACKLOG, 0)
            assert await count_effects(tables) - await count_notes(tables, "other") == 0

            await proxy.start()

            async def ready_again() -> bool:
                return (await ready(client)).status_code == 200

            await wait_until(ready_again, what="readiness after the database came back")

            async def drained() -> bool:
                waiting, consumers = await queue_counts(infra.amqp_url, queue)
                applied = await count_effects(tables) - await count_notes(tables, "other")
                return waiting == 0 and consumers == 1 and applied == BACKLOG

            await wait_until(drained, what="the backlog to be applied")
            await asyncio.sleep(0.5)
            for envelope in sent:
                assert await count_effects(tables, envelope.id) == 2, envelope.id
            assert await count_effects(tables) == 2 * BACKLOG
            dlq, _ = await queue_counts(infra.amqp_url, f"{queue}.dlq")
            assert dlq == 0


async def ready(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/health/ready")
