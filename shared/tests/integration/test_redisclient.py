"""The client create_redis builds, against real servers: one Redis, a Sentinel, a Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from servicekit.redisclient import create_redis
from servicekit.testing.plugin import Infra
from servicekit.testing.redisnodes import redis_cluster, redis_sentinel, redis_server


def _with_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


async def test_the_database_number_of_the_url_is_selected(infra: Infra) -> None:
    key = f"test:client:{uuid.uuid4().hex}"
    seven = create_redis(_with_db(infra.redis_url, 7), timeout=3)
    zero = create_redis(_with_db(infra.redis_url, 0), timeout=3)
    try:
        await seven.set(key, "in seven", px=10_000)
        assert await seven.get(key) == b"in seven"
        assert await zero.get(key) is None
    finally:
        await seven.delete(key)
        await seven.aclose()
        await zero.aclose()


async def test_a_killed_connection_is_replaced_and_the_command_still_answered() -> None:
    with redis_server() as server:
        client = create_redis(server.url, timeout=3)
        try:
            first = await client.client_id()
            server.cli("CLIENT", "KILL", "ID", str(first))

            second = await client.client_id()  # no error: reconnected and sent again

            assert second != first
        finally:
            await client.aclose()


async def test_a_restarted_server_is_reached_again() -> None:
    with redis_server() as server:
        client = create_redis(server.url, timeout=1)
        try:
            assert await client.ping()
            server.kill()
            with pytest.raises(RedisConnectionError):
                await client.ping()
            server.start()  # same port
            assert await client.ping()
        finally:
            await client.aclose()


async def test_nothing_listening_fails_fast_as_a_connection_error() -> None:
    client = create_redis("redis://127.0.0.1:1/0", timeout=2)
    try:
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await client.get("k")
        # A refused connection is tried twice, not waited on (wide margin for a loaded machine).
        assert time.monotonic() - started < 1.5
    finally:
        await client.aclose()


class TestSentinel:
    async def test_commands_go_to_the_master_and_follow_a_failover(self) -> None:
        with redis_sentinel() as setup:
            client = create_redis(setup.url, timeout=3)
            assert isinstance(client, Redis)
            try:
                await client.set("before", "failover")
                first_port = int((await client.info("server"))["tcp_port"])
                await asyncio.to_thread(setup.fail_over)

                # The old master is made a replica: writes there fail (READONLY) and the
                # client asks the Sentinel again. Wait until writes land on the new master.
                new_master = Redis.from_url(setup.replica.url)
                attempt = 0
                async with asyncio.timeout(30):
                    while True:
                        attempt += 1
                        with contextlib.suppress(RedisError):
                            await client.set("after", attempt)
                        if await new_master.get("after") == str(attempt).encode():
                            break
                        await asyncio.sleep(0.1)
                replicated = await new_master.get("before")
                await new_master.aclose()
            finally:
                await client.aclose()

        assert first_port == setup.master.port
        assert replicated == b"failover"


class TestCluster:
    async def test_keys_of_every_slot_and_scripts_on_one_slot(self) -> None:
        with redis_cluster(3) as cluster:
            client = create_redis(cluster.url, timeout=3)
            assert isinstance(client, RedisCluster)
            try:
                keys = [f"test:{i}" for i in range(30)]
                for key in keys:
                    await client.set(key, key)
                values = [await client.get(key) for key in keys]
                owners = {client.get_node_from_key(key).port for key in keys}
                script = client.register_script("return redis.call('MGET', KEYS[1], KEYS[2])")
                tagged = await script(keys=["user:{1}", "user:{1}:gen"])
                pong = await client.ping()
            finally:
                await client.aclose()

        assert values == [key.encode() for key in keys]
        assert owners == {node.port for node in cluster.nodes}
        assert tagged == [None, None]
        assert pong is True
