"""The launcher behind `make run`: the system description, the supervisor, the command."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from servicekit.testing.waiting import wait_until
from svctools.launcher import (
    ConfigError,
    Console,
    ProcessSpec,
    RestartBackoff,
    Stage,
    StartupError,
    Supervisor,
    build_plan,
    build_specs,
    check_dependencies,
    find_nginx,
    process_alive,
    render_gateway,
)

PYTHON = sys.executable
SERVICE_PACKAGES = {
    "auth": ("auth_service", "AUTH_"),
    "users": ("users_service", "USERS_"),
    "orders": ("orders_service", "ORDERS_"),
    "payments-gateway": ("payments_gateway", "PAYMENTS_"),
    "notifications": ("notifications_service", "NOTIFICATIONS_"),
}

# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_base_port(taken: set[int]) -> int:
    """A free port whose +100 neighbour (a second instance) is free as well."""
    for _ in range(200):
        port = _free_port()
        pair = {port, port + 100}
        if port + 100 <= 65535 and pair.isdisjoint(taken) and _port_is_free(port + 100):
            taken.update(pair)
            return port
    raise RuntimeError("no pair of free ports found")


def _http_server(port: int, *, delay: float = 0.0, ignore_sigterm: bool = False) -> str:
    """A ``python -c`` program serving HTTP on ``port`` after ``delay`` seconds."""
    return textwrap.dedent(
        f"""
        import http.server, signal, time
        if {ignore_sigterm!r}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("fake starting", flush=True)
        time.sleep({delay!r})
        server = http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler)
        print("fake serving", flush=True)
        server.serve_forever()
        """
    )


def _server_spec(
    name: str, port: int, *, delay: float = 0.0, ignore_sigterm: bool = False, stage: int = 0
) -> ProcessSpec:
    return ProcessSpec(
        name=name,
        command=(PYTHON, "-c", _http_server(port, delay=delay, ignore_sigterm=ignore_sigterm)),
        ready_url=f"http://127.0.0.1:{port}/",
        stage=stage,
        ports=(port,),
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _quiet() -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(stream, mirror=False), stream


class SupervisorFactory(Protocol):
    def __call__(
        self,
        specs: list[ProcessSpec],
        *,
        console: Console | None = None,
        ready_timeout: float = 15.0,
        stop_grace: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 0.5,
    ) -> Supervisor: ...


@pytest.fixture
def supervisor_factory(tmp_path: Path) -> Iterator[SupervisorFactory]:
    """Supervisors that log under tmp_path with short delays; killed if a test forgets."""
    created: list[Supervisor] = []

    def create(
        specs: list[ProcessSpec],
        *,
        console: Console | None = None,
        ready_timeout: float = 15.0,
        stop_grace: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 0.5,
    ) -> Supervisor:
        supervisor = Supervisor(
            specs,
            log_dir=tmp_path / "logs",
            console=console or _quiet()[0],
            ready_timeout=ready_timeout,
            stop_grace=stop_grace,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            probe_interval=0.05,
        )
        created.append(supervisor)
        return supervisor

    yield create
    for supervisor in created:
        supervisor.kill_now()


# --------------------------------------------------------------------------- the plan


def _by_name(env: dict[str, str]) -> dict[str, ProcessSpec]:
    return {spec.name: spec for spec in build_specs(env)}


class TestBuildSpecs:
    def test_defaults_are_the_documented_ports(self) -> None:
        specs = _by_name({})
        assert list(specs) == [
            "smtp-sink",
            "provider-simulator",
            "auth-1",
            "users-1",
            "orders-1",
            "payments-gateway-1",
            "notifications-1",
            "gateway",
        ]
        assert specs["gateway"].ports == (8080,)
        assert specs["gateway"].ready_url == "http://127.0.0.1:8080/healthz"
        assert specs["provider-simulator"].ports == (8090,)
        assert specs["provider-simulator"].ready_url == "http://127.0.0.1:8090/healthz"
        assert specs["smtp-sink"].ports == (1025, 1080)
        assert specs["smtp-sink"].ready_url == "http://127.0.0.1:1080/healthz"
        for name, port in [("auth", 8001), ("users", 8002), ("orders", 8003)]:
            spec = specs[f"{name}-1"]
            assert spec.ports == (port,)
            assert spec.ready_url == f"http://127.0.0.1:{port}/health/ready"
            assert "--port" in spec.command
            assert spec.command[spec.command.index("--port") + 1] == str(port)
        assert specs["payments-gateway-1"].ports == (8004,)
        assert specs["notifications-1"].ports == (8005,)

    def test_services_run_under_uvicorn_factories_in_stage_order(self) -> None:
        specs = _by_name({})
        orders = specs["orders-1"]
        assert orders.command[:5] == (
            PYTHON,
            "-m",
            "uvicorn",
            "--factory",
            "orders_service.main:create_app",
        )
        assert "--no-access-log" in orders.command
        assert specs["payments-gateway-1"].command[4] == "payments_gateway.main:create_app"
        stages = [spec.stage for spec in build_specs({})]
        assert stages == sorted(stages)
        assert specs["gateway"].stage == Stage.GATEWAY
        assert specs["smtp-sink"].stage == specs["provider-simulator"].stage == Stage.SUPPORT

    def test_ports_come_from_the_environment(self) -> None:
        env = {
            "GATEWAY_PORT": "18080",
            "AUTH_PORT": "18001",
            "USERS_PORT": "18002",
            "ORDERS_PORT": "18003",
            "PAYMENTS_PORT": "18004",
            "NOTIFICATIONS_PORT": "18005",
            "SIMULATOR_PORT": "18090",
            "SMTP_SINK_PORT": "11025",
            "SMTP_SINK_HTTP_PORT": "11080",
        }
        plan = build_plan(env)
        specs = {spec.name: spec for spec in plan.processes}
        assert specs["gateway"].ports == (18080,)
        assert specs["payments-gateway-1"].ports == (18004,)
        assert specs["payments-gateway-1"].env["PAYMENTS_PORT"] == "18004"
        assert specs["provider-simulator"].env["SIMULATOR_PORT"] == "18090"
        assert specs["smtp-sink"].env["SMTP_SINK_PORT"] == "11025"
        assert specs["smtp-sink"].env["SMTP_SINK_HTTP_PORT"] == "11080"
        assert plan.gateway.listen == 18080
        assert plan.gateway.upstreams["auth"] == ("127.0.0.1:18001",)
        assert plan.gateway_url == "http://127.0.0.1:18080"

    def test_extra_instances_listen_100_ports_up_and_join_the_upstream(self) -> None:
        plan = build_plan({"ORDERS_INSTANCES": "2", "AUTH_INSTANCES": "3"})
        specs = {spec.name: spec for spec in plan.processes}
        assert specs["orders-1"].ports == (8003,)
        assert specs["orders-2"].ports == (8103,)
        assert specs["orders-2"].env["ORDERS_PORT"] == "8103"
        assert specs["orders-2"].ready_url == "http://127.0.0.1:8103/health/ready"
        assert plan.gateway.upstreams["orders"] == ("127.0.0.1:8003", "127.0.0.1:8103")
        assert plan.gateway.upstreams["auth"] == (
            "127.0.0.1:8001",
            "127.0.0.1:8101",
            "127.0.0.1:8201",
        )
        assert plan.gateway.upstreams["users"] == ("127.0.0.1:8002",)
        # instances share one database and one migration
        assert (
            specs["orders-1"].env["ORDERS_DATABASE_URL"]
            == specs["orders-2"].env["ORDERS_DATABASE_URL"]
        )
        assert [m.name for m in plan.migrations].count("orders-migrate") == 1

    def test_default_namespace_uses_plain_names(self) -> None:
        plan = build_plan({})
        specs = {spec.name: spec for spec in plan.processes}
        assert specs["orders-1"].env["ORDERS_DATABASE_URL"] == (
            "postgresql+asyncpg://postgres@127.0.0.1:5432/orders"
        )
        assert specs["payments-gateway-1"].env["PAYMENTS_DATABASE_URL"].endswith("/payments")
        assert specs["auth-1"].env["AUTH_EVENTS_EXCHANGE"] == "events"
        assert plan.run_dir == plan.repo_root / ".run"

    def test_namespace_separates_databases_exchange_and_run_dir(self) -> None:
        plan = build_plan({"SYSTEM_NAMESPACE": "e2e"})
        specs = {spec.name: spec for spec in plan.processes}
        for service, (_, prefix) in SERVICE_PACKAGES.items():
            env = specs[f"{service}-1"].env
            database = "payments" if service == "payments-gateway" else service
            assert env[f"{prefix}DATABASE_URL"].endswith(f"/{database}_e2e")
            assert env[f"{prefix}EVENTS_EXCHANGE"] == "e2e.events"
        assert plan.run_dir == plan.repo_root / ".run" / "e2e"
        assert specs["auth-1"].env["AUTH_KEYS_DIR"] == str(plan.run_dir / "keys")
        assert specs["smtp-sink"].env["SMTP_SINK_MAILDIR"] == str(plan.run_dir / "maildir")
        # A second system's failed logins must not throttle the first one's clients.
        assert specs["auth-1"].env["AUTH_REDIS_KEY_PREFIX"] == "auth:e2e"
        default = {spec.name: spec for spec in build_plan({}).processes}
        assert "AUTH_REDIS_KEY_PREFIX" not in default["auth-1"].env

    def test_run_dir_and_server_urls_come_from_the_environment(self, tmp_path: Path) -> None:
        plan = build_plan(
            {
                "RUN_DIR": str(tmp_path / "run"),
                "POSTGRES_URL": "postgresql://app@db.internal:6543",
                "REDIS_URL": "redis://cache.internal:6380/2",
                "AMQP_URL": "amqp://u:p@mq.internal:5673/vhost",
            }
        )
        specs = {spec.name: spec for spec in plan.processes}
        env = specs["users-1"].env
        assert env["USERS_DATABASE_URL"] == "postgresql+asyncpg://app@db.internal:6543/users"
        assert env["USERS_REDIS_URL"] == "redis://cache.internal:6380/2"
        assert env["USERS_AMQP_URL"] == "amqp://u:p@mq.internal:5673/vhost"
        assert plan.log_dir == tmp_path / "run" / "logs"
        assert [(d.name, d.host, d.port) for d in plan.dependencies] == [
            ("PostgreSQL", "db.internal", 6543),
            ("Redis", "cache.internal", 6380),
            ("RabbitMQ", "mq.internal", 5673),
        ]

    def test_a_broker_cluster_is_every_node_of_the_list(self) -> None:
        nodes = "amqp://u:p@mq-0:5672/shop,amqp://u:p@mq-1:5673/shop,amqp://u:p@mq-2/shop"
        plan = build_plan({"AMQP_URL": nodes})
        specs = {spec.name: spec for spec in plan.processes}
        assert specs["orders-1"].env["ORDERS_AMQP_URL"] == nodes
        broker = plan.dependencies[-1]
        assert broker.endpoints == (("mq-0", 5672), ("mq-1", 5673), ("mq-2", 5672))

    async def test_one_node_of_a_cluster_answering_is_enough(self) -> None:
        with socket.socket() as listening, socket.socket() as closed:
            listening.bind(("127.0.0.1", 0))
            listening.listen()
            closed.bind(("127.0.0.1", 0))
            up, down = listening.getsockname()[1], closed.getsockname()[1]
            nodes = f"amqp://u:hunter2@127.0.0.1:{down}/,amqp://u:hunter2@127.0.0.1:{up}/"
            broker = build_plan({"AMQP_URL": nodes}).dependencies[-1]
            assert await check_dependencies([broker]) == []
            refused = f"amqp://u:hunter2@127.0.0.1:{down}/,amqp://u:hunter2@127.0.0.1:{down}/"
            (message,) = await check_dependencies(
                [build_plan({"AMQP_URL": refused}).dependencies[-1]]
            )
        assert f"RabbitMQ is not reachable at 127.0.0.1:{down}, 127.0.0.1:{down}" in message
        assert "hunter2" not in message

    def test_services_are_wired_to_each_other(self) -> None:
        plan = build_plan({"AUTH_PORT": "9001", "SIMULATOR_PORT": "9090", "GATEWAY_PORT": "9080"})
        specs = {spec.name: spec for spec in plan.processes}
        payments = specs["payments-gateway-1"].env
        simulator = specs["provider-simulator"].env
        assert payments["PAYMENTS_PROVIDER_URL"] == "http://127.0.0.1:9090"
        assert simulator["SIMULATOR_WEBHOOK_URL"] == (
            "http://127.0.0.1:9080/payments/webhooks/provider"
        )
        assert payments["PAYMENTS_WEBHOOK_SECRET"] == simulator["SIMULATOR_WEBHOOK_SECRET"]
        notifications = specs["notifications-1"].env
        assert notifications["NOTIFICATIONS_SMTP_HOST"] == "127.0.0.1"
        assert notifications["NOTIFICATIONS_SMTP_PORT"] == "1025"
        for service, (_, prefix) in SERVICE_PACKAGES.items():
            assert specs[f"{service}-1"].env[f"{prefix}JWKS_URL"] == (
                "http://127.0.0.1:9001/.well-known/jwks.json"
            )

    def test_variables_already_set_win_over_derived_ones(self) -> None:
        env = {
            "ORDERS_DATABASE_URL": "postgresql+asyncpg://elsewhere/orders_custom",
            "PAYMENTS_PROVIDER_URL": "https://sandbox.provider.example",
            "PAYMENTS_WEBHOOK_SECRET": "s3cret-shared",
            "NOTIFICATIONS_SMTP_HOST": "mail.example",
            "AUTH_KEYS_DIR": "/srv/keys",
            "ORDERS_INSTANCES": "2",
        }
        specs = _by_name(env)
        assert specs["orders-1"].env["ORDERS_DATABASE_URL"] == env["ORDERS_DATABASE_URL"]
        assert specs["orders-2"].env["ORDERS_DATABASE_URL"] == env["ORDERS_DATABASE_URL"]
        assert specs["users-1"].env["USERS_DATABASE_URL"].endswith("/users")
        assert (
            specs["payments-gateway-1"].env["PAYMENTS_PROVIDER_URL"] == env["PAYMENTS_PROVIDER_URL"]
        )
        # one secret for both ends of the webhook
        assert specs["provider-simulator"].env["SIMULATOR_WEBHOOK_SECRET"] == "s3cret-shared"
        assert specs["notifications-1"].env["NOTIFICATIONS_SMTP_HOST"] == "mail.example"
        assert specs["auth-1"].env["AUTH_KEYS_DIR"] == "/srv/keys"
        # the per-instance port is the launcher's to give
        assert specs["orders-2"].env["ORDERS_PORT"] == "8103"

    def test_gateway_limits_pass_through(self) -> None:
        plan = build_plan(
            {"GATEWAY_RATE_PER_SECOND": "5", "GATEWAY_BURST": "7", "GATEWAY_MAX_BODY": "2m"}
        )
        assert (plan.gateway.rate_per_second, plan.gateway.burst, plan.gateway.max_body) == (
            5,
            7,
            "2m",
        )

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            ({"ORDERS_PORT": "eighty"}, "ORDERS_PORT must be an integer"),
            ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT must be between 1 and 65535"),
            ({"USERS_INSTANCES": "0"}, "USERS_INSTANCES must be between 1"),
            ({"SYSTEM_NAMESPACE": "Bad Name"}, "SYSTEM_NAMESPACE"),
            ({"AUTH_PORT": "8080"}, "port 8080 is wanted by both gateway"),
            ({"ORDERS_INSTANCES": "2", "AUTH_PORT": "8103"}, "orders-2"),
            ({"GATEWAY_MAX_BODY": "lots"}, "GATEWAY_MAX_BODY"),
            ({"POSTGRES_URL": "localhost"}, "POSTGRES_URL"),
        ],
    )
    def test_impossible_configuration_is_refused_clearly(
        self, env: dict[str, str], message: str
    ) -> None:
        with pytest.raises(ConfigError, match=message):
            build_plan(env)


class TestRenderGateway:
    def test_renders_a_config_nginx_accepts(self, tmp_path: Path) -> None:
        nginx = find_nginx()
        assert nginx is not None, "nginx is part of the development machine"
        plan = build_plan({"RUN_DIR": str(tmp_path), "ORDERS_INSTANCES": "2"})
        spec = render_gateway(plan, nginx)
        assert spec.command[0] == nginx
        conf = Path(spec.command[spec.command.index("-c") + 1])
        assert conf.is_file()
        assert "127.0.0.1:8103" in conf.read_text()
        assert spec.command[-2:] == ("-g", "daemon off;")
        checked = subprocess.run(
            [*spec.command[:-2], "-t"], capture_output=True, text=True, timeout=30, check=False
        )
        assert checked.returncode == 0, checked.stderr


class TestRestartBackoff:
    def test_doubles_up_to_the_cap_and_resets(self) -> None:
        backoff = RestartBackoff(1.0, 30.0)
        assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
        backoff.reset()
        assert backoff.next_delay() == 1


# --------------------------------------------------------------------------- the supervisor


class TestSupervisor:
    async def test_start_returns_once_every_process_answers(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        slow, fast = _free_port(), _free_port()
        supervisor = supervisor_factory(
            [_server_spec("slow", slow, delay=1.0), _server_spec("fast", fast)]
        )
        began = time.monotonic()
        await supervisor.start()
        assert time.monotonic() - began >= 1.0
        assert _answers(f"http://127.0.0.1:{slow}/")
        assert _answers(f"http://127.0.0.1:{fast}/")
        assert supervisor.is_ready("slow")
        assert supervisor.is_ready("fast")
        await supervisor.stop()

    async def test_a_stage_starts_only_when_the_previous_one_is_ready(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        first, second = _free_port(), _free_port()
        # the second process refuses to run unless the first already answers
        needs_first = textwrap.dedent(
            f"""
            import socket, sys
            try:
                socket.create_connection(("127.0.0.1", {first}), timeout=1).close()
            except OSError:
                sys.exit("started before its dependency was ready")
            exec({_http_server(second)!r})
            """
        )
        dependent = ProcessSpec(
            name="dependent",
            command=(PYTHON, "-c", needs_first),
            ready_url=f"http://127.0.0.1:{second}/",
            stage=1,
        )
        supervisor = supervisor_factory([dependent, _server_spec("first", first, delay=0.8)])
        await supervisor.start()
        assert supervisor.specs[0].name == "first"
        assert _answers(f"http://127.0.0.1:{second}/")
        await supervisor.stop()

    async def test_output_goes_to_the_log_and_prefixed_to_the_terminal(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        port = _free_port()
        stream = io.StringIO()
        supervisor = supervisor_factory(
            [_server_spec("web", port)], console=Console(stream, mirror=True)
        )
        await supervisor.start()
        await supervisor.stop()
        log = supervisor.log_path("web").read_text()
        assert "fake serving" in log
        assert any(
            line.startswith("web") and line.endswith("| fake serving")
            for line in stream.getvalue().splitlines()
        )

    async def test_quiet_keeps_the_terminal_clean_but_still_logs(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        port = _free_port()
        console, stream = _quiet()
        supervisor = supervisor_factory([_server_spec("web", port)], console=console)
        await supervisor.start()
        await supervisor.stop()
        assert "fake serving" not in stream.getvalue()
        assert "fake serving" in supervisor.log_path("web").read_text()

    async def test_a_killed_process_is_restarted_with_a_log_line(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        port = _free_port()
        console, stream = _quiet()
        supervisor = supervisor_factory([_server_spec("web", port)], console=console)
        await supervisor.start()
        first_pid = supervisor.pid("web")
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)

        def restarted() -> bool:
            pid = supervisor.pid("web")
            return pid not in (None, first_pid) and _answers(f"http://127.0.0.1:{port}/")

        await wait_until(restarted, what="web restarted and answering", timeout=10)
        assert supervisor.restart_count("web") == 1
        messages = stream.getvalue()
        assert "web exited unexpectedly (killed by SIGKILL)" in messages
        assert "restarting in 0.1 s" in messages
        await wait_until(
            lambda: "web is ready again" in stream.getvalue(), what="ready announced", timeout=5
        )
        await supervisor.stop()
        assert not process_alive(first_pid)

    async def test_restart_delays_grow_while_a_process_keeps_crashing(
        self, supervisor_factory: SupervisorFactory, tmp_path: Path
    ) -> None:
        # serves once, then every later start crashes at once
        marker = tmp_path / "served-once"
        port = _free_port()
        flaky = textwrap.dedent(
            f"""
            import pathlib, sys
            marker = pathlib.Path({str(marker)!r})
            if marker.exists():
                sys.exit(3)
            marker.touch()
            exec({_http_server(port)!r})
            """
        )
        console, stream = _quiet()
        supervisor = supervisor_factory(
            [ProcessSpec("flaky", (PYTHON, "-c", flaky), ready_url=f"http://127.0.0.1:{port}/")],
            console=console,
            backoff_initial=0.1,
            backoff_max=0.4,
        )
        await supervisor.start()
        pid = supervisor.pid("flaky")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_until(
            lambda: supervisor.restart_count("flaky") >= 4, what="four restarts", timeout=15
        )
        await supervisor.stop()
        delays = [
            line.rsplit("restarting in ", 1)[1]
            for line in stream.getvalue().splitlines()
            if "restarting in" in line
        ]
        assert delays[:4] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s"]
        assert "(exit code 3)" in stream.getvalue()

    async def test_stop_leaves_no_process_and_frees_the_ports(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        ports = [_free_port(), _free_port(), _free_port()]
        supervisor = supervisor_factory(
            [_server_spec(f"web{i}", port, stage=i) for i, port in enumerate(ports)]
        )
        await supervisor.start()
        pids = [supervisor.pid(f"web{i}") for i in range(3)]
        assert all(pid is not None for pid in pids)
        await supervisor.stop()
        for pid in pids:
            assert pid is not None
            assert not process_alive(pid)
        for port in ports:
            assert _port_is_free(port)
        assert all(supervisor.pid(f"web{i}") is None for i in range(3))

    async def test_a_process_ignoring_sigterm_is_killed_after_the_grace(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        port = _free_port()
        console, stream = _quiet()
        supervisor = supervisor_factory(
            [_server_spec("stubborn", port, ignore_sigterm=True)], console=console, stop_grace=1.0
        )
        await supervisor.start()
        pid = supervisor.pid("stubborn")
        assert pid is not None
        began = time.monotonic()
        await supervisor.stop()
        took = time.monotonic() - began
        assert 1.0 <= took < 5.0
        assert not process_alive(pid)
        assert _port_is_free(port)
        assert "stubborn still running 1 s after SIGTERM: SIGKILL" in stream.getvalue()

    async def test_grandchildren_in_the_group_die_too(
        self, supervisor_factory: SupervisorFactory, tmp_path: Path
    ) -> None:
        port = _free_port()
        pid_file = tmp_path / "grandchild.pid"
        # the grandchild shrugs off SIGTERM; the child exits on it at once
        parent = textwrap.dedent(
            f"""
            import pathlib, subprocess, sys
            grandchild = subprocess.Popen([sys.executable, "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "time.sleep(600)"])
            pathlib.Path({str(pid_file)!r}).write_text(str(grandchild.pid))
            exec({_http_server(port)!r})
            """
        )
        supervisor = supervisor_factory(
            [ProcessSpec("parent", (PYTHON, "-c", parent), ready_url=f"http://127.0.0.1:{port}/")],
            stop_grace=1.5,
        )
        await supervisor.start()
        grandchild = int(pid_file.read_text())
        assert process_alive(grandchild)
        await supervisor.stop()
        assert not process_alive(grandchild)

    async def test_a_process_that_never_becomes_ready_fails_start_with_its_log(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        never = _free_port()
        silent = ProcessSpec(
            name="silent",
            command=(
                PYTHON,
                "-c",
                "import time; print('listening soon, promise', flush=True); time.sleep(600)",
            ),
            ready_url=f"http://127.0.0.1:{never}/health/ready",
        )
        supervisor = supervisor_factory([silent], ready_timeout=1.5)
        with pytest.raises(StartupError) as failure:
            await supervisor.start()
        assert failure.value.name == "silent"
        assert "was not ready within 1.5 s" in str(failure.value)
        assert "listening soon, promise" in failure.value.log_tail
        pid = supervisor.pid("silent")
        assert pid is not None
        await supervisor.stop()
        assert not process_alive(pid)

    async def test_a_process_that_exits_during_startup_fails_at_once(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        crash = ProcessSpec(
            name="crash",
            command=(PYTHON, "-c", "import sys; print('bad config: no database'); sys.exit(3)"),
            ready_url=f"http://127.0.0.1:{_free_port()}/",
        )
        supervisor = supervisor_factory([crash], ready_timeout=30)
        began = time.monotonic()
        with pytest.raises(StartupError) as failure:
            await supervisor.start()
        assert time.monotonic() - began < 10
        assert "exited before it was ready (exit code 3)" in str(failure.value)
        assert "bad config: no database" in failure.value.log_tail
        assert supervisor.restart_count("crash") == 0
        await supervisor.stop()

    async def test_a_missing_program_fails_start_clearly(
        self, supervisor_factory: SupervisorFactory
    ) -> None:
        supervisor = supervisor_factory([ProcessSpec("ghost", ("/nonexistent/program",))])
        with pytest.raises(StartupError, match="ghost could not be started"):
            await supervisor.start()
        await supervisor.stop()


# --------------------------------------------------------------------------- the command


def _launcher_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.endswith("_INSTANCES")}
    env.update({"RUN_DIR": str(tmp_path / "run"), "LAUNCHER_QUIET": "1"})
    env.update(overrides)
    return env


class TestLauncherCommand:
    def test_an_unreachable_server_is_named_and_the_exit_is_non_zero(self, tmp_path: Path) -> None:
        env = _launcher_env(tmp_path, POSTGRES_URL="postgresql+asyncpg://postgres@127.0.0.1:1")
        result = subprocess.run(
            [PYTHON, "-m", "svctools.launcher"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "PostgreSQL is not reachable at 127.0.0.1:1" in result.stderr
        assert "POSTGRES_URL" in result.stderr

    def test_a_refused_broker_is_named_without_its_password(self, tmp_path: Path) -> None:
        env = _launcher_env(tmp_path, AMQP_URL="amqp://app:hunter2@127.0.0.1:1/")
        result = subprocess.run(
            [PYTHON, "-m", "svctools.launcher"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert "RabbitMQ is not reachable at 127.0.0.1:1" in result.stderr
        assert "amqp://app:***@127.0.0.1:1/" in result.stderr
        assert "hunter2" not in result.stderr

    def test_an_impossible_configuration_exits_2(self, tmp_path: Path) -> None:
        env = _launcher_env(tmp_path, ORDERS_INSTANCES="lots")
        result = subprocess.run(
            [PYTHON, "-m", "svctools.launcher"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert "ORDERS_INSTANCES must be an integer" in result.stderr


# A stand-in for each service package: `cli migrate` records what it was given, the app
# answers every path with who it is. Found first through PYTHONPATH.
_FAKE_CLI = """
import json, os, pathlib, sys
if __name__ == "__main__":
    assert sys.argv[1:] == ["migrate"], sys.argv
    out = pathlib.Path(os.environ["FAKE_OUT"]) / "migrated-{package}.json"
    out.write_text(json.dumps({{k: v for k, v in os.environ.items() if k.startswith("{prefix}")}}))
    print("{package}: migrated")
"""

_FAKE_MAIN = """
import json, os, time

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    body = json.dumps({{
        "package": "{package}",
        "path": scope["path"],
        "port": os.environ["{prefix}PORT"],
        "pid": os.getpid(),
        "exchange": os.environ["{prefix}EVENTS_EXCHANGE"],
    }}).encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]}})
    await send({{"type": "http.response.body", "body": body}})

