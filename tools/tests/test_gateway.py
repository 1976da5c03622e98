"""The gateway configuration, exercised through a real nginx in front of echo backends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from svctools import gateway
from svctools.ports import is_free

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SERVICES = tuple(gateway.ROUTES)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def echo_app(instance: str) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(request: Request, path: str) -> JSONResponse:
        body = await request.body()
        request_id = request.headers.get("x-request-id")
        return JSONResponse(
            {
                "instance": instance,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "request_id": request_id,
                "forwarded_for": request.headers.get("x-forwarded-for"),
                "real_ip": request.headers.get("x-real-ip"),
                "forwarded_proto": request.headers.get("x-forwarded-proto"),
                "body_length": len(body),
            },
            # Services echo the id too; the gateway must not duplicate the header.
            headers={"X-Request-ID": request_id or "missing"},
        )

    return app


@dataclass
class Backend:
    name: str
    address: str
    server: uvicorn.Server
    thread: threading.Thread


@contextmanager
def echo_backend(name: str) -> Iterator[Backend]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(echo_app(name), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError(f"backend {name} did not start")
        time.sleep(0.01)
    try:
        yield Backend(name=name, address=f"127.0.0.1:{port}", server=server, thread=thread)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def request_dropper() -> Iterator[str]:
    """An upstream that reads a request and closes the connection without answering."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                with suppress(OSError):
                    conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def dead_address() -> str:
    """An address nothing listens on: connections are refused."""
    return f"127.0.0.1:{free_port()}"


@dataclass
class Gateway:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    runtime_dir: Path

    def worker_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def access_log(self) -> list[dict[str, object]]:
        path = self.runtime_dir / "logs" / "access.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line]


