"""Throwaway RabbitMQ nodes beside the machine's own broker, alone or as a cluster.

Tests that stop, start or kill a broker must not do it to the broker every other test run on the
machine shares. These nodes come from the same installed ``rabbitmq-server``, each with its own
node name, AMQP and distribution ports, config file and data directory (owned by the
``rabbitmq`` user, which the Debian package runs the server as). They share epmd and the
rabbitmq user's Erlang cookie, so they can be clustered with ``join_cluster``.

    with RabbitCluster.started(size=3) as cluster:
        urls = cluster.urls
        cluster.nodes[0].kill()

Starting a node takes about 6 s on a 2-core machine; stopping and removing it, about 2 s.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SERVER_USER = "rabbitmq"


class RabbitNodeError(RuntimeError):
    """A node could not be started, reached or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RabbitNode:
    """One extra RabbitMQ node: its name, ports and directory."""

    name: str
    amqp_port: int
    dist_port: int
    base: Path
    extra_config: str = ""
    _pid: int | None = field(default=None, repr=False)

    @classmethod
    def create(cls, name: str | None = None, *, extra_config: str = "") -> RabbitNode:
        """Lay out a node's directory (not started yet)."""
        if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
            raise RabbitNodeError("rabbitmq-server and rabbitmqctl are needed (Debian package)")
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError as exc:
            raise RabbitNodeError(f"no {SERVER_USER!r} user: install rabbitmq-server") from exc
        if os.geteuid() not in (0, owner.pw_uid):
            raise RabbitNodeError(f"starting a RabbitMQ node needs root or the {SERVER_USER} user")
        base = Path(tempfile.mkdtemp(prefix="rabbitnode-"))
        base.chmod(0o755)
        node = cls(
            name=name or f"t{uuid.uuid4().hex[:8]}",
            amqp_port=free_port(),
            dist_port=free_port(),
            base=base,
            extra_config=extra_config,
        )
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{node.amqp_port}\n{extra_config}"
        )
        (base / "enabled_plugins").write_text("[].\n")  # no management listener to collide
        for path in (base, *base.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        return node

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def pid_file(self) -> Path:
        return self.base / "pid"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.pid_file),
        )
        return env

    def ctl(self, *args: str, timeout: float = 90) -> str:
        """Run ``rabbitmqctl -n <node> ARGS`` and return its output; raise on failure."""
        return self._run(["rabbitmqctl", "-q", "-n", self.nodename, *args], timeout)

    def _run(self, command: list[str], timeout: float) -> str:
        try:
            done = subprocess.run(
                command, env=self._env(), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitNodeError(f"{' '.join(command)} took over {timeout} s") from exc
        if done.returncode != 0:
            raise RabbitNodeError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def start(self, timeout: float = 90) -> None:
        """Start the node's Erlang VM and the rabbit app; return once AMQP answers."""
        self.pid_file.unlink(missing_ok=True)
        self._run(["rabbitmq-server", "-detached"], timeout)
        self.ctl("wait", str(self.pid_file), "--timeout", str(int(timeout)), timeout=timeout + 10)
        self._pid = int(self.pid_file.read_text().strip())
        self._wait_for_port(open_=True, timeout=timeout)

    def stop_app(self) -> None:
        """Stop the rabbit app, keeping the VM (as ``rabbitmqctl stop_app`` does)."""
        self.ctl("stop_app")

    def start_app(self, timeout: float = 90) -> None:
        self.ctl("start_app", timeout=timeout)
        self._wait_for_port(open_=True, timeout=timeout)

    def stop(self, timeout: float = 90) -> None:
        """Stop the node gracefully, VM and all."""
        if self._pid is None:
            return
        with contextlib.suppress(RabbitNodeError):
            self.ctl("stop", timeout=timeout)
        self._wait_for_exit(timeout)

    def kill(self) -> None:
        """SIGKILL the node's VM: no goodbye to clients or peers."""
        if self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        self._wait_for_exit(30)

    @property
    def running(self) -> bool:
        if self._pid is None:
            return False
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            return False
        return True

    def remove(self) -> None:
        """Stop the node if it runs (kill it if it will not stop) and delete its directory."""
        try:
            self.stop(timeout=30)
        finally:
            if self.running:
                self.kill()
            shutil.rmtree(self.base, ignore_errors=True)

    def _wait_for_exit(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"{self.nodename} (pid {self._pid}) did not exit")
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid or -1, os.WNOHANG)  # reap it if it was ours
            time.sleep(0.1)
        self._pid = None

    def _wait_for_port(self, *, open_: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _answers(self.amqp_port) != open_:
            if time.monotonic() > deadline:
                state = "open" if open_ else "close"
                raise RabbitNodeError(f"{self.nodename}: port {self.amqp_port} did not {state}")
            time.sleep(0.1)


@dataclass
class RabbitCluster:
    """Nodes joined into one cluster; the first node is the seed the others join."""

    nodes: list[RabbitNode]

    @classmethod
    @contextlib.contextmanager
    def started(cls, size: int = 3, *, extra_config: str = "") -> Iterator[RabbitCluster]:
        """Start ``size`` nodes, join them, and remove them all afterwards."""
        prefix = f"t{uuid.uuid4().hex[:6]}"
        nodes = [
            RabbitNode.create(f"{prefix}-{index}", extra_config=extra_config)
            for index in range(1, size + 1)
        ]
        cluster = cls(nodes)
        try:
            for node in nodes:
                node.start()
            for node in nodes[1:]:
                node.stop_app()
                node.ctl("join_cluster", nodes[0].nodename)
                node.start_app()
            yield cluster
        finally:
            for node in nodes:
                with contextlib.suppress(RabbitNodeError):
                    node.remove()

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def running_nodes(self) -> list[str]:
        """The cluster's running members, as a live node reports them."""
        for node in self.nodes:
            if node.running:
                with contextlib.suppress(RabbitNodeError):
                    out = node.ctl("eval", "rabbit_nodes:all_running().", timeout=30)
                    return sorted(name.strip(" []'\n") for name in out.split(",") if name.strip())
        return []

    def live_node(self) -> RabbitNode:
        """A node whose rabbit app answers (the first one found)."""
        for node in self.nodes:
            if node.running and _answers(node.amqp_port):
                return node
        raise RabbitNodeError("no node of the cluster is running")

    def queues(self, prefix: str = "") -> list[tuple[str, str, int]]:
        """(name, leader node, messages) of each queue whose name starts with ``prefix``.

        A classic queue has no leader: its node is reported instead (``pid`` in 3.x). The
        message count is ready plus unacknowledged, as a live node reports it.
        """
        out = self.live_node().ctl(
            "list_queues", "name", "type", "leader", "pid", "messages", "--no-table-headers"
        )
        found = []
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) != 5 or not fields[0].startswith(prefix):
                continue
            name, kind, leader, pid, messages = (f.strip() for f in fields)
            owner = leader if kind == "quorum" else _pid_node(pid)
            found.append((name, owner, int(messages) if messages.isdigit() else 0))
        return found

    def busiest_leader(self, prefix: str = "") -> RabbitNode:
        """The node that leads the most quorum queues whose names start with ``prefix``."""
        leads = {node.nodename: 0 for node in self.nodes}
        for _, leader, _ in self.queues(prefix):
            if leader in leads:
                leads[leader] += 1
        busiest = max(leads, key=lambda name: leads[name])
        return next(node for node in self.nodes if node.nodename == busiest)


def _pid_node(pid: str) -> str:
    # "<rabbit@host.1234.0>" names its node after the "<" and before the first dot group.
    return pid.strip("<>").rsplit(".", 3)[0] if pid else ""


@contextlib.contextmanager
def rabbit_node(*, extra_config: str = "") -> Iterator[RabbitNode]:
    """One started node, removed afterwards."""
    node = RabbitNode.create(extra_config=extra_config)
    try:
        node.start()
        yield node
    finally:
        node.remove()
