"""Monitoring in docker compose: Prometheus scrapes every service, and the Grafana dashboard asks
only for metrics the services really expose (a misspelt name would draw an empty panel)."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_FILE = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD_FILE = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "services.json"
PROVISIONING = REPO_ROOT / "deploy" / "grafana" / "provisioning"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

# service → (Python package, env prefix, port)
SERVICES = {
    "auth": ("auth_service", "AUTH_", 8001),
    "users": ("users_service", "USERS_", 8002),
    "orders": ("orders_service", "ORDERS_", 8003),
    "payments-gateway": ("payments_gateway", "PAYMENTS_", 8004),
    "notifications": ("notifications_service", "NOTIFICATIONS_", 8005),
}
# Series Prometheus itself writes for every target it scrapes.
SCRAPE_SERIES = frozenset({"up"})
# The families an operator must be able to see on the dashboard.
REQUIRED_ON_DASHBOARD = (
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "events_published_total",
    "events_consumed_total",
    "events_retried_total",
    "events_dead_lettered_total",
    "event_handler_duration_seconds_bucket",
    "outbox_pending_events",
    "outbox_oldest_pending_age_seconds",
    "circuit_breaker_state",
    "circuit_breaker_transitions_total",
    "cache_requests_total",
    "auth_login_throttled_total",
)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}
_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "inf", "nan"}
)
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exposed_metric_names() -> set[str]:
    """Every series name the services can expose, from the registry they all register in."""
    for package, _, _ in SERVICES.values():
        importlib.import_module(f"{package}.main")
    importlib.import_module("servicekit.metrics")
    names: set[str] = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = _GROUPING.sub("", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        word = match.group(0)
        if expr[match.end() :].lstrip().startswith("(") or word.lower() in _PROMQL_KEYWORDS:
            continue
        if match.start() > 0 and expr[match.start() - 1] in "$.0123456789":
            continue
        names.add(word)
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    queries = []
    for panel in dashboard["panels"]:
        for nested in [panel, *panel.get("panels", [])]:
            for target in nested.get("targets", []):
                queries.append((nested["title"], target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        inner = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*", text)
        queries.append((f"variable {variable['name']}", inner.group(1) if inner else text))
    return queries


def unknown_names(dashboard: dict[str, Any], exposed: set[str]) -> list[str]:
    return [
        f"{where}: {name} in {expr}"
        for where, expr in dashboard_queries(dashboard)
        for name in sorted(metric_names(expr) - exposed - SCRAPE_SERIES)
    ]


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    return exposed_metric_names()


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_FILE)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return document


@pytest.fixture(scope="module")
def compose_services() -> dict[str, dict[str, Any]]:
    return dict(load_yaml(COMPOSE_FILE)["services"])


def scrape_targets(job: dict[str, Any]) -> set[str]:
    """host:port of every target a job names, statically or through DNS."""
    targets = set()
    for static in job.get("static_configs", []):
        targets |= set(static.get("targets", []))
    for dns in job.get("dns_sd_configs", []):
        assert dns.get("type", "SRV") in {"A", "AAAA"}, f"{job['job_name']}: SRV needs no port"
        targets |= {f"{name}:{dns['port']}" for name in dns["names"]}
    return targets


class TestPrometheus:
    def test_every_service_is_scraped_on_its_own_port(
        self, prometheus: dict[str, Any], compose_services: dict[str, dict[str, Any]]
    ) -> None:
        jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}

        assert set(jobs) == set(SERVICES)
        for name, (_, prefix, port) in SERVICES.items():
            job = jobs[name]
            assert job.get("metrics_path", "/metrics") == "/metrics", name
            assert job.get("scheme", "http") == "http", name
            assert scrape_targets(job) == {f"{name}:{port}"}, name
            assert compose_services[name]["environment"][f"{prefix}PORT"] == str(port)

    def test_global_intervals_are_durations(self, prometheus: dict[str, Any]) -> None:
        durations = re.compile(r"^\d+(ms|s|m|h)$")
        for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
            assert durations.match(prometheus["global"][key]), key

    def test_compose_runs_prometheus_with_this_file(
        self, compose_services: dict[str, dict[str, Any]]
    ) -> None:
        service = compose_services["prometheus"]
        mounts = [str(volume) for volume in service["volumes"]]

        assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
        assert "--config.file=/etc/prometheus/prometheus.yml" in service["command"]
        assert "/-/ready" in " ".join(service["healthcheck"]["test"])


class TestDashboard:
    def test_every_query_uses_only_metrics_the_services_expose(
        self, dashboard: dict[str, Any], exposed: set[str]
    ) -> None:
        assert unknown_names(dashboard, exposed) == []

    def test_every_query_has_balanced_brackets(self, dashboard: dict[str, Any]) -> None:
        pairs = {")": "(", "]": "[", "}": "{"}
        for where, expr in dashboard_queries(dashboard):
            stack: list[str] = []
            for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
                if char in "([{":
                    stack.append(char)
                elif char in pairs:
                    opened = stack.pop() if stack else None
                    assert opened == pairs[char], f"{where}: {expr}"
            assert not stack, f"{where}: {expr}"

    def test_the_check_catches_a_misspelt_metric(
        self, dashboard: dict[str, Any], exposed: set[str]
    ) -> None:
        broken = json.loads(json.dumps(dashboard))
        target = next(p for p in broken["panels"] if p.get("targets"))["targets"][0]
        target["expr"] = "sum(rate(http_request_total[5m]))"

        assert unknown_names(broken, exposed) != []
        assert "http_request_total" not in exposed

    def test_the_service_families_each_have_a_panel(self, dashboard: dict[str, Any]) -> None:
        used = set().union(*(metric_names(expr) for _, expr in dashboard_queries(dashboard)))

        assert set(REQUIRED_ON_DASHBOARD) <= used, set(REQUIRED_ON_DASHBOARD) - used

    def test_every_panel_queries_the_provisioned_datasource(
        self, dashboard: dict[str, Any]
    ) -> None:
        provisioned = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")
        (datasource,) = provisioned["datasources"]
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]

        assert datasource["type"] == "prometheus"
        assert panels
        for panel in panels:
            assert panel["targets"], panel["title"]
            for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
                assert source == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]

    def test_panels_have_unique_ids_and_fit_the_grid(self, dashboard: dict[str, Any]) -> None:
        ids = [panel["id"] for panel in dashboard["panels"]]
        cells: set[tuple[int, int]] = set()

        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0, panel["title"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            covered = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not covered & cells, f"{panel['title']} overlaps another panel"
            cells |= covered


class TestGrafana:
    def test_datasource_points_at_the_compose_prometheus(
        self, compose_services: dict[str, dict[str, Any]]
    ) -> None:
        provisioned = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")
        (datasource,) = provisioned["datasources"]
        ports = {str(p).split(":")[-1] for p in compose_services["prometheus"]["ports"]}

        assert datasource["url"] == "http://prometheus:9090"
        assert "9090" in ports

    def test_dashboards_are_loaded_from_the_mounted_directory(
        self, compose_services: dict[str, dict[str, Any]]
    ) -> None:
        grafana = compose_services["grafana"]
        mounts = dict(str(volume).split(":")[:2] for volume in grafana["volumes"])
        providers = load_yaml(PROVISIONING / "dashboards" / "services.yml")["providers"]

        assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
        assert [p["options"]["path"] for p in providers] == [mounts["./deploy/grafana/dashboards"]]
        home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        assert home == f"{mounts['./deploy/grafana/dashboards']}/{DASHBOARD_FILE.name}"

    def test_grafana_waits_for_prometheus_and_its_password_is_a_placeholder(
        self, compose_services: dict[str, dict[str, Any]]
    ) -> None:
        grafana = compose_services["grafana"]
        password = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]

        assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
        assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:-[^}]*change-me\}", password)
        assert grafana["environment"]["GF_USERS_ALLOW_SIGN_UP"] == "false"
