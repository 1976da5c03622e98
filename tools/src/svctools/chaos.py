"""Chaos run (`make chaos`): the whole system under load while its processes and servers fail.

It starts the system as `make run` does (two instances of orders and payments-gateway), on
ports, databases, queues and a run directory of its own, so a developer's `make run` is never
touched. Concurrent clients place orders through the gateway (``tok_visa`` mostly, some
``tok_decline…`` and ``tok_pending…``; some orders are cancelled while pending, others once
confirmed, so refunds happen) while, on a schedule, every service process is killed with
SIGKILL (the launcher restarts it), RabbitMQ is restarted (``rabbitmqctl stop_app`` /
``start_app``) and, separately, has the system's connections closed, Redis is stopped and
started, and the provider simulator turns 30% errors and latency spikes on and off.

Then it waits (bounded) for the system to settle and checks what a user would notice:

- every order that got a 201 is in a terminal state (none lost);
- the provider's ledger has exactly one charge per confirmed or refunded order, none for a
  failed one, one refund per refunded order (and a cancelled order's late charge refunded);
- every terminal order event (and every welcome) produced exactly one email in the sink;
- no message is left in any of the system's queues (dead-letter and retry queues included);
- every service's outbox is empty, and every notification was sent.

It prints a summary table and exits 1 when an invariant fails (0 when all hold).

One step of the schedule puts work in flight on purpose across a broker restart: the provider
goes down, confirmed orders are cancelled (their refunds are deferred) while new orders' payments
are deferred too, then RabbitMQ is restarted with all of them waiting in delay queues, then the
provider comes back. Every one of them must still end.

The system runs against a RabbitMQ node and a redis-server of its own, started on free ports for
the run and removed afterwards (PostgreSQL is the machine's, with databases of its own): no
other user of the machine's broker or Redis notices a run, so it is safe to run anywhere.

    python -m svctools.chaos [--orders N] [--clients C] [--interval S] ... (--help)
    python -m svctools.chaos --cleanup NAMESPACE   # what a failed or --keep run left behind
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from servicekit.db import asyncpg_dsn, drop_database
from servicekit.operations import outbox_backlog
from servicekit.testing.rabbitnodes import RabbitNode, RabbitNodeError, free_port
from svctools.launcher import SERVICES, ServiceDefinition
from svctools.ports import SYSTEM_PORT_NAMES, pick_block
from svctools.smtp_sink import read_messages

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "chaos monkey passphrase 42"
TERMINAL = frozenset({"confirmed", "failed", "cancelled", "refunded"})
# The email each event calls for (notifications derives the Message-ID from event id + template).
TEMPLATES = {
    "order.confirmed": "order_confirmed",
    "order.failed": "order_failed",
    "order.cancelled": "order_cancelled",
    "payment.refunded": "payment_refunded",
    "user.registered": "welcome",
}
_MESSAGE_ID = re.compile(r"^<([0-9a-f-]{36})\.([a-z_]+)@")
RETRYABLE = frozenset({429, 502, 503, 504})
STABLE_FOR = 6.0  # the settled state must hold this long (queue statistics lag a few seconds)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """What one chaos run does; every field has a CHAOS_* environment variable."""

    orders: int
    clients: int
    users: int
    interval: float
    outage: float
    error_rate: float
    latency_ms: int
    settle_timeout: float
    gateway_rate: int
    seed: int
    keep: bool
    cleanup: str | None
    postgres_url: str


def parse_settings(argv: Sequence[str] | None, env: Mapping[str, str]) -> Settings:
    """Settings from the command line, then CHAOS_* variables, then the defaults."""

    def default(name: str, value: object) -> str:
        return env.get(f"CHAOS_{name}", str(value))

    parser = argparse.ArgumentParser(
        prog="python -m svctools.chaos",
        description="Run the whole system under load while its processes and servers fail, "
        "then check that nothing was lost, charged twice or emailed twice.",
    )
    parser.add_argument(
        "--orders",
        type=int,
        default=default("ORDERS", 1000),
        help="orders to place (CHAOS_ORDERS)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=default("CLIENTS", 8),
        help="concurrent clients placing them (CHAOS_CLIENTS)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=default("USERS", 20),
        help="users the orders are spread over (CHAOS_USERS)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=default("INTERVAL", 10),
        help="seconds between two faults of the schedule (CHAOS_INTERVAL)",
    )
    parser.add_argument(
        "--outage",
        type=float,
        default=default("OUTAGE", 2),
        help="seconds RabbitMQ and Redis stay down each time (CHAOS_OUTAGE)",
    )
    parser.add_argument(
        "--error-rate",
        type=float,
        default=default("ERROR_RATE", 0.3),
        help="share of provider calls answered 500/503 while errors are on (CHAOS_ERROR_RATE)",
    )
    parser.add_argument(
        "--latency-ms",
        type=int,
        default=default("LATENCY_MS", 6000),
        help="provider latency during a spike; above payments-gateway's 5 s read timeout, so "
        "charges time out and are retried with their idempotency key (CHAOS_LATENCY_MS)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=default("SETTLE_TIMEOUT", 420),
        help="seconds the system may take to settle after the last fault (CHAOS_SETTLE_TIMEOUT)",
    )
    parser.add_argument(
        "--gateway-rate",
        type=int,
        default=default("GATEWAY_RATE", 1000),
        help="the gateway's per-client rate limit for this run, since every client is "
        "127.0.0.1 (CHAOS_GATEWAY_RATE)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=default("SEED", random.SystemRandom().getrandbits(32)),
        help="makes the order mix repeatable (CHAOS_SEED)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        default=default("KEEP", "") not in {"", "0", "false", "no"},
        help="keep the run's databases, queues and run directory for inspection (CHAOS_KEEP=1)",
    )
    parser.add_argument(
        "--cleanup",
        metavar="NAMESPACE",
        help="only remove what a kept (or failed) run left: its databases, queues, run dir",
    )
    args = parser.parse_args(argv)
    if args.orders < 1 or args.clients < 1 or args.users < 1:
        parser.error("--orders, --clients and --users must be at least 1")
    return Settings(
        orders=args.orders,
        clients=args.clients,
        users=args.users,
        interval=args.interval,
        outage=args.outage,
        error_rate=args.error_rate,
        latency_ms=args.latency_ms,
        settle_timeout=args.settle_timeout,
        gateway_rate=args.gateway_rate,
        seed=args.seed,
        keep=args.keep,
        cleanup=args.cleanup,
        postgres_url=env.get("POSTGRES_URL", "") or "postgresql+asyncpg://postgres@127.0.0.1:5432",
    )


def say(text: str) -> None:
    """A timestamped progress line."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --------------------------------------------------------------------------- the system


