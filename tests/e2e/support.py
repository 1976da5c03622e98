"""Starting, stopping and cleaning up the whole system the way `make run` runs it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from servicekit.db import drop_database
from servicekit.testing.plugin import delete_amqp_by_prefix
from servicekit.testing.waiting import wait_until_sync
from svctools.ports import SYSTEM_PORT_NAMES, every_port, pick_block

SERVICES = {
    "auth": ("AUTH", "auth"),
    "users": ("USERS", "users"),
    "orders": ("ORDERS", "orders"),
    "payments-gateway": ("PAYMENTS", "payments"),
    "notifications": ("NOTIFICATIONS", "notifications"),
}
REPO = Path(__file__).resolve().parents[2]
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
AMQP = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class System:
    """A running system: where it listens, its run directory, its process."""

    namespace: str
    run_dir: Path
    ports: dict[str, int]
    instances: dict[str, int]
    process: subprocess.Popen[bytes]
    output: Path
    all_ports: list[int] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY']}"

    def service_url(self, service: str, instance: int = 1) -> str:
        env_name = SERVICES[service][0]
        return f"http://127.0.0.1:{self.ports[env_name] + 100 * (instance - 1)}"

    def log(self, name: str) -> str:
        path = self.run_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _pick_ports(instances: dict[str, int]) -> tuple[dict[str, int], list[int]]:
    counts = {SERVICES[service][0]: count for service, count in instances.items()}
    ports = pick_block(SYSTEM_PORT_NAMES, instances=counts)
    return ports, every_port(ports, counts)


def start_system(tmp: Path, *, instances: dict[str, int], extra_env: dict[str, str]) -> System:
    """Start `python -m svctools.launcher` with its own ports and namespace; wait until ready."""
    namespace = f"e2e{uuid.uuid4().hex[:8]}"
    ports, every = _pick_ports(instances)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(tuple(f"{p}_" for p, _ in SERVICES.values()))
    }
    env.update({f"{name}_PORT": str(port) for name, port in ports.items()})
    env.update({f"{SERVICES[s][0]}_INSTANCES": str(n) for s, n in instances.items()})
    env.update(
        SYSTEM_NAMESPACE=namespace,
        RUN_DIR=str(tmp / "run"),
        LAUNCHER_QUIET="1",
        **extra_env,
    )
    output = tmp / "launcher.out"
    process = subprocess.Popen(
        [sys.executable, "-m", "svctools.launcher", "--quiet"],
        cwd=REPO,
        env=env,
        stdout=output.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    system = System(namespace, tmp / "run", ports, instances, process, output, every)

    def ready() -> bool:
        if process.poll() is not None:
            cleanup(system)  # what it migrated before it died
            raise AssertionError(f"launcher exited early:\n{output.read_text()[-4000:]}")
        return _all_ready(system)

    try:
        wait_until_sync(ready, timeout=180, interval=0.5, what="the system to be ready")
    except AssertionError:
        if process.poll() is not None:
            raise
        stop_system(system)
        cleanup(system)
        raise AssertionError(f"system not ready in time:\n{output.read_text()[-4000:]}") from None
    return system


def _all_ready(system: System) -> bool:
    urls = [f"{system.gateway}/healthz"]
    for service in SERVICES:
        for k in range(1, system.instances.get(service, 1) + 1):
            urls.append(f"{system.service_url(service, k)}/health/ready")
    try:
        return all(httpx.get(url, timeout=1).status_code == 200 for url in urls)
    except httpx.HTTPError:
        return False


def stop_system(system: System) -> int | None:
    """SIGTERM the launcher as Ctrl-C would; returns its exit code."""
    if system.process.poll() is None:
        system.process.send_signal(signal.SIGTERM)
        try:
            system.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(system.process.pid, signal.SIGKILL)
            system.process.wait()
    return system.process.returncode


def leftovers(system: System) -> tuple[list[int], list[str]]:
    """Ports still listening and processes still mentioning the run directory."""
    ports = [p for p in system.all_ports if _listening(p)]
    procs = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes()
            if system.namespace.encode() in environ or str(system.run_dir) in cmdline:
                procs.append(f"{proc.name}: {cmdline[:120]}")
    return ports, procs


def cleanup(system: System) -> None:
    """Drop the namespace's databases and delete its queues and exchange."""
    for _, database in SERVICES.values():
        with contextlib.suppress(Exception):
            asyncio.run(drop_database(f"{POSTGRES}/{database}_{system.namespace}"))
    delete_amqp_by_prefix(AMQP, f"{system.namespace}.")
