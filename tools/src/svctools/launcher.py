"""The launcher behind `make run`: the whole system in the foreground, supervised.

It checks PostgreSQL, Redis and RabbitMQ, migrates every service, starts the SMTP sink,
the provider simulator, every service instance and the nginx gateway, waits until each
answers its readiness probe, restarts what dies (with backoff, as compose or Kubernetes
would) and on Ctrl-C or SIGTERM stops everything it started.

The system description (:func:`build_plan`, :func:`build_specs`) is plain data derived
from the environment; the machinery that runs it (:class:`Supervisor`) knows nothing
about services, so tests drive it with tiny fake processes and can start a second
complete system beside a running one (``SYSTEM_NAMESPACE`` and other ports).

    python -m svctools.launcher [--quiet] [--ready-timeout S] [--stop-grace S] [--print-plan]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx

from svctools.gateway import nginx_command, write_nginx_conf

LOCALHOST = "127.0.0.1"
DEV_WEBHOOK_SECRET = "dev-provider-webhook-secret-not-for-production"
WEBHOOK_PATH = "/payments/webhooks/provider"
JWKS_PATH = "/.well-known/jwks.json"
INSTANCE_PORT_STEP = 100
MAX_INSTANCES = 50
TAIL_LINES = 40
# SIGHUP too: the children run in their own sessions, so a closed terminal reaches only us
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")
_NGINX_SIZE_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - only compared


class ConfigError(ValueError):
    """The environment describes a system that cannot run."""


class LaunchError(RuntimeError):
    """Bringing the system up failed; the message says what and how to fix it."""


class StartupError(LaunchError):
    """A process exited or never became ready while the system was starting."""

    def __init__(self, name: str, reason: str, *, log_path: Path, log_tail: str) -> None:
        self.name = name
        self.reason = reason
        self.log_path = log_path
        self.log_tail = log_tail
        tail = log_tail.rstrip("\n") or "(no output)"
        super().__init__(
            f"{name} {reason}\n--- last lines of {log_path} ---\n{tail}\n--- end of {name} log ---"
        )


class Stage(IntEnum):
    """Start order; stop runs the other way."""

    SUPPORT = 0  # SMTP sink, provider simulator
    SERVICE = 1
    GATEWAY = 2


@dataclass(frozen=True)
class ServiceDefinition:
    """One of the five services: where it lives and how it is configured."""

    name: str  # service directory under services/, also the gateway's upstream name
    package: str
    env_prefix: str
    default_port: int
    database: str

    @property
    def port_setting(self) -> str:
        """The environment variable holding the first instance's port."""
        return f"{self.env_prefix}PORT"

    @property
    def instances_setting(self) -> str:
        """The environment variable holding the number of instances."""
        return f"{self.env_prefix}INSTANCES"


SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition("auth", "auth_service", "AUTH_", 8001, "auth"),
    ServiceDefinition("users", "users_service", "USERS_", 8002, "users"),
    ServiceDefinition("orders", "orders_service", "ORDERS_", 8003, "orders"),
    ServiceDefinition("payments-gateway", "payments_gateway", "PAYMENTS_", 8004, "payments"),
    ServiceDefinition(
        "notifications", "notifications_service", "NOTIFICATIONS_", 8005, "notifications"
    ),
)


@dataclass(frozen=True)
class ProcessSpec:
    """One process to run: its command, the environment it adds, how to tell it is ready."""

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_url: str | None = None  # GET answering 200 means ready; None: ready once started
    stage: int = Stage.SUPPORT
    endpoint: str = ""  # where a user reaches it, for the summary table
    note: str = ""
    ports: tuple[int, ...] = ()
    service: str | None = None


@dataclass(frozen=True)
class Dependency:
    """A server the system needs but does not start."""

    name: str
    setting: str
    url: str
    host: str
    port: int
    hint: str
    # Further addresses of the same server (the other nodes of a broker cluster): one answering
    # is enough, the clients fail over between them.
    alternatives: tuple[tuple[str, int], ...] = ()

    @property
    def endpoints(self) -> tuple[tuple[str, int], ...]:
        return ((self.host, self.port), *self.alternatives)


@dataclass(frozen=True)
class GatewayConfig:
    """What the nginx config is rendered from."""

    listen: int
    upstreams: Mapping[str, tuple[str, ...]]
    runtime_dir: Path
    rate_per_second: int
    burst: int
    max_body: str
    access_log: Path
    error_log: Path


@dataclass(frozen=True)
class PortClaim:
    """A port some process will bind, and the setting that moves it."""

    port: int
    owner: str
    setting: str


@dataclass(frozen=True)
class SystemPlan:
    """Everything `make run` starts, derived from the environment."""

    namespace: str
    repo_root: Path
    run_dir: Path
    log_dir: Path
    keys_dir: Path
    maildir: Path
    dependencies: tuple[Dependency, ...]
    migrations: tuple[ProcessSpec, ...]
    processes: tuple[ProcessSpec, ...]
    gateway: GatewayConfig
    ports: tuple[PortClaim, ...]

    @property
    def gateway_url(self) -> str:
        """The one URL clients use."""
        return f"http://{LOCALHOST}:{self.gateway.listen}"


# --------------------------------------------------------------------------- plan


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "services").is_dir() and (parent / "tools").is_dir():
            return parent
    return Path.cwd()


