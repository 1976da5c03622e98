"""Throwaway Redis servers for tests: one server, a master with a replica and a Sentinel, a Cluster.

Each runs ``redis-server`` on free ports with nothing persisted, in its own temporary
directory, and is killed (by the process id started here) when the context ends: tests can
kill or fail them over without touching the machine's shared Redis.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from servicekit.testing.rabbitnodes import free_port
from servicekit.testing.waiting import wait_until_sync


class RedisNodeError(RuntimeError):
    """A throwaway Redis did not come up (or redis-server is not installed)."""


def _cli(port: int, *args: str, timeout: float = 10) -> str:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.stdout.strip()


@dataclass
class RedisNode:
    """One redis-server (or redis-server --sentinel) process started here."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        """Run ``redis-cli`` against this node; its output."""
        return _cli(self.port, *args)

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise RedisNodeError("redis-server is not installed (Debian: redis-server)")
        log = (self.directory / f"{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", *self.args],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until_sync(
            lambda: self.cli("PING") == "PONG", timeout=30, what=f"redis on port {self.port}"
        )

    def kill(self) -> None:
        """SIGKILL the process (its clients see their connections drop)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def _directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="redis-test-") as name:
        yield Path(name)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A free port whose cluster bus port (10,000 above) is free too; both under 65,536."""
    for _ in range(200):
        port = random.randint(20_000, 55_000)  # noqa: S311 - not a secret
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RedisNodeError("no free port pair for a cluster node")


def _server(directory: Path, *extra: str, port: int | None = None) -> RedisNode:
    port = port or free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    node = RedisNode(port=port, directory=directory, args=[*args, *extra])
    node.start()
    return node


@contextlib.contextmanager
def _killed_at_exit(nodes: list[RedisNode]) -> Iterator[None]:
    try:
        yield
    finally:
        for node in nodes:
            node.kill()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisNode]:
    """One Redis server on a free port."""
    with _directory() as directory:
        nodes: list[RedisNode] = []
        with _killed_at_exit(nodes):
            nodes.append(_server(directory))
            yield nodes[0]


@dataclass
class SentinelSetup:
    """A master, its replica and one Sentinel watching them as ``service``."""

    master: RedisNode
    replica: RedisNode
    sentinel: RedisNode
    service: str = "primary"

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    def master_port(self) -> int:
        """The master's port as the Sentinel reports it now."""
        reply = self.sentinel.cli("SENTINEL", "get-master-addr-by-name", self.service)
        return int(reply.split()[-1])

    def fail_over(self, timeout: float = 60) -> None:
        """Have the Sentinel promote the replica; return once it names the replica as master."""
        # Refused (NOGOODSLAVE) until the Sentinel has fresh INFO from the replica: ask again.
        wait_until_sync(
            lambda: self.sentinel.cli("SENTINEL", "FAILOVER", self.service) == "OK",
            timeout=timeout,
            what="the Sentinel to accept a failover",
        )
        wait_until_sync(
            lambda: self.master_port() == self.replica.port, timeout=timeout, what="the failover"
        )


@contextlib.contextmanager
def redis_sentinel(service: str = "primary") -> Iterator[SentinelSetup]:
    """A master with one replica, watched by one Sentinel (quorum 1), on free ports."""
    with _directory() as directory:
        nodes: list[RedisNode] = []
        with _killed_at_exit(nodes):
            master = _server(directory)
            nodes.append(master)
            replica = _server(directory, "--replicaof", "127.0.0.1", str(master.port))
            nodes.append(replica)
            wait_until_sync(
                lambda: "master_link_status:up" in replica.cli("INFO", "replication"),
                timeout=30,
                what="the replica in sync",
            )
            port = free_port()
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {service} 127.0.0.1 {master.port} 1\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 5000\n"
            )
            sentinel = RedisNode(port=port, directory=directory, args=[str(config), "--sentinel"])
            nodes.append(sentinel)
            sentinel.start()
            setup = SentinelSetup(master, replica, sentinel, service)
            wait_until_sync(
                lambda: str(replica.port) in sentinel.cli("SENTINEL", "replicas", service),
                timeout=30,
                what="the Sentinel to know the replica",
            )
            yield setup


@dataclass
class ClusterSetup:
    """A Redis Cluster of masters without replicas."""

    nodes: list[RedisNode]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[ClusterSetup]:
    """``masters`` cluster-enabled servers on free ports, their slots assigned by redis-cli."""
    with _directory() as directory:
        nodes: list[RedisNode] = []
        with _killed_at_exit(nodes):
            for index in range(masters):
                config = f"nodes-{index}.conf"
                options = ("--cluster-enabled", "yes", "--cluster-config-file", config)
                nodes.append(_server(directory, *options, port=_cluster_port()))
            addresses = [f"127.0.0.1:{node.port}" for node in nodes]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
                capture_output=True,
                timeout=60,
                check=True,
            )
            for node in nodes:
                wait_until_sync(
                    lambda node=node: "cluster_state:ok" in node.cli("CLUSTER", "INFO"),  # type: ignore[misc]
                    timeout=30,
                    what=f"cluster node {node.port} ready",
                )
            yield ClusterSetup(nodes)
