"""The one Redis client of a service process: redis-py's asyncio client, built from a URL.

One URL (``REDIS_URL``) says which Redis deployment to use, and this module builds the client
for it (see ``docs/redis.md``):

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS), ``unix:///path``: one
  server, through a bounded, blocking pool;
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db]`` (or
  ``rediss+sentinel://``): the master Sentinel names for ``service``, followed through
  failovers; ``?sentinel_username=…&sentinel_password=…`` if the Sentinels require a login;
- ``redis+cluster://[[user]:password@]host[:port][,host[:port]…]`` (or ``rediss+cluster://``):
  a Redis Cluster, found from any of those nodes.

redis-py's own query options (``?ssl_ca_certs=…``, ``ssl_cert_reqs``, ``protocol=3``…) pass
through. hiredis, installed with ``redis[hiredis]``, parses the replies.

Every command has one budget (``timeout``) to connect, to wait for a pooled connection and
to be answered; a connection found broken is replaced and the command sent once more, a
timeout is not retried (callers fall back on their own, e.g. the users cache reads the
database).
"""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster, Sentinel
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

RedisClient: TypeAlias = Redis | RedisCluster
"""What ``create_redis`` returns; both speak the same commands (keys of one call in one slot)."""

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# Options of the URL that are ours, not redis-py's connection options.
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
HEALTH_CHECK_INTERVAL_S = 30


def create_redis(url: str, *, timeout: float = 0.5, max_connections: int = 64) -> RedisClient:
    """The client for ``url``: one server, a Sentinel-managed master, or a Cluster.

    ``max_connections`` bounds the pool (per node in a Cluster); ``timeout`` is the budget
    of one command, in seconds.
    """
    scheme = urlsplit(url).scheme
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        # A pooled connection the server closed (restart, idle timeout, CLIENT KILL) is seen
        # only when used: reconnect once at once. Timeouts are not retried: that would
        # multiply the budget.
        "retry": Retry(
            ExponentialWithJitterBackoff(base=0.01, cap=0.1),
            retries=1,
            supported_errors=(RedisConnectionError,),
        ),
    }
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_master(url, max_connections=max_connections, **options)
    if scheme in CLUSTER_SCHEMES:
        return _cluster(url, max_connections=max_connections, **options)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        # A burst beyond the pool waits for a connection (within the budget) instead of
        # opening one per caller: a connection storm on a busy loop would only time out.
        timeout=timeout,
        **options,
    )
    return Redis.from_pool(pool)


def _sentinel_master(url: str, *, max_connections: int, **options: Any) -> Redis:
    scheme, userinfo, nodes, path, query = _split(url, DEFAULT_SENTINEL_PORT)
    segments = [unquote(part) for part in path.split("/") if part]
    if not segments or len(segments) > 2:
        raise ValueError(
            "a Sentinel URL names the service: redis+sentinel://host:port/service[/db]"
        )
    service = segments[0]
    ours = {name: value for name, value in query if name in _SENTINEL_OPTIONS}
    theirs = [(name, value) for name, value in query if name not in _SENTINEL_OPTIONS]
    db = f"/{segments[1]}" if len(segments) == 2 else ""
    connection = _connection_options(SENTINEL_SCHEMES[scheme], userinfo, db, theirs)
    merged = {**options, **connection}
    sentinel_options = {k: v for k, v in merged.items() if k.startswith("socket_")}
    if "sentinel_username" in ours:
        sentinel_options["username"] = ours["sentinel_username"]
    if "sentinel_password" in ours:
        sentinel_options["password"] = ours["sentinel_password"]
    if connection.get("ssl"):
        sentinel_options["ssl"] = True
        for name, value in connection.items():
            if name.startswith("ssl_"):
                sentinel_options[name] = value
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    # The URL's own options win over the defaults, as in redis-py's from_url.
    master: Redis = sentinel.master_for(service, max_connections=max_connections, **merged)
    return master


def _cluster(url: str, *, max_connections: int, **options: Any) -> RedisCluster:
    scheme, userinfo, nodes, path, query = _split(url, DEFAULT_PORT)
    if path.strip("/"):
        raise ValueError("a Redis Cluster has only database 0: no /db in a cluster URL")
    connection = _connection_options(CLUSTER_SCHEMES[scheme], userinfo, "", query)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        max_connections=max_connections,
        **{**options, **connection},
    )


def _split(
    url: str, default_port: int
) -> tuple[str, str, list[tuple[str, int]], str, list[tuple[str, str]]]:
    """Scheme, user info, ``(host, port)`` nodes, path and query of a several-host URL."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = [_node(host, default_port) for host in hosts.split(",") if host]
    if not nodes:
        raise ValueError(f"no host in the Redis URL (scheme {parts.scheme})")
    return parts.scheme, userinfo, nodes, parts.path, parse_qsl(parts.query)


def _node(text: str, default_port: int) -> tuple[str, int]:
    # urlsplit parses one host (IPv6 in brackets too); its port check also refuses junk.
    one = urlsplit(f"//{text}")
    if not one.hostname:
        raise ValueError(f"not a host[:port] in the Redis URL: {text!r}")
    return unquote(one.hostname), one.port or default_port


def _connection_options(
    scheme: str, userinfo: str, path: str, query: list[tuple[str, str]]
) -> dict[str, Any]:
    """Credentials, database and redis-py's query options, read by redis-py's own parse_url."""
    login = f"{userinfo}@" if userinfo else ""
    suffix = f"?{urlencode(query)}" if query else ""
    options: dict[str, Any] = dict(parse_url(f"{scheme}://{login}localhost{path}{suffix}"))
    del options["host"]
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    return options