@dataclass
class System:
    """A running system: its namespace, ports, run directory and launcher process."""

    namespace: str
    run_dir: Path
    ports: dict[str, int]
    instances: dict[str, int]
    process: subprocess.Popen[bytes]
    output: Path
    settings: Settings

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY']}"

    @property
    def simulator(self) -> str:
        return f"http://127.0.0.1:{self.ports['SIMULATOR']}"

    @property
    def exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def maildir(self) -> Path:
        return self.run_dir / "maildir"

    def database_url(self, definition: ServiceDefinition) -> str:
        return f"{self.settings.postgres_url.rstrip('/')}/{definition.database}_{self.namespace}"

    def processes(self) -> list[tuple[str, int]]:
        """(launcher's process name, port) of every service instance."""
        found = []
        for definition in SERVICES:
            base = self.ports[definition.env_prefix.rstrip("_")]
            for index in range(self.instances.get(definition.name, 1)):
                found.append((f"{definition.name}-{index + 1}", base + 100 * index))
        return found


def _pick_ports(instances: Mapping[str, int]) -> dict[str, int]:
    counts = {d.env_prefix.rstrip("_"): instances.get(d.name, 1) for d in SERVICES}
    return pick_block(SYSTEM_PORT_NAMES, instances=counts)


async def start_system(
    settings: Settings,
    instances: dict[str, int],
    *,
    namespace: str,
    amqp_url: str,
    redis_url: str,
    extra_env: Mapping[str, str] | None = None,
) -> System:
    """Start `python -m svctools.launcher` on its own ports and namespace; wait until ready.

    ``extra_env`` is set last (service settings such as ``ORDERS_DB_POOL_SIZE``).
    """
    ports = _pick_ports(instances)
    run_dir = REPO / ".run" / namespace
    run_dir.mkdir(parents=True, exist_ok=True)
    prefixes = tuple(d.env_prefix for d in SERVICES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update({f"{name}_PORT": str(port) for name, port in ports.items()})
    env.update({d.instances_setting: str(instances.get(d.name, 1)) for d in SERVICES})
    env.update(
        SYSTEM_NAMESPACE=namespace,
        RUN_DIR=str(run_dir),
        LAUNCHER_QUIET="1",
        GATEWAY_RATE_PER_SECOND=str(settings.gateway_rate),
        GATEWAY_BURST=str(2 * settings.gateway_rate),
        POSTGRES_URL=settings.postgres_url,
        REDIS_URL=redis_url,
        AMQP_URL=amqp_url,
    )
    # Small pools: ten processes share the machine's PostgreSQL (100 connections by default)
    # with whatever else runs there. payments-gateway needs 2 per payment in flight, plus 2.
    env.update({f"{d.env_prefix}DB_POOL_SIZE": "3" for d in SERVICES})
    env.update({f"{d.env_prefix}DB_MAX_OVERFLOW": "2" for d in SERVICES})
    # notifications records each send's outcome right after SMTP accepted it: a pool wait there
    # widens the window in which a SIGKILL makes the lease resend that email.
    notifications = next(d.env_prefix for d in SERVICES if d.name == "notifications")
    env.update({f"{notifications}DB_POOL_SIZE": "6", f"{notifications}DB_MAX_OVERFLOW": "2"})
    payments = next(d.env_prefix for d in SERVICES if d.name == "payments-gateway")
    env.update(
        {
            f"{payments}PAYMENT_CONCURRENCY": "3",
            f"{payments}DB_POOL_SIZE": "6",
            f"{payments}DB_MAX_OVERFLOW": "2",
        }
    )
    env.update(extra_env or {})
    output = run_dir / "launcher.out"
    process = _spawn_launcher(env, output)
    system = System(namespace, run_dir, ports, instances, process, output, settings)
    deadline = time.monotonic() + 240
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the launcher exited:\n{_tail(output)}")
            if not await not_ready(system, client):
                return system
            await asyncio.sleep(0.5)
    await asyncio.to_thread(stop_system, system)
    raise RuntimeError(f"the system was not ready within 240 s:\n{_tail(output)}")


def _spawn_launcher(env: Mapping[str, str], output: Path) -> subprocess.Popen[bytes]:
    """The launcher in its own session (its children in theirs), output to ``output``."""
    with output.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "svctools.launcher", "--quiet", "--ready-timeout", "180"],
            cwd=REPO,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no output)"


