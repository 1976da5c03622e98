"""The API gateway: renders the nginx configuration for local runs, docker compose and Kubernetes.

One renderer produces every variant; the compose and Kubernetes renderings are committed under
``deploy/`` and regenerated with ``python -m svctools.gateway render-deploy`` (``--check`` fails
when a committed file is stale).
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPOSE_CONF = REPO_ROOT / "deploy" / "nginx" / "nginx.compose.conf"
K8S_CONF = REPO_ROOT / "deploy" / "k8s" / "base" / "gateway" / "nginx.conf"

DEFAULT_LISTEN = 8080
DEFAULT_RATE_PER_SECOND = 20
DEFAULT_BURST = 40
DEFAULT_MAX_BODY = "1m"


@dataclass(frozen=True)
class Route:
    """The paths one service answers through the gateway."""

    prefixes: tuple[str, ...]
    exact: tuple[str, ...] = ()


ROUTES: Mapping[str, Route] = {
    "auth": Route(prefixes=("/auth",), exact=("/.well-known/jwks.json",)),
    "users": Route(prefixes=("/users",)),
    "orders": Route(prefixes=("/orders",)),
    "payments-gateway": Route(prefixes=("/payments",)),
    "notifications": Route(prefixes=("/notifications",)),
}

SERVICE_PORTS: Mapping[str, int] = {
    "auth": 8001,
    "users": 8002,
    "orders": 8003,
    "payments-gateway": 8004,
    "notifications": 8005,
}

SERVICE_ENV_PREFIXES: Mapping[str, str] = {
    "auth": "AUTH_",
    "users": "USERS_",
    "orders": "ORDERS_",
    "payments-gateway": "PAYMENTS_",
    "notifications": "NOTIFICATIONS_",
}

# Docker's embedded DNS server, reachable from every container on a user-defined network.
COMPOSE_RESOLVER = "127.0.0.11"

# A client-supplied request id is passed through only when it is safe to embed verbatim in a
# JSON string and a log line; anything else is replaced by nginx's own $request_id.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_MAX_BODY_PATTERN = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")

_ERRORS: Mapping[int, tuple[str, str]] = {
    400: ("bad_request", "The request could not be parsed."),
    404: ("not_found", "No route for this path."),
    413: ("payload_too_large", "The request body is larger than the gateway accepts."),
    414: ("uri_too_long", "The request URI is too long."),
    # nginx's own code for a header line or the headers as a whole over its buffers; without a
    # page of its own it answers an HTML 400. Sent as a 400 like the rest of the malformed input.
    494: ("headers_too_large", "The request headers are too large."),
    429: ("too_many_requests", "Too many requests from this client; retry later."),
    500: ("internal_error", "The gateway failed to handle the request."),
    502: ("bad_gateway", "The service behind this path is unreachable."),
    503: ("service_unavailable", "The service behind this path is unavailable."),
    504: ("gateway_timeout", "The service behind this path did not answer in time."),
}

_ACCESS_LOG_FIELDS: tuple[tuple[str, str], ...] = (
    ("time", "$time_iso8601"),
    ("request_id", "$gateway_request_id"),
    ("remote_addr", "$remote_addr"),
    ("method", "$request_method"),
    ("path", "$uri"),
    ("status", "$status"),
    ("body_bytes_sent", "$body_bytes_sent"),
    ("request_time", "$request_time"),
    ("upstream_addr", "$upstream_addr"),
    ("upstream_status", "$upstream_status"),
    ("upstream_response_time", "$upstream_response_time"),
    ("user_agent", "$http_user_agent"),
)


def _error_body(code: int, *, message: str | None = None) -> str:
    name, default_message = _ERRORS[code]
    text = message or default_message
    return (
        '{"error": {"code": "' + name + '", "message": "' + text + '", '
        '"request_id": "$gateway_request_id"}}'
    )


def _upstream_block(name: str, servers: Sequence[str], *, resolve: bool) -> list[str]:
    if not servers:
        raise ValueError(f"upstream {name!r} has no servers")
    server_options = "max_fails=3 fail_timeout=10s"
    if resolve:
        server_options = f"resolve {server_options}"
    return [
        f"    upstream {name} {{",
        f"        zone upstream_{name.replace('-', '_')} 64k;",
        *(f"        server {server} {server_options};" for server in servers),
        "        keepalive 32;",
        # Recycling kept-alive connections lets newly scaled instances receive traffic.
        "        keepalive_time 1m;",
        "        keepalive_timeout 60s;",
        "    }",
    ]


def _proxy_location(match: str, upstream: str, *, burst: int) -> list[str]:
    return [
        f"        location {match} {{",
        f"            limit_req zone=per_client burst={burst} nodelay;",
        f"            proxy_pass http://{upstream};",
        "        }",
    ]


def _error_locations(*, max_body: str) -> list[str]:
    lines: list[str] = []
    for code, (name, _) in _ERRORS.items():
        message = f"The request body is larger than {max_body}." if code == 413 else None
        lines.append(f"        location @{name} {{")
        if code == 429:
            # A location with its own add_header inherits none from the server level.
            lines.append("            add_header X-Request-ID $gateway_request_id always;")
            lines.append("            add_header Retry-After 1 always;")
        status = 400 if code == 494 else code
        lines.append(f"            return {status} '{_error_body(code, message=message)}';")
        lines.append("        }")
    return lines


def render_nginx_conf(
    *,
    listen: int,
    upstreams: Mapping[str, Sequence[str]],
    runtime_dir: Path,
    rate_per_second: int = DEFAULT_RATE_PER_SECOND,
    burst: int = DEFAULT_BURST,
    max_body: str = DEFAULT_MAX_BODY,
    access_log: Path | None = None,
    error_log: Path | None = None,
    user: str | None = None,
    resolver: str | None = None,
    worker_processes: int | str = "auto",
) -> str:
    """Render the gateway's nginx.conf.

    ``upstreams`` maps each service name of ``ROUTES`` to its ``host:port`` instances.
    Logs default to ``runtime_dir/logs``. ``user`` is only meaningful when the master runs as
    root. ``resolver`` makes nginx re-resolve upstream host names (needs nginx >= 1.27.3), so
    instances added by scaling receive traffic without a reload.
    """
    missing = sorted(set(ROUTES) - set(upstreams))
    unknown = sorted(set(upstreams) - set(ROUTES))
    if missing or unknown:
        raise ValueError(
            f"upstreams must name exactly {sorted(ROUTES)}: missing {missing}, unknown {unknown}"
        )
    if rate_per_second < 1 or burst < 0:
        raise ValueError("rate_per_second must be >= 1 and burst >= 0")
    if not _MAX_BODY_PATTERN.match(max_body):
        raise ValueError(f"max_body {max_body!r} is not an nginx size such as 512k or 1m")

    runtime_dir = Path(runtime_dir)
    access_log = access_log or runtime_dir / "logs" / "access.log"
    error_log = error_log or runtime_dir / "logs" / "error.log"
    log_format = ", ".join(
        f'"{key}": {value}'
        if key in {"status", "body_bytes_sent", "request_time"}
        else f'"{key}": "{value}"'
        for key, value in _ACCESS_LOG_FIELDS
    )

    lines: list[str] = [
        "# The API gateway. Rendered by svctools.gateway: change the renderer, not this file.",
    ]
    if user:
        lines.append(f"user {user};")
    lines += [
        f"worker_processes {worker_processes};",
        f"pid {runtime_dir / 'nginx.pid'};",
        f"error_log {error_log} warn;",
        "",
        "events {",
        "    worker_connections 1024;",
        "}",
        "",
        "http {",
        "    server_tokens off;",
        "    default_type application/json;",
        "",
        f"    client_body_temp_path {runtime_dir / 'client_body_temp'};",
        f"    proxy_temp_path {runtime_dir / 'proxy_temp'};",
        f"    fastcgi_temp_path {runtime_dir / 'fastcgi_temp'};",
        f"    uwsgi_temp_path {runtime_dir / 'uwsgi_temp'};",
        f"    scgi_temp_path {runtime_dir / 'scgi_temp'};",
        "",
        "    map $http_x_request_id $gateway_request_id {",
        f'        "~{REQUEST_ID_PATTERN}" $http_x_request_id;',
        "        default $request_id;",
        "    }",
        "",
        "    log_format gateway_json escape=json",
        f"        '{{{log_format}}}';",
        f"    access_log {access_log} gateway_json;",
        "",
        f"    limit_req_zone $binary_remote_addr zone=per_client:10m rate={rate_per_second}r/s;",
        "    limit_req_status 429;",
        "    limit_req_log_level warn;",
        "",
        f"    client_max_body_size {max_body};",
        "    client_header_timeout 10s;",
        "    client_body_timeout 30s;",
        "    send_timeout 30s;",
        "    keepalive_timeout 65s;",
    ]
    if resolver:
        lines += ["", f"    resolver {resolver} valid=10s ipv6=off;", "    resolver_timeout 5s;"]
    for name in ROUTES:
        lines += ["", *_upstream_block(name, upstreams[name], resolve=resolver is not None)]
    lines += [
        "",
        "    server {",
        f"        listen {listen};",
        "        server_name _;",
        "",
        "        add_header X-Request-ID $gateway_request_id always;",
        "        proxy_hide_header X-Request-ID;",
        "",
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Request-ID $gateway_request_id;",
        "        proxy_set_header X-Real-IP $remote_addr;",
        # The gateway is the edge: the address it saw is the only one services can trust, so a
        # client-sent X-Forwarded-For is replaced rather than appended to.
        "        proxy_set_header X-Forwarded-For $remote_addr;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        proxy_set_header X-Forwarded-Host $host;",
        "        proxy_set_header X-Forwarded-Port $server_port;",
        "        proxy_connect_timeout 2s;",
        "        proxy_send_timeout 30s;",
        "        proxy_read_timeout 30s;",
        # Without `non_idempotent`, a POST/PATCH already sent is never replayed elsewhere.
        "        proxy_next_upstream error timeout;",
        "        proxy_next_upstream_tries 3;",
        "        proxy_next_upstream_timeout 10s;",
        "        proxy_intercept_errors off;",
        "",
        *(f"        error_page {code} @{name};" for code, (name, _) in _ERRORS.items()),
        "",
        "        location = /healthz {",
        "            access_log off;",
        """            return 200 '{"status": "ok"}';""",
        "        }",
    ]
    for name, route in ROUTES.items():
        lines.append("")
        for prefix in route.prefixes:
            lines += _proxy_location(f"= {prefix}", name, burst=burst)
            lines += _proxy_location(f"^~ {prefix}/", name, burst=burst)
        for path in route.exact:
            lines += _proxy_location(f"= {path}", name, burst=burst)
    lines += [
        "",
        "        location / {",
        f"            limit_req zone=per_client burst={burst} nodelay;",
        # Not `return 404`: return runs in the rewrite phase, before limit_req, so unknown paths
        # were never limited. try_files runs after it, and finds no such file.
        "            try_files /.no-route-here =404;",
        "        }",
        "",
        *_error_locations(max_body=max_body),
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def limits_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int, str]:
    """Read (rate_per_second, burst, max_body) from GATEWAY_* variables, else the defaults."""
    env = os.environ if env is None else env
    try:
        rate = int(env.get("GATEWAY_RATE_PER_SECOND", DEFAULT_RATE_PER_SECOND))
        burst = int(env.get("GATEWAY_BURST", DEFAULT_BURST))
    except ValueError as exc:
        raise ValueError(
            f"GATEWAY_RATE_PER_SECOND and GATEWAY_BURST must be integers: {exc}"
        ) from exc
    max_body = env.get("GATEWAY_MAX_BODY", DEFAULT_MAX_BODY)
    if rate < 1 or burst < 0:
        raise ValueError("GATEWAY_RATE_PER_SECOND must be >= 1 and GATEWAY_BURST >= 0")
    if not _MAX_BODY_PATTERN.match(max_body):
        raise ValueError(f"GATEWAY_MAX_BODY {max_body!r} is not an nginx size such as 1m")
    return rate, burst, max_body


def root_user() -> str | None:
    """The user directive nginx needs: the current user when running as root, else none."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(os.geteuid()).pw_name


