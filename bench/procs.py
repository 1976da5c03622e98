"""Processes the bench starts (the system through the launcher, extra instances, the hello app).

Everything started here is tracked by a :class:`Processes` registry and stopped in reverse order
when the bench ends, however it ends (Ctrl-C included); databases and broker objects of the
bench's namespace are dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from servicekit.db import drop_database
from servicekit.testing.plugin import delete_amqp_by_prefix
from svctools.launcher import SERVICES, ProcessSpec, build_plan
from svctools.ports import SYSTEM_PORT_NAMES, pick_block

REPO = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
AMQP = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# The system's own block, then what only the bench starts.
PORT_NAMES = (
    *SYSTEM_PORT_NAMES,
    "HELLO",
    "USERS_NOCACHE",
    "P6_PAYMENTS",
    "P6_SIMULATOR",
)
# Settings the bench owns: the caller's environment must not change what is measured.
_FOREIGN_PREFIXES = (
    *(d.env_prefix for d in SERVICES),
    "GATEWAY_",
    "SIMULATOR_",
    "SMTP_SINK_",
    "SYSTEM_NAMESPACE",
    "RUN_DIR",
)


def say(text: str) -> None:
    """Progress on stderr, flushed at once (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pick_ports() -> dict[str, int]:
    """A block of free ports away from the defaults (8080, 8001-8005, 8090, 1025, 1080).

    Below the end-to-end tests' and the chaos run's range (20000 and up), with room for a
    second instance of each.
    """
    return pick_block(PORT_NAMES, instances=dict.fromkeys(PORT_NAMES, 2), low=10000, high=19800)


@dataclass
class Running:
    """One process the bench started."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def tail(self, lines: int = 30) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Processes:
    """Starts processes in their own sessions and stops all of them, last started first."""

    log_dir: Path
    running: list[Running] = field(default_factory=list)

    def start(
        self,
        name: str,
        command: Iterable[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> Running:
        """Start ``command`` with ``env`` added to the bench's environment."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(  # noqa: S603 - the bench's own commands
            list(command),
            cwd=cwd or REPO,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        running = Running(name, process, log_path, log)
        self.running.append(running)
        return running

    def start_spec(self, spec: ProcessSpec, *, name: str | None = None) -> Running:
        """Start a process the launcher's plan describes (same command, env and cwd)."""
        return self.start(name or spec.name, spec.command, env=spec.env, cwd=spec.cwd)

    def stop(self, running: Running, *, grace: float = 30.0) -> int | None:
        """SIGTERM its process group, then SIGKILL after ``grace`` seconds."""
        process = running.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Whatever it left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        running.log.close()
        if running in self.running:
            self.running.remove(running)
        return process.returncode

    def stop_all(self) -> None:
        """Stop every process still tracked, last started first."""
        for running in reversed(list(self.running)):
            self.stop(running)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def wait_ready(running: Running, urls: Iterable[str], *, timeout: float = 180.0) -> None:
    """Wait until every URL answers 200; fail with the process's log tail if it exits first."""
    pending = list(urls)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while pending:
            if running.process.poll() is not None:
                raise RuntimeError(
                    f"{running.name} exited with {running.process.returncode}:\n{running.tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{running.name} not ready in {timeout:.0f} s:\n{running.tail()}"
                )
            try:
                if client.get(pending[0]).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            time.sleep(0.3)


@dataclass(frozen=True)
class Bench:
    """The bench's namespace, ports, run directory and the launcher environment built from them."""

    namespace: str
    ports: Mapping[str, int]
    run_dir: Path
    env: Mapping[str, str]

    @classmethod
    def create(cls, run_dir: Path, *, extra_env: Mapping[str, str]) -> Bench:
        namespace = f"bench{uuid.uuid4().hex[:8]}"
        ports = pick_ports()
        env = {
            key: value for key, value in os.environ.items() if not key.startswith(_FOREIGN_PREFIXES)
        }
        env.update({f"{name}_PORT": str(ports[name]) for name in SYSTEM_PORT_NAMES})
        env.update(
            SYSTEM_NAMESPACE=namespace,
            RUN_DIR=str(run_dir / "system"),
            LAUNCHER_QUIET="1",
            **extra_env,
        )
        return cls(namespace, ports, run_dir, env)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def gateway(self) -> str:
        return self.url("GATEWAY")

    @property
    def exchange(self) -> str:
        return f"{self.namespace}.events"

    def database_url(self, database: str) -> str:
        return f"{POSTGRES}/{database}_{self.namespace}"

    def plan_spec(self, name: str, env: Mapping[str, str] | None = None) -> ProcessSpec:
        """The launcher's description of process ``name`` (e.g. ``users-1``) for this bench."""
        plan = build_plan({**self.env, **(env or {})})
        for spec in (*plan.processes, *plan.migrations):
            if spec.name == name:
                return spec
        raise LookupError(name)

    def start_system(self, processes: Processes) -> Running:
        """``python -m svctools.launcher`` on the bench's ports and namespace, once all is ready."""
        launcher = processes.start(
            "launcher", [sys.executable, "-m", "svctools.launcher", "--quiet"], env=self.env
        )
        urls = [f"{self.gateway}/healthz"]
        urls += [f"{self.url(d.env_prefix.rstrip('_'))}/health/ready" for d in SERVICES]
        wait_ready(launcher, urls, timeout=240)
        return launcher

    def cleanup(self) -> None:
        """Drop the namespace's databases and delete its queues and exchanges."""
        for definition in SERVICES:
            with contextlib.suppress(Exception):
                asyncio.run(drop_database(self.database_url(definition.database)))
        for extra in (
            self.database_url("outbox_latency"),
            f"{POSTGRES}/payments_{self.namespace}p6",
        ):
            with contextlib.suppress(Exception):
                asyncio.run(drop_database(extra))
        with contextlib.suppress(Exception):
            delete_amqp_by_prefix(AMQP, f"{self.namespace}.")
        with contextlib.suppress(Exception):
            delete_amqp_by_prefix(AMQP, f"{self.namespace}p6.")
