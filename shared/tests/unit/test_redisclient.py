"""Which client create_redis builds for each URL form, and what it passes on."""

from __future__ import annotations

import pytest
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from servicekit.redisclient import create_redis


def test_a_plain_url_is_one_server_through_a_bounded_blocking_pool() -> None:
    client = create_redis("redis://:secret@cache.internal:6380/3", timeout=0.25, max_connections=8)

    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    assert pool.max_connections == 8
    assert pool.timeout == 0.25
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 3)
    assert kwargs["password"] == "secret"
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.25
    # A broken connection is retried once; a timeout is not retried.
    assert kwargs["retry"].get_retries() == 1


def test_rediss_is_tls_with_redis_py_options_from_the_query() -> None:
    client = create_redis("rediss://cache.internal/0?ssl_ca_certs=/etc/ca.pem&protocol=3")

    assert isinstance(client, Redis)
    assert client.connection_pool.connection_class is SSLConnection
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert kwargs["protocol"] == 3


def test_a_sentinel_url_follows_the_master_of_its_service() -> None:
    client = create_redis(
        "redis+sentinel://:secret@s1:26379,s2,[::1]:26380/primary/2?sentinel_password=s%40fe",
        timeout=0.3,
        max_connections=5,
    )

    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "primary"
    assert pool.max_connections == 5
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "secret"
    assert "sentinel_password" not in pool.connection_kwargs
    sentinels = pool.sentinel_manager.sentinels
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ]
    assert addresses == [("s1", 26379), ("s2", 26379), ("::1", 26380)]
    sentinel_kwargs = sentinels[0].connection_pool.connection_kwargs
    assert sentinel_kwargs["password"] == "s@fe"
    assert sentinel_kwargs["socket_timeout"] == 0.3


def test_rediss_sentinel_speaks_tls_to_the_master_and_the_sentinels() -> None:
    client = create_redis("rediss+sentinel://s1/primary?ssl_ca_certs=/etc/ca.pem")

    assert isinstance(client, Redis)
    assert client.connection_pool.connection_class is SentinelManagedSSLConnection
    sentinel = client.connection_pool.sentinel_manager.sentinels[0]
    assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"


def test_a_cluster_url_is_a_cluster_client_seeded_with_every_node() -> None:
    client = create_redis("redis+cluster://:secret@n1:7000,n2:7001,n3", max_connections=4)

    assert isinstance(client, RedisCluster)
    seeds = list(client.nodes_manager.startup_nodes.values())
    assert sorted((node.host, node.port) for node in seeds) == [
        ("n1", 7000),
        ("n2", 7001),
        ("n3", 6379),
    ]
    assert {node.max_connections for node in seeds} == {4}  # per node
    assert client.connection_kwargs["password"] == "secret"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",  # no service name
        "redis+sentinel://s1/primary/0/extra",
        "redis+cluster://n1:7000/1",  # a cluster has only database 0
        "redis+cluster://",
        "redis+cluster://n1:notaport",
        "memcached://127.0.0.1:11211",
    ],
)
def test_malformed_urls_are_refused_at_start(url: str) -> None:
    with pytest.raises(ValueError):
        create_redis(url)