def write_nginx_conf(
    *,
    listen: int,
    upstreams: Mapping[str, Sequence[str]],
    runtime_dir: Path,
    rate_per_second: int | None = None,
    burst: int | None = None,
    max_body: str | None = None,
    access_log: Path | None = None,
    error_log: Path | None = None,
) -> Path:
    """Render a local configuration into ``runtime_dir/nginx.conf`` and return its path.

    Limits not given come from GATEWAY_RATE_PER_SECOND, GATEWAY_BURST and GATEWAY_MAX_BODY.
    """
    if rate_per_second is None or burst is None or max_body is None:
        env_rate, env_burst, env_max_body = limits_from_env()
        rate_per_second = env_rate if rate_per_second is None else rate_per_second
        burst = env_burst if burst is None else burst
        max_body = env_max_body if max_body is None else max_body
    runtime_dir = Path(runtime_dir).resolve()
    (runtime_dir / "logs").mkdir(parents=True, exist_ok=True)
    conf = runtime_dir / "nginx.conf"
    conf.write_text(
        render_nginx_conf(
            listen=listen,
            upstreams=upstreams,
            runtime_dir=runtime_dir,
            rate_per_second=rate_per_second,
            burst=burst,
            max_body=max_body,
            access_log=access_log,
            error_log=error_log,
            user=root_user(),
        )
    )
    return conf