async def not_ready(system: System, client: httpx.AsyncClient) -> list[str]:
    """The processes that do not answer their readiness probe (the gateway included)."""
    probes = {"gateway": f"{system.gateway}/healthz"}
    for name, port in system.processes():
        probes[name] = f"http://127.0.0.1:{port}/health/ready"

    async def probe(url: str) -> bool:
        try:
            return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    answers = await asyncio.gather(*(probe(url) for url in probes.values()))
    return [name for name, ok in zip(probes, answers, strict=True) if not ok]


def stop_system(system: System) -> int | None:
    """SIGTERM the launcher, as Ctrl-C would; SIGKILL its group if it hangs."""
    if system.process.poll() is None:
        system.process.send_signal(signal.SIGTERM)
        try:
            system.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(system.process.pid, signal.SIGKILL)
            system.process.wait()
    return system.process.returncode


def cleanup(namespace: str, settings: Settings) -> None:
    """Drop the namespace's databases and its run directory (its broker node is gone already)."""
    for definition in SERVICES:
        url = f"{settings.postgres_url.rstrip('/')}/{definition.database}_{namespace}"
        with contextlib.suppress(Exception):
            asyncio.run(drop_database(url))
    shutil.rmtree(REPO / ".run" / namespace, ignore_errors=True)


def find_pid(system: System, port: int) -> int | None:
    """The service process listening on ``port`` for this run (by its environment)."""
    marker = f"SYSTEM_NAMESPACE={system.namespace}".encode()
    wanted = ["--port", str(port)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            environ = (entry / "environ").read_bytes().split(b"\0")
            if marker not in environ:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if "uvicorn" in argv and any(argv[i : i + 2] == wanted for i in range(len(argv))):
                return int(entry.name)
    return None


# --------------------------------------------------------------------------- its own servers


class Broker:
    """A throwaway RabbitMQ node of this run (``servicekit.testing.rabbitnodes``).

    Restarting it (``stop_app`` / ``start_app``) or dropping its connections disturbs nobody
    else: the machine's own broker is never touched.
    """

    def __init__(self) -> None:
        self.node = RabbitNode.create()
        self.stopped = False

    @property
    def url(self) -> str:
        return self.node.url

    def start(self) -> None:
        self.node.start()

    async def restart(self, outage: float) -> None:
        """stop_app, ``outage`` seconds down, start_app."""
        self.stopped = True
        try:
            await asyncio.to_thread(self.node.stop_app)
            await asyncio.sleep(outage)
        finally:
            await asyncio.to_thread(self.node.start_app)
            self.stopped = False

    async def close_connections(self) -> int:
        """Close every client connection (all of them are the system's)."""
        listing = await asyncio.to_thread(
            self.node.ctl, "list_connections", "pid", "--no-table-headers"
        )
        pids = [line.strip() for line in listing.splitlines() if line.strip()]
        closed = 0
        for pid in pids:
            with contextlib.suppress(RabbitNodeError):
                await asyncio.to_thread(self.node.ctl, "close_connection", pid, "chaos")
                closed += 1
        return closed

    def remove(self) -> None:
        """Stop the node and delete its data (on the way out, whatever happened)."""
        self.node.remove()

    async def queue_depths(self, prefix: str) -> dict[str, int]:
        """Messages (ready and unacked) per queue whose name starts with ``prefix``."""
        listing = await asyncio.to_thread(
            self.node.ctl, "list_queues", "name", "messages", "--no-table-headers"
        )
        depths = {}
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0].startswith(prefix) and fields[1].isdigit():
                depths[fields[0]] = int(fields[1])
        return depths


class RedisServer:
    """A redis-server of this run on a free port, its data in the run directory."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(  # noqa: S603 - a fixed command line
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.1)

    async def stop_and_start(self, outage: float) -> None:
        """SHUTDOWN SAVE, ``outage`` seconds down, start it again (its data reloaded)."""
        client = aioredis.Redis.from_url(self.url)
        try:
            with contextlib.suppress(Exception):
                await client.shutdown(save=True)
        finally:
            await client.aclose()
        if self.process is not None:
            await asyncio.to_thread(self.process.wait, 30)
        await asyncio.sleep(outage)
        await asyncio.to_thread(self.start)

    def stop(self) -> None:
        """Stop it, whatever state it is in."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


# --------------------------------------------------------------------------- clients


@dataclass
class User:
    email: str
    id: str = ""
    token: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Placed:
    order_id: str
    user: User
    plan: str  # "keep", "cancel-pending", "cancel-confirmed"
    token: str


