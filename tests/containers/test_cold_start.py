"""A cold start: every container healthy, non-root, started only after what it depends on."""

from __future__ import annotations

import json
from collections import defaultdict

from conftest import SCALE, SERVICES, System, docker


def test_every_container_is_healthy_and_scaled(system: System) -> None:
    per_service: dict[str, int] = defaultdict(int)
    for container in system.containers():
        state = system.inspect(container)
        service = state["Config"]["Labels"]["com.docker.compose.service"]
        per_service[service] += 1
        assert state["State"]["Health"]["Status"] == "healthy", (service, state["State"])
    assert dict(per_service) == {name: SCALE.get(name, 1) for name in SERVICES}


def test_every_container_runs_as_a_non_root_user(system: System) -> None:
    for container in system.containers():
        state = system.inspect(container)
        service = state["Config"]["Labels"]["com.docker.compose.service"]
        assert state["Config"]["User"] not in ("", "root", "0", "0:0"), service
        uid = docker("exec", container, "id", "-u").strip()
        assert uid != "0", service


def test_depends_on_conditions_held_on_the_cold_start(system: System) -> None:
    config = json.loads(system.compose("config", "--format", "json"))
    events = system.cold_start_events
    first_start: dict[str, float] = {}
    first_healthy: dict[str, float] = {}
    service_of: dict[str, str] = {}
    for line in events.splitlines():
        event = json.loads(line)
        container = event["Actor"]["ID"]
        action = event.get("Action") or event.get("status")
        service_of[container] = event["Actor"]["Attributes"]["com.docker.compose.service"]
        moment = event["timeNano"] / 1e9
        if action == "start":
            first_start.setdefault(container, moment)
        elif action == "health_status: healthy":
            first_healthy.setdefault(container, moment)

    def started(service: str) -> list[float]:
        return [t for c, t in first_start.items() if service_of[c] == service]

    def healthy(service: str) -> list[float]:
        return [t for c, t in first_healthy.items() if service_of[c] == service]

    checked = 0
    for service in SERVICES:
        for dependency, rule in (config["services"][service].get("depends_on") or {}).items():
            assert rule["condition"] == "service_healthy", (service, dependency)
            assert started(service), service
            assert healthy(dependency), dependency
            assert min(started(service)) >= max(healthy(dependency)), (
                f"{service} started before {dependency} was healthy"
            )
            checked += 1
    assert checked >= 20
