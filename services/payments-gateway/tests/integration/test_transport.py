"""The provider client's sharded pools, against a real HTTP server on a free port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from payments_gateway.transport import ShardedTransport


class SlowServer:
    """HTTP/1.1 with keep-alive; answers each request after ``delay``; notes its connections."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.connections: set[tuple[str, int]] = set()
        self.open_now = 0
        self.most_open = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer.get_extra_info("peername"))
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                await asyncio.sleep(self.delay)
                body = b'{"path": "' + path + b'"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


@contextlib.asynccontextmanager
async def running(server: SlowServer) -> AsyncIterator[str]:
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


async def test_requests_use_every_pool_and_never_more_connections_than_allowed() -> None:
    server = SlowServer(delay=0.05)
    async with running(server) as url:
        transport = ShardedTransport(shards=4, max_connections=10)
        async with httpx.AsyncClient(base_url=url, transport=transport) as client:
            responses = await asyncio.gather(*(client.get(f"/r{i}") for i in range(40)))

    assert [r.json()["path"] for r in responses] == [f"/r{i}" for i in range(40)]
    # Pools of 3, 3, 2 and 2: ten connections at most, all of them used and kept alive
    # between requests (40 requests did not need 40 connections).
    assert server.most_open <= 10
    assert len(server.connections) == 10


async def test_fewer_connections_than_shards_make_fewer_pools_of_one() -> None:
    server = SlowServer(delay=0.05)
    async with running(server) as url:
        transport = ShardedTransport(shards=4, max_connections=2)
        async with httpx.AsyncClient(base_url=url, transport=transport) as client:
            responses = await asyncio.gather(*(client.get("/x") for _ in range(6)))

    assert all(r.status_code == 200 for r in responses)
    assert len(transport.pools) == 2
    assert server.most_open <= 2


@pytest.mark.parametrize(("shards", "connections"), [(0, 8), (4, 0)])
def test_at_least_one_pool_and_one_connection(shards: int, connections: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ShardedTransport(shards=shards, max_connections=connections)
