"""The multiplexed Redis connection against a real Redis, plus servers that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
import uvloop
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from servicekit import tracecontext
from servicekit.redismux import MultiplexedRedis
from servicekit.testing.plugin import Infra


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture
async def mux(infra: Infra) -> AsyncIterator[MultiplexedRedis]:
    client = MultiplexedRedis(infra.redis_url, timeout=2, connect_timeout=2)
    yield client
    await client.aclose()


@pytest.fixture
async def plain(infra: Infra) -> AsyncIterator[Redis]:
    client = Redis.from_url(infra.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test:mux:{uuid.uuid4().hex}:"


@contextlib.asynccontextmanager
async def tcp_server(
    on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A TCP server on a free port that treats every connection with ``on_connect``."""
    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def test_replies_come_back_as_redis_sends_them(
    mux: MultiplexedRedis, plain: Redis, prefix: str
) -> None:
    await plain.set(f"{prefix}a", b"\x00binary\xff")
    try:
        assert await mux.execute("GET", f"{prefix}a") == b"\x00binary\xff"
        assert await mux.execute("MGET", f"{prefix}a", f"{prefix}missing") == [
            b"\x00binary\xff",
            None,
        ]
        assert await mux.execute("INCRBY", f"{prefix}n", 5) == 5
        assert await mux.execute("SET", f"{prefix}b", "x", "PX", 10_000) == b"OK"
    finally:
        await plain.delete(f"{prefix}a", f"{prefix}n", f"{prefix}b")


async def test_concurrent_callers_each_get_their_own_reply(
    mux: MultiplexedRedis, plain: Redis, prefix: str
) -> None:
    keys = [f"{prefix}{i}" for i in range(500)]
    await plain.mset({key: f"value-{i}" for i, key in enumerate(keys)})
    try:
        replies = await asyncio.gather(*(mux.execute("GET", key) for key in keys))
        assert replies == [f"value-{i}".encode() for i in range(len(keys))]
        # All of them went over one connection.
        clients = await plain.client_list()
        assert await mux.execute("CLIENT", "ID") in {int(c["id"]) for c in clients}
    finally:
        await plain.delete(*keys)


async def test_a_command_error_raises_and_the_connection_stays_usable(
    mux: MultiplexedRedis, plain: Redis, prefix: str
) -> None:
    await plain.set(f"{prefix}text", "not a number")
    try:
        connection = await mux.execute("CLIENT", "ID")
        with pytest.raises(ResponseError, match="not an integer"):
            await mux.execute("INCR", f"{prefix}text")
        assert await mux.execute("GET", f"{prefix}text") == b"not a number"
        assert await mux.execute("CLIENT", "ID") == connection
    finally:
        await plain.delete(f"{prefix}text")


async def test_a_caller_that_goes_away_does_not_shift_the_replies(
    mux: MultiplexedRedis, plain: Redis, prefix: str
) -> None:
    await plain.mset({f"{prefix}slow": "first", f"{prefix}next": "second"})
    try:
        abandoned = asyncio.ensure_future(mux.execute("GET", f"{prefix}slow"))
        following = asyncio.ensure_future(mux.execute("GET", f"{prefix}next"))
        await asyncio.sleep(0)  # both sent
        abandoned.cancel()
        assert await following == b"second"
        assert await mux.execute("GET", f"{prefix}slow") == b"first"
    finally:
        await plain.delete(f"{prefix}slow", f"{prefix}next")


async def test_a_killed_connection_fails_nothing_later_it_reconnects(
    mux: MultiplexedRedis, plain: Redis
) -> None:
    first = await mux.execute("CLIENT", "ID")
    await plain.client_kill_filter(_id=first)
    # The close may not have arrived yet: a command either fails as a connection error or
    # already goes over a new connection; the one after certainly works.
    with contextlib.suppress(RedisConnectionError):
        await mux.execute("PING")
    second = await mux.execute("CLIENT", "ID")
    assert second != first
    assert await mux.execute("PING") == b"PONG"


async def test_a_connection_already_closing_is_replaced_not_used(mux: MultiplexedRedis) -> None:
    # The state right after the server's close was read: the transport is closing, and its
    # connection_lost has not run yet. A command must go over a new connection, not fail.
    first = await mux.execute("CLIENT", "ID")
    protocol = mux._protocol
    assert protocol is not None
    assert protocol.transport is not None
    protocol.transport.close()

    second = await mux.execute("CLIENT", "ID")

    assert second != first


async def test_the_database_number_of_the_url_is_selected(infra: Infra, plain: Redis) -> None:
    key = f"test:mux:{uuid.uuid4().hex}"
    other = MultiplexedRedis(_with_db(infra.redis_url, 7), timeout=2)
    on_seven = Redis.from_url(_with_db(infra.redis_url, 7))
    try:
        await other.execute("SET", key, "in seven", "PX", 10_000)
        assert await on_seven.get(key) == b"in seven"
        assert await plain.get(key) is None
    finally:
        await on_seven.delete(key)
        await on_seven.aclose()
        await other.aclose()