@dataclass
class LoadStats:
    """What the clients saw."""

    placed: list[Placed] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    replayed: int = 0
    failures: list[str] = field(default_factory=list)
    cancels: Counter[str] = field(default_factory=Counter)
    cancel_tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Client:
    """One HTTP client of the gateway that retries what a careful client retries."""

    def __init__(self, http: httpx.AsyncClient, stats: LoadStats, deadline: float) -> None:
        self.http = http
        self.stats = stats
        self.deadline = deadline

    async def call(
        self,
        method: str,
        path: str,
        *,
        user: User | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        patience: float = 180.0,
    ) -> httpx.Response:
        """The first answer that is not a transport error, 429, 502-504 or expired token."""
        give_up = time.monotonic() + patience
        attempt = 0
        while True:
            attempt += 1
            sent = dict(headers or {})
            if user is not None:
                sent["Authorization"] = f"Bearer {user.token}"
            reason = ""
            try:
                response = await self.http.request(method, path, json=json, headers=sent)
            except httpx.TransportError as exc:
                reason = type(exc).__name__
                delay = min(0.25 * 2**attempt, 5.0)
            else:
                if response.status_code == 401 and user is not None and attempt < 20:
                    await self.login(user, stale=sent["Authorization"])
                    self.stats.retries["401 (logged in again)"] += 1
                    continue
                if response.status_code not in RETRYABLE:
                    return response
                reason = str(response.status_code)
                retry_after = response.headers.get("Retry-After", "")
                delay = float(retry_after) if retry_after.isdigit() else min(0.25 * 2**attempt, 5.0)
            self.stats.retries[reason] += 1
            if time.monotonic() + delay > give_up:
                raise TimeoutError(f"{method} {path}: still {reason} after {patience:g} s")
            await asyncio.sleep(delay)

    async def login(self, user: User, *, stale: str = "") -> None:
        """A fresh access token (once, when several requests find the old one expired)."""
        async with user.lock:
            if stale and f"Bearer {user.token}" != stale:
                return
            response = await self.call(
                "POST", "/auth/login", json={"email": user.email, "password": PASSWORD}
            )
            if response.status_code != 200:
                raise RuntimeError(f"login of {user.email}: {response.status_code} {response.text}")
            user.token = response.json()["access_token"]

    async def register(self, user: User) -> None:
        body = {"email": user.email, "password": PASSWORD, "name": "Chaos Monkey"}
        response = await self.call("POST", "/auth/register", json=body)
        if response.status_code == 409:  # a retried registration that had gone through
            pass
        elif response.status_code != 201:
            raise RuntimeError(f"register {user.email}: {response.status_code} {response.text}")
        await self.login(user)
        me = await self.call("GET", "/users/me", user=user)
        user.id = str(me.json().get("id", "")) if me.status_code == 200 else ""

    async def place(self, user: User, token: str, plan: str, rng: random.Random) -> None:
        items = [
            {
                "sku": f"CHAOS-{rng.randrange(100)}",
                "quantity": rng.randint(1, 3),
                "unit_price": f"{rng.randint(1, 200)}.{rng.randrange(100):02d}",
            }
            for _ in range(rng.randint(1, 3))
        ]
        body = {"items": items, "currency": "USD", "payment_token": token}
        key = str(uuid.uuid4())
        try:
            response = await self.call(
                "POST", "/orders", user=user, json=body, headers={"Idempotency-Key": key}
            )
        except TimeoutError as exc:
            self.stats.failures.append(str(exc))
            return
        if response.status_code != 201:
            self.stats.failures.append(
                f"POST /orders: {response.status_code} {response.text[:200]}"
            )
            return
        if response.headers.get("Idempotent-Replayed") == "true":
            self.stats.replayed += 1
        placed = Placed(response.json()["id"], user, plan, token)
        self.stats.placed.append(placed)
        if plan == "cancel-pending":
            await self.cancel(placed)
        elif plan == "cancel-confirmed":
            self.stats.cancel_tasks.append(asyncio.create_task(self.cancel_when_confirmed(placed)))

    async def cancel(self, placed: Placed) -> None:
        """Cancel (a pending order is cancelled, a confirmed one refunded)."""
        path = f"/orders/{placed.order_id}/cancel"
        for _ in range(50):
            try:
                response = await self.call("POST", path, user=placed.user)
            except TimeoutError as exc:
                self.stats.failures.append(str(exc))
                return
            code = _error_code(response)
            if response.status_code == 409 and code == "concurrent_modification":
                await asyncio.sleep(0.2)
                continue
            if response.status_code not in (200, 409):  # 409: failed or cancelled meanwhile
                self.stats.failures.append(f"POST {path}: {response.status_code} {code}")
                return
            outcome = response.json().get("status", "?") if response.status_code == 200 else code
            self.stats.cancels[f"{placed.plan}: {outcome}"] += 1
            return

    async def cancel_when_confirmed(self, placed: Placed) -> None:
        """Wait until the order is confirmed, then cancel it (it is refunded)."""
        try:
            await self._cancel_when_confirmed(placed)
        except Exception as exc:  # reported, not lost in a background task
            self.stats.failures.append(f"cancel of {placed.order_id}: {type(exc).__name__}: {exc}")

    async def _cancel_when_confirmed(self, placed: Placed) -> None:
        path = f"/orders/{placed.order_id}"
        while time.monotonic() < self.deadline:
            try:
                response = await self.call("GET", path, user=placed.user)
            except TimeoutError:
                continue
            if response.status_code != 200:
                self.stats.failures.append(f"GET {path}: {response.status_code}")
                return
            status = response.json().get("status")
            if status == "confirmed":
                await self.cancel(placed)
                return
            if status in TERMINAL:
                self.stats.cancels[f"{placed.plan}: not confirmed but {status}"] += 1
                return
            await asyncio.sleep(1.0)
        self.stats.failures.append(f"{placed.order_id} was never confirmed, so never cancelled")


