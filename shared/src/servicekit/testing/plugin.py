"""pytest plugin: real PostgreSQL, Redis and RabbitMQ for every package's tests, isolated per run.

Server URLs come from the environment (``TEST_POSTGRES_URL``, ``TEST_REDIS_URL``,
``TEST_AMQP_URL``) with localhost defaults. When a server does not answer and a Docker engine is
available, testcontainers starts one; otherwise the run stops with a message saying what to
start. Nothing is skipped silently.

Isolation: each run gets an id; databases are named ``t_<run>_<name>`` and dropped afterwards,
exchanges and queues are prefixed ``t.<run>.`` and deleted afterwards, so two runs on one machine
never see each other's data or messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from servicekit.bus import EventBus
from servicekit.db import drop_database, ensure_database
from servicekit.testing.capture import EventCapture
from servicekit.testing.tokens import TokenMinter

_CONNECTION_NAME = re.compile(r'\{"connection_name","([^"]*)"\}')

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"

HOW_TO_START = {
    "postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "redis": "redis-server --daemonize yes --port 6379 --save '' --appendonly no",
    "rabbitmq": "rabbitmq-server -detached",
}


@dataclass
class Infra:
    """Where the test servers are, and what this run created on them."""

    postgres_url: str
    redis_url: str
    amqp_url: str
    run_id: str
    databases: list[str] = field(default_factory=list)
    containers: list[Any] = field(default_factory=list)

    @property
    def amqp_prefix(self) -> str:
        return f"t.{self.run_id}."

    def database_url(self, name: str) -> str:
        """The URL of this run's database ``name`` (not created yet)."""
        return f"{self.postgres_url.rstrip('/')}/t_{self.run_id}_{name}"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url.replace("+asyncpg", ""))
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


def _start_container(kind: str) -> tuple[str, Any]:
    if kind == "postgres":
        from testcontainers.postgres import PostgresContainer

        pg = PostgresContainer("postgres:16-alpine", driver="asyncpg").start()
        url = pg.get_connection_url().rsplit("/", 1)[0]
        return url, pg
    if kind == "redis":
        from testcontainers.redis import RedisContainer

        rc = RedisContainer("redis:7-alpine").start()
        return f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0", rc
    from testcontainers.rabbitmq import RabbitMqContainer

    mq = RabbitMqContainer("rabbitmq:3.13-management-alpine").start()
    host, port = mq.get_container_host_ip(), mq.get_exposed_port(5672)
    return f"amqp://guest:guest@{host}:{port}/", mq


def resolve_infra() -> Infra:
    """Find the servers (environment, then localhost, then Docker) or stop the run."""
    wanted = {
        "postgres": (os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES), 5432),
        "redis": (os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS), 6379),
        "rabbitmq": (os.environ.get("TEST_AMQP_URL", DEFAULT_AMQP), 5672),
    }
    urls: dict[str, str] = {}
    containers: list[Any] = []
    missing = [k for k, (url, port) in wanted.items() if not _reachable(url, port)]
    docker_ok = bool(missing) and _docker_available()
    for kind, (url, _) in wanted.items():
        if kind in missing and docker_ok:
            urls[kind], container = _start_container(kind)
            containers.append(container)
        else:
            urls[kind] = url
    if missing and not docker_ok:
        lines = [f"  {k}: {wanted[k][0]} — start it with: {HOW_TO_START[k]}" for k in missing]
        pytest.exit(
            "test servers not reachable and no Docker engine to start them:\n"
            + "\n".join(lines)
            + "\n(or point TEST_POSTGRES_URL / TEST_REDIS_URL / TEST_AMQP_URL elsewhere)",
            returncode=3,
        )
    return Infra(
        postgres_url=urls["postgres"],
        redis_url=urls["redis"],
        amqp_url=urls["rabbitmq"],
        run_id=uuid.uuid4().hex[:10],
        containers=containers,
    )