def stop_nginx(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_nginx(
    runtime_dir: Path,
    upstreams: Mapping[str, Sequence[str]],
    *,
    rate_per_second: int,
    burst: int,
    max_body: str,
) -> Gateway:
    """Start nginx on a free port; retry on another port if that one was taken meanwhile."""
    for _attempt in range(3):
        port = free_port()
        conf = gateway.write_nginx_conf(
            listen=port,
            upstreams=upstreams,
            runtime_dir=runtime_dir,
            rate_per_second=rate_per_second,
            burst=burst,
            max_body=max_body,
        )
        with (runtime_dir / "nginx.out").open("ab") as output:
            process = subprocess.Popen(
                gateway.nginx_command(conf=conf, runtime_dir=conf.parent, nginx=NGINX),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        running = Gateway(f"http://127.0.0.1:{port}", port, process, conf.parent)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            with suppress(httpx.TransportError):
                if httpx.get(f"{running.url}/healthz", timeout=1).status_code == 200:
                    return running
            time.sleep(0.05)
        stop_nginx(process)
        log = (runtime_dir / "logs" / "error.log").read_text(errors="replace")
        if "Address already in use" not in log:
            raise RuntimeError(f"nginx did not start ({process.returncode}): {log}")
    raise RuntimeError("no free port for nginx")


@contextmanager
def running_gateway(
    runtime_dir: Path,
    upstreams: Mapping[str, Sequence[str]],
    *,
    rate_per_second: int = 1000,
    burst: int = 1000,
    max_body: str = "64k",
) -> Iterator[Gateway]:
    running = start_nginx(
        runtime_dir, upstreams, rate_per_second=rate_per_second, burst=burst, max_body=max_body
    )
    workers = running.worker_pids()
    try:
        yield running
    finally:
        stop_nginx(running.process)
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists(), f"nginx worker {pid} outlived its master"


def error_of(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, str] = body["error"]
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


Backends = dict[str, list[Backend]]


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    """Two echo instances per service, named after it (``orders-1``, ``orders-2``)."""
    with ExitStack() as stack:
        yield {
            name: [stack.enter_context(echo_backend(f"{name}-{i}")) for i in (1, 2)]
            for name in SERVICES
        }


def single_instance(backends: Backends) -> dict[str, list[str]]:
    return {name: [instances[0].address] for name, instances in backends.items()}


@pytest.fixture(scope="module")
def gw(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstreams = {name: [b.address for b in instances] for name, instances in backends.items()}
    with running_gateway(tmp_path_factory.mktemp("gateway"), upstreams) as running:
        yield running


@pytest.fixture
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        yield http


class TestRouting:
    @pytest.mark.parametrize(
        ("path", "service"),
        [
            ("/auth", "auth"),
            ("/auth/login", "auth"),
            ("/auth/openapi.json", "auth"),
            ("/.well-known/jwks.json", "auth"),
            ("/users", "users"),
            ("/users/me", "users"),
            ("/orders", "orders"),
            ("/orders/0b3c2d5e-4c1f-4e1a-9f59-2f1f0c8f7e11/cancel", "orders"),
            ("/orders/docs", "orders"),
            ("/payments", "payments-gateway"),
            ("/payments/webhooks/provider", "payments-gateway"),
            ("/payments/openapi.json", "payments-gateway"),
            ("/notifications", "notifications"),
            ("/notifications/openapi.json", "notifications"),
        ],
    )
    def test_each_prefix_reaches_its_service_unchanged(
        self, client: httpx.Client, path: str, service: str
    ) -> None:
        response = client.get(path, params={"limit": "5"})

        assert response.status_code == 200
        echoed = response.json()
        assert echoed["instance"] in {f"{service}-1", f"{service}-2"}
        assert echoed["path"] == path
        assert echoed["query"] == "limit=5"
        assert echoed["method"] == "GET"

    def test_post_body_under_the_limit_is_proxied(self, client: httpx.Client) -> None:
        response = client.post("/orders", content=b"x" * 10_000)

        assert response.status_code == 200
        assert response.json()["method"] == "POST"
        assert response.json()["body_length"] == 10_000

    @pytest.mark.parametrize(
        "path",
        [
            "/",
            "/nope",
            "/authx",
            "/orders-admin",
            "/health/ready",
            "/health/live",
            "/metrics",
            "/openapi.json",
            "/.well-known/other",
        ],
    )
    def test_unrouted_paths_are_json_404(self, client: httpx.Client, path: str) -> None:
        response = client.get(path)

        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"

    def test_healthz(self, client: httpx.Client) -> None:
        response = client.get("/healthz")

        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert response.headers["content-type"].startswith("application/json")

    def test_both_instances_receive_requests(self, client: httpx.Client) -> None:
        seen = {client.get("/users/me").json()["instance"] for _ in range(12)}

        assert seen == {"users-1", "users-2"}


class TestRequestHeaders:
    def test_client_request_id_is_passed_through_and_echoed(self, client: httpx.Client) -> None:
        response = client.get("/orders", headers={"X-Request-ID": "client-id-123"})

        assert response.json()["request_id"] == "client-id-123"
        assert response.headers.get_list("x-request-id") == ["client-id-123"]

    def test_missing_request_id_is_generated_once_for_backend_and_client(
        self, client: httpx.Client
    ) -> None:
        first = client.get("/orders")
        second = client.get("/orders")

        generated = first.headers.get_list("x-request-id")
        assert len(generated) == 1
        assert len(generated[0]) == 32
        assert first.json()["request_id"] == generated[0]
        assert second.headers["x-request-id"] != generated[0]

    def test_unsafe_request_id_is_replaced(self, client: httpx.Client) -> None:
        response = client.get("/nowhere", headers={"X-Request-ID": 'bad"id'})

        assert response.headers["x-request-id"] != 'bad"id'
        assert error_of(response)["code"] == "not_found"

    def test_forwarded_headers_carry_the_client_address(self, client: httpx.Client) -> None:
        response = client.get("/users/me", headers={"X-Forwarded-For": "203.0.113.9"})

        echoed = response.json()
        assert echoed["forwarded_for"] == "127.0.0.1"
        assert echoed["real_ip"] == "127.0.0.1"
        assert echoed["forwarded_proto"] == "http"

    def test_access_log_is_json_with_request_id_and_upstream(
        self, gw: Gateway, backends: Backends, client: httpx.Client
    ) -> None:
        client.get("/payments/abc", headers={"X-Request-ID": "logged-request"})

        deadline = time.monotonic() + 5
        while True:
            entries = [e for e in gw.access_log() if e["request_id"] == "logged-request"]
            if entries or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(entries) == 1
        entry = entries[0]
        assert entry["status"] == 200
        assert entry["path"] == "/payments/abc"
        assert entry["upstream_addr"] in {b.address for b in backends["payments-gateway"]}
        assert isinstance(entry["request_time"], float | int)


class TestLimits:
    def test_body_over_the_limit_is_json_413(self, client: httpx.Client) -> None:
        response = client.post(
            "/orders", content=b"x" * 100_000, headers={"X-Request-ID": "too-big"}
        )

        assert response.status_code == 413
        error = error_of(response)
        assert error["code"] == "payload_too_large"
        assert error["request_id"] == "too-big"

    def test_burst_past_the_rate_limit_is_json_429_with_retry_after(
        self, backends: Backends, tmp_path: Path
    ) -> None:
        upstreams = single_instance(backends)
        with (
            running_gateway(tmp_path, upstreams, rate_per_second=1, burst=2) as limited,
            httpx.Client(base_url=limited.url, timeout=10) as http,
        ):
            responses = [http.get("/orders") for _ in range(10)]
            healthz = http.get("/healthz")

        statuses = [r.status_code for r in responses]
        assert statuses.count(200) >= 1
        rejected = [r for r in responses if r.status_code == 429]
        assert len(rejected) >= 5
        for response in rejected:
            assert response.headers["retry-after"] == "1"
            assert error_of(response)["code"] == "too_many_requests"
        assert healthz.status_code == 200


class TestUpstreamFailures:
    def test_dead_upstream_is_json_502(self, backends: Backends, tmp_path: Path) -> None:
        upstreams = single_instance(backends)
        upstreams["payments-gateway"] = [dead_address()]
        with (
            running_gateway(tmp_path, upstreams) as running,
            httpx.Client(base_url=running.url, timeout=10) as http,
        ):
            failed = http.get("/payments/p1", headers={"X-Request-ID": "dead-upstream"})
            healthy = http.get("/orders/o1")

        assert failed.status_code == 502
        error = error_of(failed)
        assert error["code"] == "bad_gateway"
        assert error["request_id"] == "dead-upstream"
        assert healthy.status_code == 200

    def test_refused_connections_fail_over_to_a_live_instance(
        self, backends: Backends, tmp_path: Path
    ) -> None:
        upstreams = {name: [dead_address(), backends[name][0].address] for name in SERVICES}
        with (
            running_gateway(tmp_path, upstreams) as running,
            httpx.Client(base_url=running.url, timeout=10) as http,
        ):
            responses = [http.post("/orders", content=b"{}") for _ in range(4)]

        assert [r.status_code for r in responses] == [200] * 4

    def test_a_request_already_sent_is_retried_only_when_idempotent(
        self, backends: Backends, tmp_path: Path
    ) -> None:
        with request_dropper() as dropper:
            upstreams = {name: [dropper, backends[name][0].address] for name in SERVICES}
            with (
                running_gateway(tmp_path, upstreams) as running,
                httpx.Client(base_url=running.url, timeout=10) as http,
            ):
                # Each worker's first pick is the first server: the dropper.
                post = http.post("/orders", content=b"{}")
                gets = [http.get("/orders/o1") for _ in range(4)]

        assert post.status_code == 502
        assert error_of(post)["code"] == "bad_gateway"
        assert [r.status_code for r in gets] == [200] * 4


class TestLifecycle:
    def test_nginx_stops_and_frees_its_port(self, backends: Backends, tmp_path: Path) -> None:
        upstreams = single_instance(backends)
        with running_gateway(tmp_path, upstreams) as running:
            workers = running.worker_pids()
            assert workers
            assert not is_free(running.port)
            stop_nginx(running.process)

        assert running.process.returncode is not None
        assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
        assert is_free(running.port)
        assert not (tmp_path / "nginx.pid").exists()


class TestRendering:
    def test_committed_renderings_are_up_to_date(self) -> None:
        stale = gateway.stale_renderings()

        assert stale == [], f"re-render with `python -m svctools.gateway render-deploy`: {stale}"

    def test_limits_come_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("GATEWAY_RATE_PER_SECOND", "7")
        monkeypatch.setenv("GATEWAY_BURST", "9")
        monkeypatch.setenv("GATEWAY_MAX_BODY", "2m")

        conf = gateway.write_nginx_conf(
            listen=1, upstreams=gateway.local_upstreams({}), runtime_dir=tmp_path
        ).read_text()

        assert "rate=7r/s;" in conf
        assert "burst=9 nodelay;" in conf
        assert "client_max_body_size 2m;" in conf

    def test_explicit_limits_win_over_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("GATEWAY_RATE_PER_SECOND", "not-a-number")

        conf = gateway.write_nginx_conf(
            listen=1,
            upstreams=gateway.local_upstreams({}),
            runtime_dir=tmp_path,
            rate_per_second=5,
            burst=6,
            max_body="3m",
        ).read_text()

        assert "rate=5r/s;" in conf
        assert "burst=6 nodelay;" in conf
        assert "client_max_body_size 3m;" in conf

    @pytest.mark.parametrize(
        ("name", "value"),
        [("GATEWAY_RATE_PER_SECOND", "fast"), ("GATEWAY_BURST", "-1"), ("GATEWAY_MAX_BODY", "1 m")],
    )
    def test_invalid_limits_are_refused(self, name: str, value: str) -> None:
        with pytest.raises(ValueError, match="GATEWAY_"):
            gateway.limits_from_env({name: value})

    def test_every_service_needs_an_upstream(self) -> None:
        upstreams = gateway.local_upstreams({})
        del upstreams["orders"]

        with pytest.raises(ValueError, match="orders"):
            gateway.render_nginx_conf(listen=1, upstreams=upstreams, runtime_dir=Path("/x"))

    def test_local_upstreams_follow_service_port_variables(self) -> None:
        upstreams = gateway.local_upstreams({"ORDERS_PORT": "9103"})

        assert upstreams["orders"] == ["127.0.0.1:9103"]
        assert upstreams["auth"] == ["127.0.0.1:8001"]

    def test_compose_rendering_re_resolves_service_names(self) -> None:
        conf = gateway.render_compose_conf()

        assert "resolver 127.0.0.11" in conf
        assert "server orders:8003 resolve max_fails=3" in conf
        assert "user " not in conf

    def test_user_directive_only_when_running_as_root(self, tmp_path: Path) -> None:
        conf = gateway.write_nginx_conf(
            listen=1, upstreams=gateway.local_upstreams({}), runtime_dir=tmp_path
        ).read_text()

        assert ("\nuser " in conf) == (os.geteuid() == 0)
