"""A cold start: every container healthy, non-root, started only after what it depends on."""

from __future__ import annotations

import json
import re
from collections import defaultdict

from support import SCALE, SERVICES, System, docker


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
    # Compose's own report of the cold start, in order: " Container <project>-<service>-<n>
    # Starting", "... Healthy" (a dependency it waited for), "... Started".
    step = re.compile(rf"Container {re.escape(system.project)}-(.+)-(\d+)\s+(\w+)")
    first: dict[tuple[str, str], int] = {}  # (container, step) -> line of its first report
    containers: dict[str, set[str]] = defaultdict(set)
    for number, line in enumerate(system.cold_start_progress.splitlines()):
        match = step.search(line)
        if match is None:
            continue
        service, index, action = match.groups()
        container = f"{service}-{index}"
        containers[service].add(container)
        first.setdefault((container, action), number)

    checked = 0
    for service in SERVICES:
        for dependency, rule in (config["services"][service].get("depends_on") or {}).items():
            assert rule["condition"] == "service_healthy", (service, dependency)
            assert containers[service], f"no container of {service} reported"
            assert containers[dependency], f"no container of {dependency} reported"
            for dependent in containers[service]:
                starting = first.get((dependent, "Starting"))
                assert starting is not None, f"no start of {dependent} reported"
                for needed in containers[dependency]:
                    healthy = first.get((needed, "Healthy"))
                    assert healthy is not None, f"{needed} never reported healthy"
                    assert healthy < starting, f"{dependent} started before {needed} was healthy"
            checked += 1
    assert checked >= 20, system.cold_start_progress[-3000:]