async def test_a_silent_server_times_out_every_waiting_command() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    async with tcp_server(never_answer) as port:
        mux = MultiplexedRedis(f"redis://127.0.0.1:{port}/0", timeout=0.2, connect_timeout=1)
        try:
            started = asyncio.get_running_loop().time()
            results = await asyncio.gather(
                *(mux.execute("GET", "k") for _ in range(5)), return_exceptions=True
            )
            elapsed = asyncio.get_running_loop().time() - started
        finally:
            await mux.aclose()
    assert all(isinstance(r, RedisTimeoutError) for r in results), results
    assert elapsed < 1.5


async def test_slow_answers_within_the_timeout_arrive_and_a_later_silence_times_out() -> None:
    """The one timer per connection follows the oldest unanswered command, not the first."""
    answers = [0.15, 0.15, 0.15]  # seconds before answering each PING; then silence

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        while answers:
            data = await reader.read(1024)
            if not data:
                return
            pending += data
            while b"PING" in pending and answers:
                pending = pending.split(b"PING", 1)[1]
                delay = answers.pop(0)
                asyncio.get_running_loop().call_later(delay, writer.write, b"+PONG\r\n")
        await reader.read()
        writer.close()

    async with tcp_server(slow) as port:
        mux = MultiplexedRedis(f"redis://127.0.0.1:{port}/0", timeout=0.25, connect_timeout=1)
        try:
            first = await asyncio.gather(*(mux.execute("PING") for _ in range(2)))
            await asyncio.sleep(0.2)  # past the first commands' deadline
            third = await mux.execute("PING")
            started = asyncio.get_running_loop().time()
            with pytest.raises(RedisTimeoutError):
                await mux.execute("PING")
            waited = asyncio.get_running_loop().time() - started
        finally:
            await mux.aclose()
    assert first == [b"PONG", b"PONG"]
    assert third == b"PONG"
    assert 0.2 <= waited < 0.6


async def test_a_server_that_hangs_up_fails_the_waiting_commands() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    async with tcp_server(hang_up) as port:
        mux = MultiplexedRedis(f"redis://127.0.0.1:{port}/0", timeout=2)
        try:
            with pytest.raises(RedisConnectionError):
                await mux.execute("GET", "k")
        finally:
            await mux.aclose()


async def test_a_server_that_speaks_no_resp_fails_as_a_redis_error() -> None:
    async def gibberish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    async with tcp_server(gibberish) as port:
        mux = MultiplexedRedis(f"redis://127.0.0.1:{port}/0", timeout=2)
        try:
            with pytest.raises(RedisError):
                await mux.execute("GET", "k")
        finally:
            await mux.aclose()


async def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mux = MultiplexedRedis(f"redis://127.0.0.1:{port}/0", timeout=1, connect_timeout=1)
    with pytest.raises(RedisConnectionError):
        await mux.execute("PING")
    await mux.aclose()


async def test_a_closed_client_refuses_commands(infra: Infra) -> None:
    mux = MultiplexedRedis(infra.redis_url)
    assert await mux.execute("PING") == b"PONG"
    await mux.aclose()
    with pytest.raises(RedisConnectionError):
        await mux.execute("PING")


def test_it_works_on_uvloop_as_the_services_run_it(infra: Infra) -> None:
    """uvicorn runs the services on uvloop, whose transports differ from asyncio's."""

    async def scenario() -> tuple[list[str], list[bytes | None], int]:
        mux = MultiplexedRedis(infra.redis_url, timeout=2)
        plain = Redis.from_url(infra.redis_url)
        keys = [f"test:mux:{uuid.uuid4().hex}:{i}" for i in range(50)]
        await plain.mset({key: key for key in keys})
        try:
            replies = await asyncio.gather(*(mux.execute("GET", key) for key in keys))
            with pytest.raises(ResponseError):
                await mux.execute("NO-SUCH-COMMAND")
            return keys, replies, await mux.execute("DBSIZE")
        finally:
            await plain.delete(*keys)
            await plain.aclose()
            await mux.aclose()

    keys, replies, size = uvloop.run(scenario())
    assert replies == [key.encode() for key in keys]
    assert size >= 50


async def test_commands_are_client_spans_of_the_caller_when_spans_are_recorded(
    mux: MultiplexedRedis, infra: Infra
) -> None:
    tracecontext.configure_tracing("tests")  # unless an earlier test installed one
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracecontext.tracer().start_as_current_span("GET /users/me") as parent:
        await mux.execute("mget", "test:mux:absent", "test:mux:absent:gen")
    exporter.shutdown()

    [span] = [s for s in exporter.get_finished_spans() if s.name == "MGET"]
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes is not None
    assert span.attributes["db.system"] == "redis"
    assert span.attributes["db.operation.name"] == "MGET"
    assert span.attributes["server.port"] == (urlsplit(infra.redis_url).port or 6379)
    assert not any("absent" in str(value) for value in span.attributes.values())
