"""docker-compose.yml: valid against the compose specification and wired the way SYSTEM.md says."""

from __future__ import annotations

import json
import os
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILES = sorted(
    str(path.relative_to(REPO_ROOT))
    for path in [*REPO_ROOT.glob("services/*/Dockerfile"), REPO_ROOT / "tools" / "Dockerfile"]
)
WORKSPACE_PACKAGES = {
    tomllib.loads(path.read_text())["project"]["name"]
    for path in [*REPO_ROOT.glob("*/pyproject.toml"), *REPO_ROOT.glob("services/*/pyproject.toml")]
}

# service → (directory under services/, Python package, env prefix, port)
APP_SERVICES: dict[str, tuple[str, str, str, int]] = {
    "auth": ("auth", "auth_service", "AUTH_", 8001),
    "users": ("users", "users_service", "USERS_", 8002),
    "orders": ("orders", "orders_service", "ORDERS_", 8003),
    "payments-gateway": ("payments-gateway", "payments_gateway", "PAYMENTS_", 8004),
    "notifications": ("notifications", "notifications_service", "NOTIFICATIONS_", 8005),
}

# Every environment variable a service may be given. To be compared with the fields of each
# service's Settings class (env_prefix + field name, upper-cased).
SERVICE_ENV_VARS: dict[str, frozenset[str]] = {
    "auth": frozenset(
        {
            "AUTH_DATABASE_URL",
            "AUTH_REDIS_URL",
            "AUTH_AMQP_URL",
            "AUTH_EVENTS_EXCHANGE",
            "AUTH_JWKS_URL",
            "AUTH_ENVIRONMENT",
            "AUTH_LOG_JSON",
            "AUTH_HOST",
            "AUTH_PORT",
            "AUTH_KEYS_DIR",
        }
    ),
    "users": frozenset(
        {
            "USERS_DATABASE_URL",
            "USERS_REDIS_URL",
            "USERS_AMQP_URL",
            "USERS_EVENTS_EXCHANGE",
            "USERS_JWKS_URL",
            "USERS_ENVIRONMENT",
            "USERS_LOG_JSON",
            "USERS_HOST",
            "USERS_PORT",
        }
    ),
    "orders": frozenset(
        {
            "ORDERS_DATABASE_URL",
            "ORDERS_REDIS_URL",
            "ORDERS_AMQP_URL",
            "ORDERS_EVENTS_EXCHANGE",
            "ORDERS_JWKS_URL",
            "ORDERS_ENVIRONMENT",
            "ORDERS_LOG_JSON",
            "ORDERS_HOST",
            "ORDERS_PORT",
        }
    ),
    "payments-gateway": frozenset(
        {
            "PAYMENTS_DATABASE_URL",
            "PAYMENTS_REDIS_URL",
            "PAYMENTS_AMQP_URL",
            "PAYMENTS_EVENTS_EXCHANGE",
            "PAYMENTS_JWKS_URL",
            "PAYMENTS_ENVIRONMENT",
            "PAYMENTS_LOG_JSON",
            "PAYMENTS_HOST",
            "PAYMENTS_PORT",
            "PAYMENTS_PROVIDER_URL",
            "PAYMENTS_WEBHOOK_SECRET",
        }
    ),
    "notifications": frozenset(
        {
            "NOTIFICATIONS_DATABASE_URL",
            "NOTIFICATIONS_REDIS_URL",
            "NOTIFICATIONS_AMQP_URL",
            "NOTIFICATIONS_EVENTS_EXCHANGE",
            "NOTIFICATIONS_JWKS_URL",
            "NOTIFICATIONS_ENVIRONMENT",
            "NOTIFICATIONS_LOG_JSON",
            "NOTIFICATIONS_HOST",
            "NOTIFICATIONS_PORT",
            "NOTIFICATIONS_SMTP_HOST",
            "NOTIFICATIONS_SMTP_PORT",
            "NOTIFICATIONS_MAIL_FROM",
        }
    ),
}
SIMULATOR_ENV_VARS = frozenset(
    {"SIMULATOR_PORT", "SIMULATOR_WEBHOOK_URL", "SIMULATOR_WEBHOOK_SECRET"}
)
REQUIRED_SETTINGS = ("DATABASE_URL", "REDIS_URL", "AMQP_URL", "JWKS_URL", "ENVIRONMENT", "PORT")
SECRET_URLS = ("DATABASE_URL", "REDIS_URL", "AMQP_URL")
SECRET_SETTINGS = ("WEBHOOK_SECRET",)
INFRASTRUCTURE = ("postgres", "redis", "rabbitmq")
MONITORING = ("prometheus", "grafana")
PUBLISHED_PORTS = {
    "gateway": {8080},
    "mailpit": {8025},
    "rabbitmq": {15672},
    "prometheus": {9090},
    "grafana": {3000},
}
INTERPOLATED = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:-[^}]*change-me[^}]*\}$")