def create_app():
    if os.environ.get("FAKE_HANG") == "{package}":
        time.sleep(600)
    return app
"""


@pytest.fixture
def fake_services(tmp_path: Path) -> Path:
    """A PYTHONPATH directory holding the five fake service packages."""
    root = tmp_path / "fakes"
    for package, prefix in SERVICE_PACKAGES.values():
        directory = root / package
        directory.mkdir(parents=True)
        (directory / "__init__.py").write_text("")
        (directory / "cli.py").write_text(_FAKE_CLI.format(package=package, prefix=prefix))
        (directory / "main.py").write_text(_FAKE_MAIN.format(package=package, prefix=prefix))
    return root


@contextlib.contextmanager
def _fake_infrastructure() -> Iterator[int]:
    """One TCP listener standing in for PostgreSQL, Redis and RabbitMQ (the check is TCP)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


class _RunningLauncher:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.output.append(raw.decode(errors="replace"))

    @property
    def text(self) -> str:
        return "".join(self.output)

    async def wait_for(self, needle: str, *, within: float) -> None:
        deadline = time.monotonic() + within
        while needle not in self.text:
            if self.process.returncode is not None or time.monotonic() > deadline:
                await asyncio.sleep(0.2)
                pytest.fail(f"launcher never printed {needle!r}:\n{self.text}")
            await asyncio.sleep(0.05)

    async def finish(self, *, within: float) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout=within)
        await asyncio.wait_for(self._reader, timeout=5)
        return code