def delete_amqp_by_prefix(amqp_url: str, prefix: str) -> None:
    """Delete every queue and exchange whose name starts with ``prefix`` (local broker only)."""
    if not shutil.which("rabbitmqctl") or "127.0.0.1" not in amqp_url:
        return
    for kind, column in (("queues", "name"), ("exchanges", "name")):
        listing = subprocess.run(
            ["rabbitmqctl", "-q", f"list_{kind}", column, "--no-table-headers"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        names = [n for n in listing.stdout.split() if n.startswith(prefix)]
        if names:
            asyncio.run(_delete_amqp(amqp_url, kind, names))


def close_connections(marker: str, reason: str = "closed by a test") -> int:
    """Force-close the broker connections whose name contains ``marker`` (local broker only).

    Connections are named ``<service>@<exchange>:<id>``, so a test can drop its own
    connections, as ``rabbitmqctl close_all_connections`` would, without disturbing other
    runs on the same broker. Returns how many it closed.
    """
    # The plain listing: its pids are what close_connection accepts (the JSON formatter's
    # "#PID<…>" is not), and client_properties shows {"connection_name","<name>"}.
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pids = []
    for line in listing.stdout.splitlines():
        pid, _, properties = line.partition("\t")
        name = _CONNECTION_NAME.search(properties)
        if name is not None and marker in name.group(1):
            pids.append(pid)
    # All at once, as a broker-wide drop would; each counts only if the broker closed it.
    closing = [
        subprocess.Popen(
            ["rabbitmqctl", "-q", "close_connection", pid, reason],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    return sum(1 for process in closing if process.wait(timeout=60) == 0)


async def _delete_amqp(url: str, kind: str, names: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            with contextlib.suppress(Exception):
                if kind == "queues":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
            if channel.is_closed:
                channel = await connection.channel()


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """The test servers for this run; cleans up its databases, queues and containers after."""
    resolved = resolve_infra()
    yield resolved
    for url in resolved.databases:
        with contextlib.suppress(Exception):
            asyncio.run(drop_database(url))
    with contextlib.suppress(Exception):
        delete_amqp_by_prefix(resolved.amqp_url, resolved.amqp_prefix)
    for container in resolved.containers:
        with contextlib.suppress(Exception):
            container.stop()


@pytest.fixture(scope="session")
def database_factory(infra: Infra) -> Callable[[str], str]:
    """Create a database of this run (``t_<run>_<name>``) and return its URL; dropped at the end."""

    def create(name: str) -> str:
        url = infra.database_url(name)
        asyncio.run(ensure_database(url))
        if url not in infra.databases:
            infra.databases.append(url)
        return url

    return create


_exchange_counter = itertools.count(1)


@pytest.fixture
def exchange_name(infra: Infra) -> str:
    """A topic exchange name no other test or run uses."""
    return f"{infra.amqp_prefix}{next(_exchange_counter)}.events"


@pytest.fixture
async def bus_factory(infra: Infra, exchange_name: str) -> AsyncIterator[Callable[..., Any]]:
    """Connect EventBus instances on this test's exchange; closed and cleaned up afterwards."""
    buses: list[EventBus] = []

    async def make(service: str = "test", *, exchange: str | None = None) -> EventBus:
        bus = EventBus(url=infra.amqp_url, exchange=exchange or exchange_name, service=service)
        await bus.connect()
        buses.append(bus)
        return bus

    yield make
    declared: set[str] = set()
    for bus in buses:
        declared |= bus.declared_queues
        with contextlib.suppress(Exception):
            await bus.close()
    if declared or buses:
        with contextlib.suppress(Exception):
            await _delete_amqp(infra.amqp_url, "queues", sorted(declared))
            await _delete_amqp(
                infra.amqp_url, "exchanges", sorted({b.exchange_name for b in buses})
            )


@pytest.fixture(scope="session")
def token_minter(tmp_path_factory: pytest.TempPathFactory) -> TokenMinter:
    """Signs access tokens the services accept (point their JWKS file at ``jwks_path``)."""
    return TokenMinter(tmp_path_factory.mktemp("keys"))


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, base_url: str = "http://testserver") -> AsyncIterator[Any]:
    """Run an ASGI app's lifespan and yield an httpx client talking to it in-process."""
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


@pytest.fixture
async def capture_events(infra: Infra) -> AsyncIterator[Callable[..., Any]]:
    """``await capture_events(exchange, keys)`` → an EventCapture closed after the test."""
    connection = await aio_pika.connect_robust(infra.amqp_url)
    captures: list[EventCapture] = []

    async def open_capture(exchange: str, keys: Sequence[str] = ("#",)) -> EventCapture:
        capture = await EventCapture.open(connection, exchange, keys)
        captures.append(capture)
        return capture

    yield open_capture
    for capture in captures:
        with contextlib.suppress(Exception):
            await capture.close()
    await connection.close()