def load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


def compose_schema() -> dict[str, Any]:
    """The compose-spec schema vendored by check-jsonschema (no network)."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def published_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["published"]))
        else:
            parts = str(entry).split(":")
            if len(parts) < 2:
                raise AssertionError(f"{entry!r} publishes a random host port")
            ports.add(int(parts[-2]))
    return ports


def url_password(url: str) -> str:
    """The password of a connection URL (which may itself be an interpolation)."""
    userinfo = url.split("://", 1)[1].rsplit("@", 1)[0]
    match = re.search(r":(\$\{[^}]+\}|[^:]*)$", userinfo)
    assert match, f"{url} carries no password"
    return match.group(1)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


class TestSchema:
    def test_compose_file_matches_the_compose_specification(self, compose: dict[str, Any]) -> None:
        assert schema_errors(compose) == []

    def test_the_schema_rejects_a_misspelt_key(self, compose: dict[str, Any]) -> None:
        broken = json.loads(json.dumps(compose))
        broken["services"]["orders"]["helthcheck"] = broken["services"]["orders"]["healthcheck"]

        assert any("helthcheck" in error for error in schema_errors(broken))

    def test_system_services_are_all_there(self, services: dict[str, dict[str, Any]]) -> None:
        expected = {*APP_SERVICES, *INFRASTRUCTURE, *MONITORING, "mailpit", "simulator", "gateway"}

        assert set(services) == expected


class TestBuilds:
    @pytest.mark.parametrize("name", [*APP_SERVICES, "simulator"])
    def test_build_uses_an_existing_dockerfile_from_the_repo_root(
        self, services: dict[str, dict[str, Any]], name: str
    ) -> None:
        build = services[name]["build"]
        expected = (
            "tools/Dockerfile"
            if name == "simulator"
            else (f"services/{APP_SERVICES[name][0]}/Dockerfile")
        )

        assert build["context"] == "."
        assert build["dockerfile"] == expected
        assert (REPO_ROOT / build["dockerfile"]).is_file()

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_service_dockerfile(self, name: str) -> None:
        directory, package, prefix, port = APP_SERVICES[name]
        dockerfile = (REPO_ROOT / "services" / directory / "Dockerfile").read_text()

        assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
        assert re.search(
            rf"^RUN \S*uv pip install --python /opt/venv/bin/python -c requirements.txt "
            rf"./shared ./services/{directory}$",
            dockerfile,
            re.MULTILINE,
        )
        assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.MULTILINE)
        assert re.search(rf"^EXPOSE {port}$", dockerfile, re.MULTILINE)
        assert re.search(r"^HEALTHCHECK .*\n?.*/health/live", dockerfile, re.MULTILINE)
        cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
        assert f"python -m {package}.cli migrate &&" in cmd
        assert f"uvicorn --factory {package}.main:create_app" in cmd
        assert f"${prefix}PORT" in cmd

    def test_tools_dockerfile(self) -> None:
        dockerfile = (REPO_ROOT / "tools" / "Dockerfile").read_text()
        targets = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE)

        assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
        assert {"simulator", "smtp-sink"} <= set(targets)
        assert targets[-1] == "simulator", "a build without --target gives the simulator"
        assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.MULTILINE)
        assert "/healthz" in dockerfile
        assert '"svctools.simulator"' in dockerfile
        assert '"svctools.smtp_sink"' in dockerfile

    @pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=str)
    def test_every_workspace_dependency_is_copied_and_installed(self, dockerfile: str) -> None:
        """pip cannot find servicekit or svctools on an index: a Dockerfile that installs a
        package of this workspace must copy and install the workspace packages it needs."""
        text = (REPO_ROOT / dockerfile).read_text()
        (install,) = re.findall(
            r"^RUN .*pip install .*-c requirements.txt (.+)$", text, re.MULTILINE
        )
        installed = install.split()
        copied = set(re.findall(r"^COPY (\./?\S+|\w\S*) ", text, re.MULTILINE))
        names = {}
        for path in installed:
            project = tomllib.loads((REPO_ROOT / path / "pyproject.toml").read_text())["project"]
            names[project["name"]] = project.get("dependencies", [])
        for path in installed:
            assert path.removeprefix("./") in {c.removeprefix("./") for c in copied}, path
        for dependencies in names.values():
            for requirement in dependencies:
                name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
                if name in WORKSPACE_PACKAGES:
                    assert name in names, f"{dockerfile} installs a package needing {name}"

    @pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=str)
    def test_dockerfile_needs_no_registry_frontend(self, dockerfile: str) -> None:
        """A `# syntax=` line makes BuildKit pull its frontend image before building; the
        built-in frontend does everything these Dockerfiles use."""
        assert not (REPO_ROOT / dockerfile).read_text().startswith("# syntax=")

    def test_dockerignore_keeps_local_state_out_of_the_build_context(self) -> None:
        ignored = {
            line.strip()
            for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }

        assert {".venv", ".git", ".run", "**/__pycache__"} <= ignored
        assert not ignored & {"shared", "services", "tools", "requirements.txt"}


class TestEnvironment:
    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_service_env_uses_known_names_only(
        self, services: dict[str, dict[str, Any]], name: str
    ) -> None:
        prefix = APP_SERVICES[name][2]
        environment = services[name]["environment"]

        assert all(key.startswith(prefix) for key in environment)
        assert set(environment) <= SERVICE_ENV_VARS[name]
        assert {prefix + setting for setting in REQUIRED_SETTINGS} <= set(environment)

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_service_addresses(self, services: dict[str, dict[str, Any]], name: str) -> None:
        _, _, prefix, port = APP_SERVICES[name]
        environment = services[name]["environment"]

        assert environment[f"{prefix}PORT"] == str(port)
        assert environment[f"{prefix}HOST"] == "0.0.0.0"  # noqa: S104 - inside the container
        assert environment[f"{prefix}JWKS_URL"] == "http://auth:8001/.well-known/jwks.json"
        assert environment[f"{prefix}EVENTS_EXCHANGE"] == "events"
        assert urlsplit(environment[f"{prefix}DATABASE_URL"]).hostname == "postgres"
        assert urlsplit(environment[f"{prefix}REDIS_URL"]).hostname == "redis"
        assert urlsplit(environment[f"{prefix}AMQP_URL"]).hostname == "rabbitmq"

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_secrets_are_placeholders_overridable_from_the_environment(
        self, services: dict[str, dict[str, Any]], name: str
    ) -> None:
        prefix = APP_SERVICES[name][2]
        environment = services[name]["environment"]
        secrets = [url_password(environment[prefix + url]) for url in SECRET_URLS]
        secrets += [
            environment[prefix + key] for key in SECRET_SETTINGS if prefix + key in environment
        ]

        for secret in secrets:
            assert INTERPOLATED.match(secret), secret

    def test_each_service_has_its_own_database_and_redis_index(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        databases = {}
        redis_indexes = {}
        for name, (_, _, prefix, _) in APP_SERVICES.items():
            environment = services[name]["environment"]
            databases[name] = urlsplit(environment[f"{prefix}DATABASE_URL"]).path.lstrip("/")
            redis_indexes[name] = urlsplit(environment[f"{prefix}REDIS_URL"]).path
        init_script = (REPO_ROOT / "deploy" / "compose" / "postgres-init.sh").read_text()

        assert len(set(databases.values())) == len(APP_SERVICES)
        assert len(set(redis_indexes.values())) == len(APP_SERVICES)
        for database in databases.values():
            assert re.search(rf"^create_database {database} ", init_script, re.MULTILINE)

    def test_postgres_init_script_is_mounted(self, services: dict[str, dict[str, Any]]) -> None:
        script = REPO_ROOT / "deploy" / "compose" / "postgres-init.sh"
        mounts = services["postgres"]["volumes"]

        assert any(
            str(m).startswith("./deploy/compose/postgres-init.sh:/docker-entrypoint-initdb.d/")
            for m in mounts
        )
        assert os.access(script, os.X_OK)
        for name in ("AUTH", "USERS", "ORDERS", "PAYMENTS", "NOTIFICATIONS"):
            assert f"DB_PASSWORD_{name}" in services["postgres"]["environment"]

    def test_simulator_and_payments_share_the_webhook_secret(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        simulator = services["simulator"]["environment"]
        payments = services["payments-gateway"]["environment"]

        assert set(simulator) <= SIMULATOR_ENV_VARS
        assert simulator["SIMULATOR_WEBHOOK_SECRET"] == payments["PAYMENTS_WEBHOOK_SECRET"]
        assert (
            payments["PAYMENTS_PROVIDER_URL"] == f"http://simulator:{simulator['SIMULATOR_PORT']}"
        )
        assert simulator["SIMULATOR_WEBHOOK_URL"].endswith("/payments/webhooks/provider")

    def test_notifications_send_to_mailpit(self, services: dict[str, dict[str, Any]]) -> None:
        environment = services["notifications"]["environment"]

        assert environment["NOTIFICATIONS_SMTP_HOST"] == "mailpit"
        assert environment["NOTIFICATIONS_SMTP_PORT"] == "1025"


class TestHealth:
    def test_every_container_has_a_healthcheck(self, services: dict[str, dict[str, Any]]) -> None:
        for name, service in services.items():
            healthcheck = service.get("healthcheck")
            assert healthcheck, name
            assert not healthcheck.get("disable"), name
            assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}, name

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_service_healthchecks_probe_readiness_on_their_port(
        self, services: dict[str, dict[str, Any]], name: str
    ) -> None:
        port = APP_SERVICES[name][3]
        probe = " ".join(services[name]["healthcheck"]["test"])

        assert f"http://127.0.0.1:{port}/health/ready" in probe

    def test_dependencies_wait_for_health(self, services: dict[str, dict[str, Any]]) -> None:
        for name, service in services.items():
            depends_on = service.get("depends_on", {})
            assert isinstance(depends_on, dict), f"{name}: use the long depends_on syntax"
            for target, condition in depends_on.items():
                assert target in services, f"{name} depends on unknown {target}"
                assert condition["condition"] == "service_healthy", f"{name} → {target}"
                assert "healthcheck" in services[target]

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_services_wait_for_their_infrastructure(
        self, services: dict[str, dict[str, Any]], name: str
    ) -> None:
        assert set(INFRASTRUCTURE) <= set(services[name]["depends_on"])
        assert services[name]["restart"] == "unless-stopped"

    def test_gateway_waits_for_every_service(self, services: dict[str, dict[str, Any]]) -> None:
        assert set(services["gateway"]["depends_on"]) == set(APP_SERVICES)


class TestPorts:
    def test_only_the_gateway_and_the_web_uis_publish_ports(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        published = {name: ports for name, s in services.items() if (ports := published_ports(s))}

        assert published == PUBLISHED_PORTS

    def test_services_can_be_scaled(self, services: dict[str, dict[str, Any]]) -> None:
        for name in [*APP_SERVICES, "simulator"]:
            assert "container_name" not in services[name], name
            assert "ports" not in services[name], name


class TestGateway:
    def test_gateway_runs_nginx_with_the_committed_rendering(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        gateway = services["gateway"]

        assert gateway["image"] == "nginx:1.27-alpine"
        source, target, *_ = str(gateway["volumes"][0]).split(":")
        assert source == "./deploy/nginx/nginx.compose.conf"
        assert target == "/etc/nginx/nginx.conf"
        assert (REPO_ROOT / source).is_file()

    def test_gateway_upstreams_are_compose_services_on_their_ports(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        conf = (REPO_ROOT / "deploy" / "nginx" / "nginx.compose.conf").read_text()
        servers = dict(re.findall(r"^\s*server ([a-z-]+):(\d+) resolve ", conf, re.MULTILINE))

        assert servers == {name: str(port) for name, (_, _, _, port) in APP_SERVICES.items()}
        for name, port in servers.items():
            prefix = APP_SERVICES[name][2]
            assert services[name]["environment"][f"{prefix}PORT"] == port
        assert re.search(r"^\s*resolver 127\.0\.0\.11\b", conf, re.MULTILINE)