Launch = Callable[..., Awaitable[tuple["_RunningLauncher", dict[str, int]]]]


@pytest.fixture
async def launch(tmp_path: Path, fake_services: Path) -> AsyncIterator[Launch]:
    """Start `python -m svctools.launcher` against fakes, on free ports, in a namespace."""
    started: list[_RunningLauncher] = []
    with _fake_infrastructure() as infra_port:
        taken: set[int] = set()

        async def start(**extra: str) -> tuple[_RunningLauncher, dict[str, int]]:
            ports = {
                "GATEWAY_PORT": _free_base_port(taken),
                "AUTH_PORT": _free_base_port(taken),
                "USERS_PORT": _free_base_port(taken),
                "ORDERS_PORT": _free_base_port(taken),
                "PAYMENTS_PORT": _free_base_port(taken),
                "NOTIFICATIONS_PORT": _free_base_port(taken),
                "SIMULATOR_PORT": _free_base_port(taken),
                "SMTP_SINK_PORT": _free_base_port(taken),
                "SMTP_SINK_HTTP_PORT": _free_base_port(taken),
            }
            env = _launcher_env(
                tmp_path,
                SYSTEM_NAMESPACE="launchertest",
                POSTGRES_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{infra_port}",
                REDIS_URL=f"redis://127.0.0.1:{infra_port}/0",
                AMQP_URL=f"amqp://guest:guest@127.0.0.1:{infra_port}/",
                PYTHONPATH=os.pathsep.join([str(fake_services), os.environ.get("PYTHONPATH", "")]),
                FAKE_OUT=str(tmp_path),
                **{key: str(value) for key, value in ports.items()},
                **extra,
            )
            process = await asyncio.create_subprocess_exec(
                PYTHON,
                "-m",
                "svctools.launcher",
                "--quiet",
                "--stop-grace",
                "10",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            running = _RunningLauncher(process)
            started.append(running)
            return running, ports

        yield start
        for running in started:
            if running.process.returncode is None:
                running.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await running.finish(within=30)


async def _get_json(url: str) -> dict[str, object]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url, timeout=5)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert isinstance(payload, dict)
    return payload