def _error_code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, LookupError, TypeError):
        return str(response.json()["error"]["code"])
    return str(response.status_code)


def order_mix(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(payment token, plan) for each order: mostly tok_visa, some declined, some pending."""
    mix = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.10:
            token = f"tok_decline_chaos_{rng.randrange(1000)}"
        elif roll < 0.15:
            token = f"tok_pending_chaos_{rng.randrange(1000)}"
        else:
            token = "tok_visa"
        roll = rng.random()
        plan = "cancel-pending" if roll < 0.12 else "cancel-confirmed" if roll < 0.24 else "keep"
        mix.append((token, plan))
    return mix


async def run_load(
    settings: Settings,
    client: Client,
    users: list[User],
    duration: float,
    rng: random.Random,
) -> None:
    """Place ``settings.orders`` orders from concurrent clients, spread over ``duration``."""
    mix = order_mix(settings.orders, rng)
    seeds = [rng.getrandbits(32) for _ in range(settings.clients)]
    started = time.monotonic()
    rate = settings.orders / duration if duration > 0 else float("inf")

    async def worker(index: int) -> None:
        local = random.Random(seeds[index])  # noqa: S311 - test data, not security
        for number in range(index, settings.orders, settings.clients):
            due = started + number / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            token, plan = mix[number]
            try:
                await client.place(users[number % len(users)], token, plan, local)
            except Exception as exc:  # a client's bug must not end the run: it is reported
                client.stats.failures.append(f"order #{number}: {type(exc).__name__}: {exc}")
            if number and number % max(1, settings.orders // 10) == 0:
                say(f"load: {len(client.stats.placed)} orders placed")

    await asyncio.gather(*(worker(i) for i in range(settings.clients)))


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Step:
    """One entry of the fault schedule."""

    name: str
    action: Callable[[], Awaitable[None]]
    fault: bool = True  # False for a step that only switches a fault off


def build_schedule(
    system: System,
    broker: Broker,
    redis_server: RedisServer,
    cancel_confirmed: Callable[[int], Awaitable[int]],
) -> list[Step]:
    """One cycle of faults; each service instance is killed once per cycle."""
    settings = system.settings
    outage = settings.outage

    async def provider(**faults: object) -> None:
        async with httpx.AsyncClient(base_url=system.simulator, timeout=5, trust_env=False) as c:
            (await c.put("/__admin/faults", json=faults)).raise_for_status()

    def kill(name: str, port: int) -> Step:
        async def action() -> None:
            pid = None
            for _ in range(300):  # it may be between a death and its restart
                pid = find_pid(system, port)
                if pid is not None:
                    break
                await asyncio.sleep(0.1)
            if pid is None:
                raise RuntimeError(f"no process of {name} found")
            os.killpg(pid, signal.SIGKILL)

        return Step(f"SIGKILL {name}", action)

    kills = {name: kill(name, port) for name, port in system.processes()}
    steps: list[Step] = [
        Step(
            f"provider: {settings.error_rate:.0%} errors on",
            lambda: provider(error_rate=settings.error_rate),
        ),
        kills["orders-1"],
        kills["payments-gateway-1"],
    ]

    async def close_system_connections() -> None:
        closed = await broker.close_connections()
        say(f"  {closed} connections closed")

    async def in_flight_across_restart() -> None:
        # Payments deferred and refunds deferred, all waiting in delay queues, when the broker
        # stops; the provider only comes back after it started again.
        await provider(down=True)
        try:
            cancelled = await cancel_confirmed(5)
            await asyncio.sleep(settings.interval / 2)  # new orders' payments are deferred too
            depths = await broker.queue_depths(f"{system.exchange}.")
            waiting = sum(n for name, n in depths.items() if ".delay." in name)
            say(f"  {cancelled} confirmed orders cancelled, {waiting} messages in delay queues")
            await broker.restart(outage)
            await asyncio.sleep(2)
        finally:
            await provider(down=False)

    steps += [
        Step("RabbitMQ: the system's connections closed", close_system_connections),
        kills["notifications-1"],
        Step("provider: errors off", lambda: provider(error_rate=0), fault=False),
        Step(f"Redis: stopped {outage:g} s", lambda: redis_server.stop_and_start(outage)),
        Step(
            "provider down, refunds and payments deferred, RabbitMQ restarted",
            in_flight_across_restart,
        ),
    ]
    steps += [
        kills["auth-1"],
        Step(
            f"provider: latency spike {settings.latency_ms} ms on",
            lambda: provider(latency_ms=settings.latency_ms),
        ),
        kills["orders-2"],
    ]
    steps += [
        Step(f"RabbitMQ: stop_app, {outage:g} s, start_app", lambda: broker.restart(outage)),
        kills["users-1"],
        Step("provider: latency spike off", lambda: provider(latency_ms=0), fault=False),
        kills["payments-gateway-2"],
    ]
    # Any instance not named above (more instances than the default) is killed too.
    steps += [step for name, step in kills.items() if step not in steps]
    return steps


async def run_schedule(
    steps: list[Step], interval: float, load: asyncio.Task[None], injected: Counter[str]
) -> None:
    """Run the cycle at least once, and again while the load still runs."""
    cycle = 0
    while cycle == 0 or not load.done():
        for step in steps:
            await asyncio.sleep(interval)
            say(f"fault: {step.name}")
            try:
                await step.action()
            except Exception as exc:
                say(f"fault {step.name!r} could not be injected: {exc}")
                continue
            if step.fault:
                injected[step.name] += 1
        cycle += 1


# --------------------------------------------------------------------------- checking


@dataclass
class Inspection:
    """The system's state after the run, and each invariant that does not hold."""

    statuses: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicate_charges: int = 0
    duplicate_emails: int = 0
    missing_emails: int = 0
    messages_left: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    charges: int = 0
    refunds: int = 0
    emails: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def _rows(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def inspect(
    system: System, stats: LoadStats, broker: Broker, http: httpx.AsyncClient
) -> Inspection:
    """Check every invariant once."""
    found = Inspection()
    problems = found.problems
    by_name = {d.name: d for d in SERVICES}

    # Orders: every 201 terminal; every order of the run terminal too.
    orders = {
        str(r["id"]): r
        for r in await _rows(
            system.database_url(by_name["orders"]),
            "SELECT id, user_id, status, total_amount FROM orders",
        )
    }
    found.statuses = Counter(str(r["status"]) for r in orders.values())
    placed_ids = {p.order_id for p in stats.placed}
    for order_id in placed_ids:
        row = orders.get(order_id)
        if row is None or row["status"] not in TERMINAL:
            found.lost += 1
    if found.lost:
        problems.append(f"{found.lost} orders that got a 201 are not in a terminal state")
    strays = [i for i, r in orders.items() if i not in placed_ids and r["status"] not in TERMINAL]
    if strays:
        problems.append(f"{len(strays)} orders nobody got a 201 for are not terminal")
    unfinished = [t for t in stats.cancel_tasks if not t.done()]
    if unfinished:
        problems.append(f"{len(unfinished)} cancellations still waiting for a confirmation")

    # The provider's ledger.
    ledger = (await http.get(f"{system.simulator}/__admin/ledger")).json()
    charges: dict[str, list[dict[str, Any]]] = defaultdict(list)
    refunds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    charge_order = {}
    for entry in ledger:
        if entry["type"] == "charge":
            order_id = str(entry["metadata"].get("order_id"))
            charges[order_id].append(entry)
            charge_order[entry["id"]] = order_id
    for entry in ledger:
        if entry["type"] == "refund":
            refunds[charge_order.get(entry["charge_id"], "?")].append(entry)
    found.charges = sum(map(len, charges.values()))
    found.refunds = sum(map(len, refunds.values()))
    found.duplicate_charges = sum(len(c) - 1 for c in charges.values() if len(c) > 1)
    if found.duplicate_charges:
        problems.append(f"{found.duplicate_charges} duplicate charges")
    ledger_problems = Counter[str]()
    for order_id in set(charges) | set(refunds):
        if order_id not in orders:
            ledger_problems["charge or refund for an order of no one"] += 1
    for order_id, row in orders.items():
        status = str(row["status"])
        got, back = len(charges.get(order_id, [])), len(refunds.get(order_id, []))
        expected = {
            "confirmed": (1, 0),
            "refunded": (1, 1),
            "failed": (0, 0),
            "cancelled": (got, got) if got <= 1 else (1, 1),
        }.get(status)
        if expected is not None and (got, back) != expected:
            ledger_problems[f"{status} order with {got} charges and {back} refunds"] += 1
        for entry in charges.get(order_id, []):
            if Decimal(entry["amount"]) != row["total_amount"]:
                ledger_problems["charge amount differs from the order total"] += 1
    problems += [f"ledger: {n} × {what}" for what, n in ledger_problems.items()]

    # Emails: one per terminal order event (and per welcome), by Message-ID.
    events: list[tuple[str, str, str]] = []  # (event id, type, order or user id)
    for service, types in (
        ("orders", ("order.confirmed", "order.failed", "order.cancelled")),
        ("payments-gateway", ("payment.refunded",)),
        ("auth", ("user.registered",)),
    ):
        quoted = ", ".join(f"'{t}'" for t in types)
        for r in await _rows(
            system.database_url(by_name[service]),
            "SELECT event_id, event_type, coalesce(payload->'data'->>'order_id', "  # noqa: S608
            f"payload->'data'->>'user_id') AS subject FROM outbox WHERE event_type IN ({quoted})",
        ):
            events.append((str(r["event_id"]), str(r["event_type"]), str(r["subject"])))
    per_order = Counter((subject, kind) for _, kind, subject in events)
    event_problems = Counter[str]()
    for order_id, row in orders.items():
        status = str(row["status"])
        want = {
            "confirmed": {"order.confirmed": 1},
            "refunded": {"order.confirmed": 1, "payment.refunded": 1},
            "failed": {"order.failed": 1},
            "cancelled": {"order.cancelled": 1, "payment.refunded": len(refunds.get(order_id, []))},
        }.get(status, {})
        for kind in ("order.confirmed", "order.failed", "order.cancelled", "payment.refunded"):
            count = per_order[(order_id, kind)]
            if count != want.get(kind, 0) and (status in TERMINAL or count > 1):
                event_problems[f"{status} order with {count} {kind} events"] += 1
    problems += [f"events: {n} × {what}" for what, n in event_problems.items()]
    messages = await asyncio.to_thread(read_messages, system.maildir)
    found.emails = len(messages)
    sent = Counter[tuple[str, str]]()
    for message in messages:
        match = _MESSAGE_ID.match(message.message_id or "")
        sent[(match.group(1), match.group(2)) if match else ("?", message.message_id or "")] += 1
    wanted = {(event_id, TEMPLATES[kind]) for event_id, kind, _ in events}
    found.duplicate_emails = sum(n - 1 for n in sent.values() if n > 1)
    found.missing_emails = sum(1 for key in wanted if sent[key] == 0)
    unexpected = sum(n for key, n in sent.items() if key not in wanted)
    if found.duplicate_emails:
        problems.append(f"{found.duplicate_emails} duplicate emails")
    if found.missing_emails:
        problems.append(f"{found.missing_emails} events without their email")
    if unexpected:
        problems.append(f"{unexpected} emails for no known event")
    notifications = await _rows(
        system.database_url(by_name["notifications"]),
        "SELECT status, count(*) AS n FROM notifications WHERE status <> 'sent' GROUP BY status",
    )
    for row in notifications:
        problems.append(f"{row['n']} notifications {row['status']}")

    # Queues (dead-letter and retry ones included) and outboxes.
    found.messages_left = {
        name: n for name, n in (await broker.queue_depths(f"{system.exchange}.")).items() if n
    }
    if found.messages_left:
        problems.append(f"messages left in queues: {found.messages_left}")
    for definition in SERVICES:
        pending, _ = await outbox_backlog(system.database_url(definition))
        found.outbox[definition.name] = pending
    if any(found.outbox.values()):
        problems.append(f"outbox backlog: {found.outbox}")
    down = await not_ready(system, http)
    if down:
        problems.append(f"not ready: {', '.join(down)}")
    return found


async def settle(
    system: System, stats: LoadStats, broker: Broker, timeout: float
) -> tuple[Inspection, float | None]:
    """Inspect until every invariant holds for STABLE_FOR seconds, or ``timeout`` passes."""
    started = time.monotonic()
    held_since: float | None = None
    last_report = 0.0
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        while True:
            now = time.monotonic()
            try:
                found = await inspect(system, stats, broker, http)
            except (OSError, httpx.HTTPError, asyncpg.PostgresError) as exc:
                found = Inspection(problems=[f"inspection failed: {exc}"])
            if found.ok:
                held_since = now if held_since is None else held_since
                if time.monotonic() - held_since >= STABLE_FOR:
                    return found, held_since - started
            else:
                held_since = None
            if time.monotonic() - started > timeout:
                return found, None
            if now - last_report > 15:
                say(f"settling: {'; '.join(found.problems[:4]) or 'holding'}")
                last_report = now
            await asyncio.sleep(2)


# --------------------------------------------------------------------------- the run


@dataclass
class Outcome:
    inspection: Inspection
    settle_seconds: float | None
    injected: Counter[str]
    stats: LoadStats
    load_seconds: float
    restarts: int

    @property
    def passed(self) -> bool:
        return self.inspection.ok and self.settle_seconds is not None and not self.stats.failures


def table(settings: Settings, system: System, outcome: Outcome) -> str:
    """The summary printed at the end."""
    found = outcome.inspection
    stats = outcome.stats
    settled = (
        f"{outcome.settle_seconds:.1f} s"
        if outcome.settle_seconds is not None
        else f"not within {settings.settle_timeout:g} s"
    )
    rows = [
        ("orders placed (201)", str(len(stats.placed))),
        ("  by final status", ", ".join(f"{k} {v}" for k, v in sorted(found.statuses.items()))),
        (
            "  cancelled by clients",
            ", ".join(f"{k} ×{v}" for k, v in sorted(stats.cancels.items())),
        ),
        (
            "  client retries",
            ", ".join(f"{k} ×{v}" for k, v in sorted(stats.retries.items())) or "none",
        ),
        ("  replayed by idempotency key", str(stats.replayed)),
        ("  requests that failed for good", str(len(stats.failures))),
        ("load duration", f"{outcome.load_seconds:.1f} s"),
        ("faults injected", str(sum(outcome.injected.values()))),
        *((f"  {name}", f"×{n}") for name, n in outcome.injected.items()),
        ("service restarts by the launcher", str(outcome.restarts)),
        ("time to settle", settled),
        ("charges / refunds in the ledger", f"{found.charges} / {found.refunds}"),
        ("emails in the sink", str(found.emails)),
        ("lost", str(found.lost)),
        ("duplicate charges", str(found.duplicate_charges)),
        ("duplicate emails", str(found.duplicate_emails)),
        ("missing emails", str(found.missing_emails)),
        ("messages left in queues", str(sum(found.messages_left.values()))),
        ("outbox backlog", str(sum(found.outbox.values()))),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        "",
        f"chaos run {system.namespace} (seed {settings.seed}): orders ×2, payments-gateway ×2",
        f"gateway rate limit raised to {settings.gateway_rate}/s, "
        f"burst {2 * settings.gateway_rate} (every client is 127.0.0.1)",
        "",
    ]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    verdict = "PASS" if outcome.passed else "FAIL"
    lines += ["", f"  result: {verdict}"]
    lines += [f"    - {problem}" for problem in found.problems[:30]]
    lines += [f"    - client: {failure}" for failure in stats.failures[:10]]
    return "\n".join(lines) + "\n"


async def run(settings: Settings) -> int:
    """Start, load, inject, settle, check; always stop its own servers and clean up."""
    instances = {"orders": 2, "payments-gateway": 2}
    namespace = f"chaos{uuid.uuid4().hex[:8]}"
    rng = random.Random(settings.seed)  # noqa: S311 - test data, not security
    broker = Broker()
    redis_server = RedisServer(REPO / ".run" / namespace / "redis")
    say(f"starting a RabbitMQ node ({broker.node.nodename}) and a redis-server of this run")
    try:
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(redis_server.start)
        say(
            f"starting the system (orders ×2, payments-gateway ×2); the gateway's rate limit is "
            f"raised to {settings.gateway_rate} requests/s (burst {2 * settings.gateway_rate}) "
            "for this run, since every client comes from 127.0.0.1"
        )
        system = await start_system(
            settings,
            instances,
            namespace=namespace,
            amqp_url=broker.url,
            redis_url=redis_server.url,
        )
    except BaseException:
        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(broker.remove)
        raise
    say(f"system up: namespace {system.namespace}, gateway {system.gateway}")
    say(f"logs: {system.run_dir / 'logs'}")
    outcome: Outcome | None = None
    try:
        outcome = await exercise(settings, system, broker, redis_server, rng)
    finally:
        with contextlib.suppress(Exception):
            async with httpx.AsyncClient(timeout=5, trust_env=False) as c:
                await c.put(
                    f"{system.simulator}/__admin/faults",
                    json={"error_rate": 0, "latency_ms": 0, "down": False},
                )
        say("stopping the system")
        code = await asyncio.to_thread(stop_system, system)
        if code not in (0, None):
            say(f"the launcher exited with {code}: see {system.output}")
        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(broker.remove)
        passed = outcome is not None and outcome.passed
        if settings.keep or not passed:
            say(
                f"kept for inspection: {system.run_dir} (logs, mail) and the databases "
                f"*_{system.namespace}; remove them with "
                f"`python -m svctools.chaos --cleanup {system.namespace}`"
            )
        else:
            await asyncio.to_thread(cleanup, system.namespace, settings)
    assert outcome is not None
    print(table(settings, system, outcome), flush=True)
    return 0 if outcome.passed else 1


async def exercise(
    settings: Settings,
    system: System,
    broker: Broker,
    redis_server: RedisServer,
    rng: random.Random,
) -> Outcome:
    """Users, then the load under the fault schedule, then settling."""
    stats = LoadStats()
    limits = httpx.Limits(max_connections=4 * settings.clients + 8)
    async with httpx.AsyncClient(
        base_url=system.gateway, timeout=30, limits=limits, trust_env=False
    ) as http:
        client = Client(http, stats, deadline=time.monotonic() + settings.settle_timeout)

        async def cancel_confirmed(count: int) -> int:
            """Cancel up to ``count`` confirmed orders the clients meant to keep."""
            cancelled = 0
            for placed in [p for p in stats.placed if p.plan == "keep"][-4 * count :]:
                if cancelled == count:
                    break
                response = await client.call("GET", f"/orders/{placed.order_id}", user=placed.user)
                if response.status_code == 200 and response.json().get("status") == "confirmed":
                    placed.plan = "cancel-confirmed"
                    await client.cancel(placed)
                    cancelled += 1
            return cancelled

        steps = build_schedule(system, broker, redis_server, cancel_confirmed)
        cycle = len(steps) * settings.interval
        client.deadline += cycle
        users = [User(f"chaos.{uuid.uuid4().hex[:12]}@example.com") for _ in range(settings.users)]
        await asyncio.gather(*(client.register(u) for u in users))
        say(f"{len(users)} users registered; placing {settings.orders} orders over ~{cycle:.0f} s")
        injected = Counter[str]()
        started = time.monotonic()
        load = asyncio.create_task(run_load(settings, client, users, cycle, rng))
        schedule = asyncio.create_task(run_schedule(steps, settings.interval, load, injected))
        try:
            await asyncio.gather(load, schedule)
        finally:
            for task in (load, schedule):
                task.cancel()
            await asyncio.gather(load, schedule, return_exceptions=True)
        load_seconds = time.monotonic() - started
        say(f"load and faults done: {len(stats.placed)} orders placed; settling")
        found, settled = await settle(system, stats, broker, settings.settle_timeout)
        for task in stats.cancel_tasks:
            task.cancel()
        await asyncio.gather(*stats.cancel_tasks, return_exceptions=True)
    restarts = _tail(system.output, 1_000_000).count(" restarted (pid ")
    return Outcome(found, settled, injected, stats, load_seconds, restarts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m svctools.chaos``."""
    if argv is None:
        argv = sys.argv[1:]
    settings = parse_settings(argv, os.environ)
    if settings.cleanup:
        cleanup(settings.cleanup, settings)
        print(f"removed the databases, queues and run directory of {settings.cleanup}")
        return 0
    loop_task: asyncio.Task[int] | None = None

    async def guarded() -> int:
        nonlocal loop_task
        loop_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: loop_task.cancel() if loop_task else None)
        return await run(settings)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("chaos run interrupted; its servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