def nginx_command(
    *, conf: Path, runtime_dir: Path, error_log: Path | None = None, nginx: str = "nginx"
) -> list[str]:
    """The command line that runs nginx in the foreground with everything under runtime_dir."""
    startup_log = error_log or Path(runtime_dir) / "logs" / "error.log"
    return [
        nginx,
        "-p",
        str(runtime_dir),
        "-c",
        str(conf),
        "-e",
        str(startup_log),
        "-g",
        "daemon off;",
    ]


def local_upstreams(env: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """One local instance per service, on <PREFIX>PORT or the default port."""
    env = os.environ if env is None else env
    return {
        name: [f"127.0.0.1:{env.get(SERVICE_ENV_PREFIXES[name] + 'PORT', port)}"]
        for name, port in SERVICE_PORTS.items()
    }


def service_dns_upstreams() -> dict[str, list[str]]:
    """Each service by its DNS name in compose and Kubernetes (``auth:8001``, ...)."""
    return {name: [f"{name}:{port}"] for name, port in SERVICE_PORTS.items()}


def render_compose_conf() -> str:
    """The configuration docker-compose.yml mounts into nginx:1.27-alpine (root master)."""
    return render_nginx_conf(
        listen=DEFAULT_LISTEN,
        upstreams=service_dns_upstreams(),
        runtime_dir=Path("/var/cache/nginx"),
        access_log=Path("/dev/stdout"),
        error_log=Path("/dev/stderr"),
        resolver=COMPOSE_RESOLVER,
    )


def render_k8s_conf() -> str:
    """The configuration of the Kubernetes gateway (non-root, read-only root filesystem)."""
    return render_nginx_conf(
        listen=DEFAULT_LISTEN,
        upstreams=service_dns_upstreams(),
        runtime_dir=Path("/tmp/nginx"),  # noqa: S108 - an emptyDir volume in the pod
        access_log=Path("/dev/stdout"),
        error_log=Path("/dev/stderr"),
        worker_processes=2,
    )


def deploy_renderings() -> dict[Path, str]:
    """Every committed rendering and its expected content."""
    return {COMPOSE_CONF: render_compose_conf(), K8S_CONF: render_k8s_conf()}


def stale_renderings() -> list[Path]:
    """Committed renderings whose content differs from a fresh rendering."""
    return [
        path
        for path, text in deploy_renderings().items()
        if not path.exists() or path.read_text() != text
    ]


def _render_deploy(*, check: bool) -> int:
    stale = stale_renderings()
    if check:
        for path in stale:
            print(f"stale: {path.relative_to(REPO_ROOT)}", file=sys.stderr)
        return 1 if stale else 0
    for path, text in deploy_renderings().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


def _run_local(*, listen: int, runtime_dir: Path, nginx: str) -> int:
    conf = write_nginx_conf(listen=listen, upstreams=local_upstreams(), runtime_dir=runtime_dir)
    command = nginx_command(conf=conf, runtime_dir=conf.parent, nginx=nginx)
    os.execvp(command[0], command)  # noqa: S606 - nginx replaces this process: signals reach it
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``render-deploy [--check]`` or ``run`` (local gateway in the foreground)."""
    parser = argparse.ArgumentParser(prog="python -m svctools.gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render-deploy", help="write the compose and k8s renderings")
    render.add_argument("--check", action="store_true", help="fail if a rendering is stale")
    run = commands.add_parser("run", help="run a local gateway in front of 127.0.0.1 services")
    run.add_argument("--listen", type=int, default=int(os.environ.get("GATEWAY_PORT", 8080)))
    run.add_argument("--runtime-dir", type=Path, default=REPO_ROOT / ".run" / "gateway")
    run.add_argument("--nginx", default=os.environ.get("NGINX_BIN", "nginx"))
    args = parser.parse_args(argv)
    if args.command == "render-deploy":
        return _render_deploy(check=args.check)
    return _run_local(listen=args.listen, runtime_dir=args.runtime_dir, nginx=args.nginx)


if __name__ == "__main__":
    raise SystemExit(main())