class TestLauncherEndToEnd:
    async def test_runs_the_system_restarts_the_dead_and_stops_on_sigterm(
        self, launch: Launch, tmp_path: Path
    ) -> None:
        launcher, ports = await launch(ORDERS_INSTANCES="2")
        await launcher.wait_for("The system is up", within=60)
        gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        orders_port = ports["ORDERS_PORT"]
        assert f"http://127.0.0.1:{orders_port + 100}" in launcher.text
        assert "orders-2.log" in launcher.text

        # migrated once per service, with the namespaced database and exchange
        migrated = json.loads((tmp_path / "migrated-orders_service.json").read_text())
        assert migrated["ORDERS_DATABASE_URL"].endswith("/orders_launchertest")
        assert migrated["ORDERS_EVENTS_EXCHANGE"] == "launchertest.events"

        # the gateway balances across both orders instances
        seen: dict[str, int] = {}
        for _ in range(6):
            answer = await _get_json(f"{gateway}/orders/123")
            assert answer["package"] == "orders_service"
            seen[str(answer["port"])] = int(str(answer["pid"]))
        assert set(seen) == {str(orders_port), str(orders_port + 100)}
        assert (await _get_json(f"{gateway}/payments/x"))["package"] == "payments_gateway"
        simulator = f"http://127.0.0.1:{ports['SIMULATOR_PORT']}/healthz"
        assert (await _get_json(simulator))["status"] == "ok"

        # a killed instance comes back
        victim = seen[str(orders_port + 100)]
        os.kill(victim, signal.SIGKILL)
        await launcher.wait_for("orders-2 exited unexpectedly (killed by SIGKILL)", within=10)
        await launcher.wait_for("orders-2 is ready again", within=20)
        again = await _get_json(f"http://127.0.0.1:{orders_port + 100}/health/ready")
        assert again["pid"] != victim
        pids = [*seen.values(), int(str(again["pid"]))]

        launcher.process.send_signal(signal.SIGTERM)
        assert await launcher.finish(within=40) == 0
        assert "SIGTERM received: stopping everything" in launcher.text
        for pid in pids:
            assert not process_alive(pid)
        for name, port in ports.items():
            assert _port_is_free(port), f"{name} {port} still bound"
        assert _port_is_free(orders_port + 100)
        assert (tmp_path / "run" / "logs" / "orders-2.log").is_file()

    async def test_ctrl_c_during_the_run_stops_everything_and_exits_0(self, launch: Launch) -> None:
        launcher, ports = await launch()
        await launcher.wait_for("The system is up", within=60)
        users = await _get_json(f"http://127.0.0.1:{ports['USERS_PORT']}/health/ready")
        launcher.process.send_signal(signal.SIGINT)
        assert await launcher.finish(within=40) == 0
        assert not process_alive(int(str(users["pid"])))
        for name, port in ports.items():
            assert _port_is_free(port), f"{name} {port} still bound"

    async def test_a_stop_while_starting_leaves_nothing_behind(
        self, launch: Launch, tmp_path: Path
    ) -> None:
        launcher, ports = await launch(FAKE_HANG="notifications_service")
        await launcher.wait_for("starting 8 processes", within=60)
        users_port = ports["USERS_PORT"]
        await wait_until(
            lambda: _answers(f"http://127.0.0.1:{users_port}/health/ready"),
            what="users answering while notifications hangs",
            timeout=30,
        )
        users = await _get_json(f"http://127.0.0.1:{users_port}/health/ready")
        launcher.process.send_signal(signal.SIGTERM)
        assert await launcher.finish(within=40) == 0
        assert "The system is up" not in launcher.text
        assert not process_alive(int(str(users["pid"])))
        for name, port in ports.items():
            assert _port_is_free(port), f"{name} {port} still bound"

    async def test_a_failing_migration_stops_the_start_with_its_output(
        self, launch: Launch, fake_services: Path
    ) -> None:
        (fake_services / "users_service" / "cli.py").write_text(
            "import sys\nprint('users: cannot reach the database')\nsys.exit(4)\n"
        )
        launcher, _ = await launch()
        assert await launcher.finish(within=60) == 1
        assert "users-migrate failed (exit code 4)" in launcher.text
        assert "users: cannot reach the database" in launcher.text
        assert "The system is up" not in launcher.text