def _int_setting(
    env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _port_setting(env: Mapping[str, str], name: str, default: int) -> int:
    return _int_setting(env, name, default, minimum=1, maximum=65535)


def _endpoint(url: str, *, setting: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(f"{setting} has an invalid port: {url!r}") from None
    if not parts.scheme or not parts.hostname:
        raise ConfigError(f"{setting} must be a URL like scheme://host:port, got {url!r}")
    return parts.hostname, port


def _database_url(server_url: str, database: str) -> str:
    parts = urlsplit(server_url)
    scheme = parts.scheme
    if scheme in {"postgres", "postgresql"}:
        scheme = "postgresql+asyncpg"  # the services use SQLAlchemy's asyncpg dialect
    return urlunsplit(parts._replace(scheme=scheme, path=f"/{database}"))


def redact_list(urls: str) -> str:
    """A comma-separated list of URLs, each with its password masked."""
    return ",".join(redact(url.strip()) for url in urls.split(","))


def redact(url: str) -> str:
    """``url`` with its password masked, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _probe_host(bind_host: str) -> str:
    return LOCALHOST if bind_host in _WILDCARD_HOSTS else bind_host


def _derive(env: Mapping[str, str], derived: Mapping[str, str]) -> dict[str, str]:
    """What the launcher derives, except where the environment already says otherwise."""
    return {key: env.get(key, value) for key, value in derived.items()}


def _python(*args: str) -> tuple[str, ...]:
    return (sys.executable, *args)


def build_plan(env: Mapping[str, str]) -> SystemPlan:
    """Describe the whole system (processes, env, ports, readiness URLs) from ``env``."""
    repo_root = _repo_root()
    namespace = env.get("SYSTEM_NAMESPACE", "").strip()
    if namespace and not _NAMESPACE_RE.fullmatch(namespace):
        raise ConfigError(
            "SYSTEM_NAMESPACE must be 1-32 characters of a-z, 0-9 and _ (starting with a "
            f"letter or digit), got {namespace!r}"
        )
    default_run_dir = repo_root / ".run" / namespace if namespace else repo_root / ".run"
    raw_run_dir = env.get("RUN_DIR", "").strip()
    run_dir = Path(raw_run_dir).expanduser().resolve() if raw_run_dir else default_run_dir
    log_dir = run_dir / "logs"
    keys_dir = run_dir / "keys"
    maildir = run_dir / "maildir"

    postgres_url = (
        env.get("POSTGRES_URL", "").strip() or "postgresql+asyncpg://postgres@127.0.0.1:5432"
    )
    redis_url = env.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0"
    amqp_url = env.get("AMQP_URL", "").strip() or "amqp://guest:guest@127.0.0.1:5672/"
    broker_nodes = [
        _endpoint(url.strip(), setting="AMQP_URL", default_port=5672)
        for url in amqp_url.split(",")
        if url.strip()
    ] or [_endpoint("", setting="AMQP_URL", default_port=5672)]
    dependencies = (
        Dependency(
            "PostgreSQL",
            "POSTGRES_URL",
            postgres_url,
            *_endpoint(postgres_url, setting="POSTGRES_URL", default_port=5432),
            hint="Start it (Debian: `service postgresql start`) or set POSTGRES_URL "
            "to a running server",
        ),
        Dependency(
            "Redis",
            "REDIS_URL",
            redis_url,
            *_endpoint(redis_url, setting="REDIS_URL", default_port=6379),
            hint="Start it (Debian: `service redis-server start`) or set REDIS_URL "
            "to a running server",
        ),
        Dependency(
            "RabbitMQ",
            "AMQP_URL",
            amqp_url,
            *broker_nodes[0],
            hint="Start it (Debian: `service rabbitmq-server start`) or set AMQP_URL "
            "to a running server (or a comma-separated list of a cluster's nodes)",
            alternatives=tuple(broker_nodes[1:]),
        ),
    )

    gateway_port = _port_setting(env, "GATEWAY_PORT", 8080)
    simulator_port = _port_setting(env, "SIMULATOR_PORT", 8090)
    smtp_port = _port_setting(env, "SMTP_SINK_PORT", 1025)
    smtp_http_port = _port_setting(env, "SMTP_SINK_HTTP_PORT", 1080)
    claims: list[PortClaim] = [
        PortClaim(gateway_port, "gateway", "GATEWAY_PORT"),
        PortClaim(simulator_port, "provider-simulator", "SIMULATOR_PORT"),
        PortClaim(smtp_port, "smtp-sink", "SMTP_SINK_PORT"),
        PortClaim(smtp_http_port, "smtp-sink", "SMTP_SINK_HTTP_PORT"),
    ]

    exchange = f"{namespace}.events" if namespace else "events"
    webhook_secret = env.get(
        "PAYMENTS_WEBHOOK_SECRET", env.get("SIMULATOR_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET)
    )
    simulator_url = f"http://{LOCALHOST}:{simulator_port}"
    gateway_url = f"http://{LOCALHOST}:{gateway_port}"
    auth_port = _port_setting(env, SERVICES[0].port_setting, SERVICES[0].default_port)
    jwks_url = f"http://{LOCALHOST}:{auth_port}{JWKS_PATH}"
    python_env = {"PYTHONUNBUFFERED": "1"}

    smtp_sink = ProcessSpec(
        name="smtp-sink",
        command=_python("-m", "svctools.smtp_sink"),
        env={
            **python_env,
            **_derive(
                env,
                {
                    "SMTP_SINK_HOST": LOCALHOST,
                    "SMTP_SINK_MAILDIR": str(maildir),
                },
            ),
            "SMTP_SINK_PORT": str(smtp_port),
            "SMTP_SINK_HTTP_PORT": str(smtp_http_port),
        },
        cwd=repo_root,
        # Not /messages: it reads every stored mail, which outgrows the probe timeout.
        ready_url=f"http://{LOCALHOST}:{smtp_http_port}/healthz",
        stage=Stage.SUPPORT,
        endpoint=f"smtp://{LOCALHOST}:{smtp_port}",
        note=f"received mail: http://{LOCALHOST}:{smtp_http_port}/messages",
        ports=(smtp_port, smtp_http_port),
    )
    simulator = ProcessSpec(
        name="provider-simulator",
        command=_python("-m", "svctools.simulator"),
        env={
            **python_env,
            **_derive(
                env,
                {
                    "SIMULATOR_HOST": LOCALHOST,
                    "SIMULATOR_WEBHOOK_URL": f"{gateway_url}{WEBHOOK_PATH}",
                    "SIMULATOR_WEBHOOK_SECRET": webhook_secret,
                },
            ),
            "SIMULATOR_PORT": str(simulator_port),
        },
        cwd=repo_root,
        ready_url=f"{simulator_url}/healthz",
        stage=Stage.SUPPORT,
        endpoint=simulator_url,
        note=f"ledger: {simulator_url}/__admin/ledger",
        ports=(simulator_port,),
    )

    migrations: list[ProcessSpec] = []
    instances: list[ProcessSpec] = []
    upstreams: dict[str, tuple[str, ...]] = {}
    for definition in SERVICES:
        prefix = definition.env_prefix
        base_port = _port_setting(env, definition.port_setting, definition.default_port)
        count = _int_setting(env, definition.instances_setting, 1, minimum=1, maximum=MAX_INSTANCES)
        database = f"{definition.database}_{namespace}" if namespace else definition.database
        derived = {
            f"{prefix}DATABASE_URL": _database_url(postgres_url, database),
            f"{prefix}REDIS_URL": redis_url,
            f"{prefix}AMQP_URL": amqp_url,
            f"{prefix}EVENTS_EXCHANGE": exchange,
            f"{prefix}JWKS_URL": jwks_url,
            f"{prefix}ENVIRONMENT": "development",
            f"{prefix}LOG_JSON": env.get("LOG_JSON", "false"),
        }
        if definition.name == "auth":
            derived[f"{prefix}KEYS_DIR"] = str(keys_dir)
            if namespace:
                # Systems sharing one Redis must not share login throttle counters.
                derived[f"{prefix}REDIS_KEY_PREFIX"] = f"auth:{namespace}"
        elif definition.name == "payments-gateway":
            derived[f"{prefix}PROVIDER_URL"] = simulator_url
            derived[f"{prefix}WEBHOOK_SECRET"] = webhook_secret
        elif definition.name == "notifications":
            derived[f"{prefix}SMTP_HOST"] = LOCALHOST
            derived[f"{prefix}SMTP_PORT"] = str(smtp_port)
        service_env = {**python_env, **_derive(env, derived)}
        bind_host = env.get(f"{prefix}HOST", LOCALHOST)
        host = _probe_host(bind_host)
        service_dir = repo_root / "services" / definition.name
        cwd = service_dir if service_dir.is_dir() else repo_root

        migrations.append(
            ProcessSpec(
                name=f"{definition.name}-migrate",
                command=_python("-m", f"{definition.package}.cli", "migrate"),
                env={**service_env, f"{prefix}HOST": bind_host, f"{prefix}PORT": str(base_port)},
                cwd=cwd,
                service=definition.name,
            )
        )
        addresses: list[str] = []
        for index in range(count):
            port = base_port + INSTANCE_PORT_STEP * index
            if port > 65535:
                raise ConfigError(
                    f"{definition.instances_setting}={count} puts instance #{index + 1} on "
                    f"port {port}, above 65535; lower {definition.port_setting}"
                )
            name = f"{definition.name}-{index + 1}"
            claims.append(PortClaim(port, name, definition.port_setting))
            addresses.append(f"{host}:{port}")
            instances.append(
                ProcessSpec(
                    name=name,
                    command=_python(
                        "-m",
                        "uvicorn",
                        "--factory",
                        f"{definition.package}.main:create_app",
                        "--host",
                        bind_host,
                        "--port",
                        str(port),
                        "--no-access-log",
                        "--timeout-graceful-shutdown",
                        "10",
                    ),
                    env={**service_env, f"{prefix}HOST": bind_host, f"{prefix}PORT": str(port)},
                    cwd=cwd,
                    ready_url=f"http://{host}:{port}/health/ready",
                    stage=Stage.SERVICE,
                    endpoint=f"http://{host}:{port}",
                    ports=(port,),
                    service=definition.name,
                )
            )
        upstreams[definition.name] = tuple(addresses)

    gateway_runtime = run_dir / "gateway"
    max_body = env.get("GATEWAY_MAX_BODY", "").strip() or "1m"
    if not _NGINX_SIZE_RE.fullmatch(max_body):
        raise ConfigError(f"GATEWAY_MAX_BODY must be an nginx size such as 1m, got {max_body!r}")
    gateway_config = GatewayConfig(
        listen=gateway_port,
        upstreams=upstreams,
        runtime_dir=gateway_runtime,
        rate_per_second=_int_setting(
            env, "GATEWAY_RATE_PER_SECOND", 20, minimum=1, maximum=1_000_000
        ),
        burst=_int_setting(env, "GATEWAY_BURST", 40, minimum=0, maximum=1_000_000),
        max_body=max_body,
        access_log=log_dir / "gateway-access.log",
        # nginx's own errors join its output: the gateway log and the terminal
        error_log=Path("/dev/stderr"),
    )
    gateway = ProcessSpec(
        name="gateway",
        command=tuple(
            nginx_command(
                conf=gateway_runtime / "nginx.conf",
                runtime_dir=gateway_runtime,
                error_log=gateway_config.error_log,
            )
        ),
        ready_url=f"{gateway_url}/healthz",
        stage=Stage.GATEWAY,
        endpoint=gateway_url,
        ports=(gateway_port,),
    )

    _check_port_collisions(claims)
    return SystemPlan(
        namespace=namespace,
        repo_root=repo_root,
        run_dir=run_dir,
        log_dir=log_dir,
        keys_dir=keys_dir,
        maildir=maildir,
        dependencies=dependencies,
        migrations=tuple(migrations),
        processes=(smtp_sink, simulator, *instances, gateway),
        gateway=gateway_config,
        ports=tuple(claims),
    )


def build_specs(env: Mapping[str, str]) -> list[ProcessSpec]:
    """The long-running processes of the system described by ``env``, in start order."""
    return list(build_plan(env).processes)


def _check_port_collisions(claims: Sequence[PortClaim]) -> None:
    seen: dict[int, PortClaim] = {}
    for claim in claims:
        other = seen.setdefault(claim.port, claim)
        if other is not claim:
            raise ConfigError(
                f"port {claim.port} is wanted by both {other.owner} ({other.setting}) and "
                f"{claim.owner} ({claim.setting}); change one of them"
            )


# --------------------------------------------------------------------------- output


class Console:
    """The launcher's terminal: its own messages and, unless quiet, every child's output."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        mirror: bool = True,
        errors: TextIO | None = None,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._errors = errors if errors is not None else self._stream
        self.mirror = mirror
        self.width = len("launcher")

    def fit(self, names: Iterable[str]) -> None:
        """Widen the name column to fit ``names``."""
        self.width = max(self.width, *(len(name) for name in names))

    def line(self, name: str, text: str) -> None:
        """One line of a child's output, prefixed with its name."""
        self._write(self._stream, f"{name:<{self.width}} | {text.rstrip()}\n")

    def say(self, text: str) -> None:
        """A message from the launcher itself."""
        for line in text.splitlines() or [""]:
            self.line("launcher", line)

    def error(self, text: str) -> None:
        """A failure the user must act on."""
        self._write(self._errors, "".join(f"launcher: {line}\n" for line in text.splitlines()))

    def raw(self, text: str) -> None:
        """Text as it is (the summary table)."""
        self._write(self._stream, text)

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.write(text)
            stream.flush()


# --------------------------------------------------------------------------- processes


def describe_exit(code: int | None) -> str:
    """``exit code 3`` or ``killed by SIGKILL``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _proc_stat(pid)
    return state is None or state[0] not in {"Z", "X"}


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc/self/stat").exists():
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        state = _proc_stat(int(entry.name))
        if state is not None and state[1] == pgid and state[0] not in {"Z", "X"}:
            return True
    return False


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid`` from /proc, or None where /proc does not tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    try:
        return fields[0], int(fields[2])
    except (IndexError, ValueError):
        return None


def signal_group(pgid: int, signum: signal.Signals) -> None:
    """Send ``signum`` to every process of group ``pgid``, if any is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class RestartBackoff:
    """Delays before restarting a crashed process: doubling, capped, reset when stable."""

    def __init__(self, initial: float = 1.0, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next_delay(self) -> float:
        """The delay to wait now; the following one doubles."""
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay."""
        self._next = self.initial


def _open_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_tail(path: Path, *, offset: int = 0, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written after ``offset``."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - 256 * 1024))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "".join(text.splitlines(keepends=True)[-lines:])


@dataclass
class _Managed:
    spec: ProcessSpec
    log_path: Path
    backoff: RestartBackoff
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    log_offset: int = -1
    ready: bool = False
    ever_ready: bool = False
    restarts: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watcher: asyncio.Task[None] | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class Supervisor:
    """Starts processes in stages, waits for readiness, restarts the dead, stops them all.

    Every child runs in its own session (so its own process group): a stop signals the
    group, and no grandchild outlives it. Output goes to ``<log_dir>/<name>.log`` and,
    when the console mirrors, to the terminal prefixed with the process name (through a pipe
    this process reads; without mirroring the child writes to the file itself).
    """

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        log_dir: Path,
        console: Console | None = None,
        ready_timeout: float = 60.0,
        stop_grace: float = 15.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 30.0,
        probe_interval: float = 0.2,
    ) -> None:
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"process names must be unique: {', '.join(duplicates)}")
        self._console = console if console is not None else Console()
        self._console.fit(names)
        self._log_dir = log_dir
        self._ready_timeout = ready_timeout
        self._stop_grace = stop_grace
        self._stable_after = stable_after
        self._probe_interval = probe_interval
        self._managed = {
            spec.name: _Managed(
                spec=spec,
                log_path=log_dir / f"{spec.name}.log",
                backoff=RestartBackoff(backoff_initial, backoff_max),
            )
            for spec in specs
        }
        self._started = False
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._stop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------ introspection

    @property
    def specs(self) -> list[ProcessSpec]:
        """The processes under supervision, in start order."""
        return [managed.spec for managed in self._ordered()]

    def pid(self, name: str) -> int | None:
        """The pid of ``name``'s current process, or None while it is not running."""
        process = self._managed[name].process
        if process is None or process.returncode is not None:
            return None
        return process.pid

    def restart_count(self, name: str) -> int:
        """How many times ``name`` was restarted after dying."""
        return self._managed[name].restarts

    def is_ready(self, name: str) -> bool:
        """Whether ``name`` passed its readiness probe since it last started."""
        return self._managed[name].ready

    def log_path(self, name: str) -> Path:
        """Where ``name``'s output goes."""
        return self._managed[name].log_path

    # ------------------------------------------------------------ start

    async def start(self) -> None:
        """Start every process, stage by stage, each stage ready before the next starts.

        Raises StartupError naming the process (with its log tail) when one exits or is
        not ready in time; call :meth:`stop` afterwards either way.
        """
        for stage in sorted({managed.spec.stage for managed in self._managed.values()}):
            members = [m for m in self._ordered() if m.spec.stage == stage]
            for managed in members:
                try:
                    spawned = await self._spawn(managed)
                except OSError as exc:
                    raise StartupError(
                        managed.spec.name,
                        f"could not be started ({managed.spec.command[0]}: {exc})",
                        log_path=managed.log_path,
                        log_tail=read_tail(managed.log_path, offset=managed.log_offset),
                    ) from exc
                if not spawned:
                    raise LaunchError("stopped while starting")
                managed.watcher = asyncio.create_task(
                    self._watch(managed), name=f"watch {managed.spec.name}"
                )
            await self.wait_ready([m.spec.name for m in members])
        self._started = True

    async def wait_ready(
        self, names: Iterable[str] | None = None, *, within: float | None = None
    ) -> None:
        """Wait until each named process (default: all) answers its readiness probe."""
        targets = [self._managed[name] for name in names] if names is not None else self._ordered()
        limit = self._ready_timeout if within is None else within
        deadline = time.monotonic() + limit
        tasks = [asyncio.create_task(self._await_ready(m, deadline, limit)) for m in targets]
        if not tasks:
            return
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            failure = task.exception() if task in done and not task.cancelled() else None
            if failure is not None:
                raise failure

    async def _await_ready(self, managed: _Managed, deadline: float, limit: float) -> None:
        url = managed.spec.ready_url
        last_error = "no answer yet"
        while True:
            if self._stopping:
                raise LaunchError("stopped while waiting for readiness")
            process = managed.process
            if process is not None and process.returncode is not None:
                if not (managed.ever_ready or self._started):
                    await self._drain_output(managed, grace=1.0)
                    raise StartupError(
                        managed.spec.name,
                        f"exited before it was ready ({describe_exit(process.returncode)})",
                        log_path=managed.log_path,
                        log_tail=read_tail(managed.log_path, offset=managed.log_offset),
                    )
            elif process is not None:
                if url is None:
                    managed.ready = managed.ever_ready = True
                    return
                outcome = await self._probe(
                    url, limit=max(0.1, min(2.0, deadline - time.monotonic()))
                )
                if outcome is None:
                    managed.ready = managed.ever_ready = True
                    return
                last_error = outcome
            if time.monotonic() >= deadline:
                raise StartupError(
                    managed.spec.name,
                    f"was not ready within {limit:g} s (last probe of {url}: {last_error})",
                    log_path=managed.log_path,
                    log_tail=read_tail(managed.log_path, offset=managed.log_offset),
                )
            await asyncio.sleep(self._probe_interval)

    async def _probe(self, url: str, *, limit: float) -> str | None:
        """None when ``url`` answers 200, else what went wrong."""
        if self._client is None:
            # trust_env=False: an HTTP(S)_PROXY in the environment must not capture localhost
            self._client = httpx.AsyncClient(trust_env=False)
        try:
            response = await self._client.get(url, timeout=limit)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if response.status_code == 200:
            return None
        return f"HTTP {response.status_code}"

    async def _spawn(self, managed: _Managed) -> bool:
        """Start ``managed``'s process; False when a stop came first."""
        async with managed.lock:
            if self._stopping:
                return False
            spec = managed.spec
            if managed.log_offset < 0:
                managed.log_offset = _log_size(managed.log_path)
            log = _open_log(managed.log_path)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(
                f"----- {stamp} launcher: starting {spec.name}: {' '.join(spec.command)}\n".encode()
            )
            log.flush()
            # Without a console to mirror to, the child appends to its log itself: copying every
            # line through a pipe cost this process about a tenth of a service's CPU under load.
            direct = not self._console.mirror
            try:
                process = await asyncio.create_subprocess_exec(
                    *spec.command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log if direct else asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env={**os.environ, **spec.env},
                    cwd=spec.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                log.write(f"launcher: could not start {spec.name}: {exc}\n".encode())
                log.close()
                raise
            managed.process = process
            managed.started_at = time.monotonic()
            managed.ready = False
            if direct:
                log.close()  # the child holds its own descriptor
                return True
            assert process.stdout is not None
            managed.pumps = [pump for pump in managed.pumps if not pump.done()]
            managed.pumps.append(
                asyncio.create_task(
                    self._pump(spec.name, process.stdout, log), name=f"output {spec.name}"
                )
            )
            return True

    async def _pump(self, name: str, stream: asyncio.StreamReader, log: IO[bytes]) -> None:
        pending = b""
        try:
            while chunk := await stream.read(65536):
                log.write(chunk)
                log.flush()
                pending += chunk
                *complete, pending = pending.split(b"\n")
                if len(pending) > 65536:
                    complete.append(pending)
                    pending = b""
                for line in complete:
                    self._console.line(name, line.decode("utf-8", errors="replace"))
            if pending:
                self._console.line(name, pending.decode("utf-8", errors="replace"))
        finally:
            log.close()

    async def _drain_output(self, managed: _Managed, *, grace: float) -> None:
        if managed.pumps:
            await asyncio.wait(managed.pumps, timeout=grace)

    # ------------------------------------------------------------ supervision

    async def _watch(self, managed: _Managed) -> None:
        name = managed.spec.name
        while True:
            process = managed.process
            assert process is not None
            code = await process.wait()
            managed.ready = False
            if self._stopping:
                return
            if not (managed.ever_ready or self._started):
                return  # still starting: wait_ready reports it with the log tail
            # Whatever it left in its group (workers, helpers) goes too, freeing its ports.
            signal_group(process.pid, signal.SIGKILL)
            uptime = time.monotonic() - managed.started_at
            if uptime >= self._stable_after:
                managed.backoff.reset()
            delay = managed.backoff.next_delay()
            self._console.say(
                f"{name} exited unexpectedly ({describe_exit(code)}) after {uptime:.1f} s; "
                f"restarting in {delay:g} s"
            )
            if await self._sleep_unless_stopping(delay):
                return
            try:
                spawned = await self._spawn(managed)
            except OSError as exc:
                self._console.say(f"{name} could not be restarted: {exc}")
                continue
            if not spawned:
                return
            managed.restarts += 1
            new_pid = managed.process.pid if managed.process else "?"
            self._console.say(f"{name} restarted (pid {new_pid}, restart #{managed.restarts})")
            self._in_background(self._announce_ready(managed))

    async def _announce_ready(self, managed: _Managed) -> None:
        process = managed.process
        url = managed.spec.ready_url
        while not self._stopping and process is not None and process.returncode is None:
            if url is None or await self._probe(url, limit=2.0) is None:
                managed.ready = managed.ever_ready = True
                self._console.say(f"{managed.spec.name} is ready again")
                return
            await asyncio.sleep(max(self._probe_interval, 0.5))

    async def _sleep_unless_stopping(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; True when a stop interrupted it."""
        try:
            await asyncio.wait_for(self._stop_event.wait(), timeout=delay)
        except TimeoutError:
            return False
        return True

    def _in_background(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ stop

    async def stop(self) -> None:
        """Stop everything: SIGTERM by stage (last started first), SIGKILL after the grace."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop(), name="supervisor stop")
        await asyncio.shield(self._stop_task)

    def kill_now(self) -> None:
        """SIGKILL every process group at once (a second Ctrl-C)."""
        self._stopping = True
        self._stop_event.set()
        for managed in self._managed.values():
            if managed.process is not None:
                signal_group(managed.process.pid, signal.SIGKILL)

    async def _stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        deadline = time.monotonic() + self._stop_grace
        stages = sorted({m.spec.stage for m in self._managed.values()}, reverse=True)
        for stage in stages:
            processes: list[asyncio.subprocess.Process] = []
            for managed in self._ordered():
                if managed.spec.stage != stage:
                    continue
                async with managed.lock:  # a restart in flight finishes before we look
                    if managed.process is not None:
                        processes.append(managed.process)
            for process in processes:
                signal_group(process.pid, signal.SIGTERM)
            await asyncio.gather(*(self._gone(p, deadline) for p in processes))
        survivors: list[asyncio.subprocess.Process] = []
        for managed in self._ordered():
            leader = managed.process
            if leader is None or (leader.returncode is not None and not group_alive(leader.pid)):
                continue
            self._console.say(
                f"{managed.spec.name} still running {self._stop_grace:g} s after SIGTERM: SIGKILL"
            )
            signal_group(leader.pid, signal.SIGKILL)
            survivors.append(leader)
        await asyncio.gather(*(self._gone(p, time.monotonic() + 5.0) for p in survivors))
        for task in self._background:
            task.cancel()
        watchers = [m.watcher for m in self._managed.values() if m.watcher is not None]
        pumps = [pump for m in self._managed.values() for pump in m.pumps]
        tasks = [*watchers, *pumps, *self._background]
        if tasks:
            # output still buffered in the pipes reaches the logs before we return
            await asyncio.wait(tasks, timeout=3.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @staticmethod
    async def _gone(process: asyncio.subprocess.Process, deadline: float) -> bool:
        """Wait until ``process`` exited and its group is empty, or the deadline passes."""
        while True:
            if process.returncode is not None and not group_alive(process.pid):
                return True
            if time.monotonic() >= deadline:
                return False
            if process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        process.wait(), timeout=max(0.0, min(0.1, deadline - time.monotonic()))
                    )
            else:
                # the leader is gone but something it started is still in its group
                signal_group(process.pid, signal.SIGTERM)
                await asyncio.sleep(0.05)

    def _ordered(self) -> list[_Managed]:
        return sorted(self._managed.values(), key=lambda m: m.spec.stage)


# --------------------------------------------------------------------------- preflight


async def check_dependencies(
    dependencies: Sequence[Dependency], *, connect_within: float = 2.0
) -> list[str]:
    """A message per dependency that does not accept a TCP connection."""

    async def reach(host: str, port: int) -> str | None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=connect_within
            )
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                return f"no answer within {connect_within:g} s"
            return os.strerror(exc.errno).lower() if exc.errno else str(exc)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    async def check(dependency: Dependency) -> str | None:
        reasons = await asyncio.gather(*(reach(*where) for where in dependency.endpoints))
        if any(reason is None for reason in reasons):
            return None  # one node of a cluster answering is enough
        where = ", ".join(f"{host}:{port}" for host, port in dependency.endpoints)
        why = "; ".join(dict.fromkeys(str(reason) for reason in reasons))
        return (
            f"{dependency.name} is not reachable at {where} "
            f"({dependency.setting}={redact_list(dependency.url)}): {why}. "
            f"{dependency.hint}."
        )

    results = await asyncio.gather(*(check(d) for d in dependencies))
    return [message for message in results if message is not None]


def busy_ports(claims: Sequence[PortClaim], host: str = LOCALHOST) -> list[str]:
    """A message per port some other program already listens on."""
    messages = []
    for claim in claims:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR: a TIME_WAIT left by the previous run is no conflict; a listener is
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, claim.port))
            except OSError:
                messages.append(
                    f"port {claim.port} ({claim.owner}) is already in use — is another "
                    f"`make run` running? Stop it or set {claim.setting} to a free port."
                )
    return messages


def find_nginx() -> str | None:
    """The nginx binary, also where Debian puts it outside a normal user's PATH."""
    search = os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin", "/opt/homebrew/bin"]
    )
    return shutil.which("nginx", path=search)


async def ensure_nginx(console: Console, log_dir: Path) -> str:
    """Path of nginx; installs nginx-light when root on Debian, else says how."""
    found = find_nginx()
    if found:
        return found
    if _can_apt_install():
        console.say("nginx (the gateway) is missing: installing nginx-light with apt-get")
        apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
        for step in (("apt-get", "update"), ("apt-get", "install", "-y", "nginx-light")):
            spec = ProcessSpec(name="apt-get", command=step, env=apt_env)
            code, output = await run_to_completion(spec, log_dir / "apt-get.log", limit=600)
            if code != 0:
                raise LaunchError(
                    f"`{' '.join(step)}` failed ({describe_exit(code)}):\n{_tail_text(output)}"
                )
        found = find_nginx()
        if found:
            return found
    raise LaunchError(
        "nginx is required for the gateway but is not installed. Install it: "
        "`sudo apt-get install nginx-light` (Debian/Ubuntu), `sudo dnf install nginx` "
        "(Fedora), `brew install nginx` (macOS)."
    )


def _can_apt_install() -> bool:
    return (
        os.geteuid() == 0 and Path("/etc/debian_version").exists() and bool(shutil.which("apt-get"))
    )


def _tail_text(text: str, lines: int = TAIL_LINES) -> str:
    return "".join(text.splitlines(keepends=True)[-lines:]).rstrip("\n") or "(no output)"


async def run_to_completion(spec: ProcessSpec, log_path: Path, *, limit: float) -> tuple[int, str]:
    """Run a one-shot command in its own group; (exit code, output). Killed after ``limit`` s."""
    log = _open_log(log_path)
    try:
        process = await asyncio.create_subprocess_exec(
            *spec.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **spec.env},
            cwd=spec.cwd,
            start_new_session=True,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout=limit)
        except TimeoutError:
            signal_group(process.pid, signal.SIGKILL)
            await process.wait()
            return -int(signal.SIGKILL), f"{spec.name}: no result within {limit:g} s"
        except asyncio.CancelledError:
            signal_group(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        log.write(output)
        return process.returncode or 0, output.decode("utf-8", errors="replace")
    finally:
        log.close()


async def run_migrations(
    migrations: Sequence[ProcessSpec], *, log_dir: Path, console: Console, limit: float = 180.0
) -> None:
    """Migrate every service in parallel; the first failure stops the rest and is raised."""

    async def migrate(spec: ProcessSpec) -> None:
        code, output = await run_to_completion(spec, log_dir / f"{spec.name}.log", limit=limit)
        if code != 0:
            raise LaunchError(
                f"{spec.name} failed ({describe_exit(code)}): `{' '.join(spec.command)}`\n"
                f"--- output ---\n{_tail_text(output)}\n--- end of {spec.name} output ---"
            )

    if not migrations:
        return
    console.say(f"migrating: {', '.join(spec.service or spec.name for spec in migrations)}")
    tasks = [asyncio.create_task(migrate(spec)) for spec in migrations]
    try:
        for next_done in asyncio.as_completed(tasks):
            await next_done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def render_gateway(plan: SystemPlan, nginx: str) -> ProcessSpec:
    """Write the nginx config for ``plan`` and return the gateway's process spec."""
    config = plan.gateway
    config.access_log.parent.mkdir(parents=True, exist_ok=True)
    conf = write_nginx_conf(
        listen=config.listen,
        upstreams=config.upstreams,
        runtime_dir=config.runtime_dir,
        rate_per_second=config.rate_per_second,
        burst=config.burst,
        max_body=config.max_body,
        access_log=config.access_log,
        error_log=config.error_log,
    )
    gateway = next(spec for spec in plan.processes if spec.stage == Stage.GATEWAY)
    command = nginx_command(
        conf=conf, runtime_dir=conf.parent, error_log=config.error_log, nginx=nginx
    )
    return dataclasses.replace(gateway, command=tuple(command))


# --------------------------------------------------------------------------- launcher


def summary(plan: SystemPlan, specs: Sequence[ProcessSpec]) -> str:
    """The table printed once everything is ready."""
    width = max(len("process"), *(len(spec.name) for spec in specs))
    url_width = max(len("address"), *(len(spec.endpoint) for spec in specs))
    namespace = f"namespace {plan.namespace!r}" if plan.namespace else "default namespace"
    lines = [
        "",
        f"The system is up ({namespace}). Gateway: {plan.gateway_url}",
        "",
        f"  {'process':<{width}}  {'address':<{url_width}}  log",
    ]
    for spec in specs:
        log = _relative(plan.log_dir / f"{spec.name}.log")
        lines.append(f"  {spec.name:<{width}}  {spec.endpoint:<{url_width}}  {log}")
        if spec.note:
            lines.append(f"  {'':<{width}}  {spec.note}")
    lines += [
        "",
        f"  API docs through the gateway: {plan.gateway_url}/<prefix>/docs "
        "(auth, users, orders, payments, notifications)",
        f"  gateway access log: {_relative(plan.gateway.access_log)}",
        f"  run dir: {_relative(plan.run_dir)} (logs, nginx config, signing keys, mail)",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


class Launcher:
    """Preflight, migrations, supervised processes, then the foreground until a signal."""

    def __init__(
        self,
        plan: SystemPlan,
        *,
        console: Console,
        ready_timeout: float = 60.0,
        stop_grace: float = 15.0,
    ) -> None:
        self.plan = plan
        self._console = console
        self._ready_timeout = ready_timeout
        self._stop_grace = stop_grace
        self._stop_requested = asyncio.Event()
        self._stop_requested_at = 0.0
        self._supervisor: Supervisor | None = None
        console.fit(["launcher", *(spec.name for spec in plan.processes)])

    async def run(self) -> int:
        """Run until SIGINT, SIGTERM or SIGHUP (exit 0) or a failure to come up (exit 1)."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            startup = asyncio.create_task(self._bring_up(), name="bring up")
            stop_wait = asyncio.create_task(self._stop_requested.wait(), name="stop requested")
            await asyncio.wait({startup, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not startup.done():
                startup.cancel()
                await asyncio.gather(startup, return_exceptions=True)
                return 0
            try:
                specs = startup.result()
            except (LaunchError, OSError) as exc:
                stop_wait.cancel()
                self._console.error(str(exc))
                return 1
            self._console.raw(summary(self.plan, specs))
            await stop_wait
            return 0
        finally:
            if self._supervisor is not None:
                await self._supervisor.stop()
                self._console.say("stopped")
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stop_requested.is_set():
            if time.monotonic() - self._stop_requested_at < 1.0:
                return  # one Ctrl-C often arrives twice (terminal and wrapper)
            self._console.say(f"{name} again: killing everything now")
            if self._supervisor is not None:
                self._supervisor.kill_now()
            return
        self._console.say(
            f"{name} received: stopping everything (up to {self._stop_grace:g} s; "
            "again to kill at once)"
        )
        self._stop_requested_at = time.monotonic()
        self._stop_requested.set()

    async def _bring_up(self) -> list[ProcessSpec]:
        plan = self.plan
        unreachable = await check_dependencies(plan.dependencies)
        if unreachable:
            raise LaunchError("\n".join(unreachable))
        nginx = await ensure_nginx(self._console, plan.log_dir)
        busy = busy_ports(plan.ports)
        if busy:
            raise LaunchError("\n".join(busy))
        for directory in (plan.log_dir, plan.keys_dir, plan.maildir, plan.gateway.runtime_dir):
            directory.mkdir(parents=True, exist_ok=True)
        gateway = render_gateway(plan, nginx)
        specs = [gateway if spec.stage == Stage.GATEWAY else spec for spec in plan.processes]
        await run_migrations(plan.migrations, log_dir=plan.log_dir, console=self._console)
        self._supervisor = Supervisor(
            specs,
            log_dir=plan.log_dir,
            console=self._console,
            ready_timeout=self._ready_timeout,
            stop_grace=self._stop_grace,
        )
        self._console.say(f"starting {len(specs)} processes; logs in {_relative(plan.log_dir)}")
        await self._supervisor.start()
        return specs


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _plan_as_json(plan: SystemPlan) -> str:
    def encode(value: object) -> object:
        if isinstance(value, Path):
            return str(value)
        raise TypeError(type(value).__name__)

    return json.dumps(dataclasses.asdict(plan), indent=2, default=encode)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m svctools.launcher``."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m svctools.launcher",
        description="Run the whole system locally in the foreground (what `make run` does).",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        default=_truthy(env.get("LAUNCHER_QUIET")),
        help="do not mirror the processes' output here; logs still go to RUN_DIR/logs "
        "(env LAUNCHER_QUIET=1)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=float(env.get("LAUNCHER_READY_TIMEOUT", "60")),
        help="seconds each stage may take to become ready (env LAUNCHER_READY_TIMEOUT)",
    )
    parser.add_argument(
        "--stop-grace",
        type=float,
        default=float(env.get("LAUNCHER_STOP_GRACE", "15")),
        help="seconds between SIGTERM and SIGKILL on stop (env LAUNCHER_STOP_GRACE)",
    )
    parser.add_argument(
        "--print-plan",
        action="store_true",
        help="print what would run (commands, env, ports) as JSON and exit",
    )
    args = parser.parse_args(argv)
    console = Console(sys.stdout, mirror=not args.quiet, errors=sys.stderr)
    try:
        plan = build_plan(env)
    except ConfigError as exc:
        console.error(str(exc))
        return 2
    if args.print_plan:
        console.raw(_plan_as_json(plan) + "\n")
        return 0
    launcher = Launcher(
        plan, console=console, ready_timeout=args.ready_timeout, stop_grace=args.stop_grace
    )
    return asyncio.run(launcher.run())


if __name__ == "__main__":
    sys.exit(main())
