"""deploy/k8s runs what docker-compose.yml runs (and the container tests prove): the same
images, the same commands as the images' own, the same settings and ports, probes on
endpoints the services serve. Offline; a drift between the two fails here."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_compose import APP_SERVICES, COMPOSE_FILE
from test_k8s import BASE, DEV, URL_INPUTS, by_kind, documents, main_container, pod_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_ROUTES = REPO_ROOT / "shared" / "src" / "servicekit" / "health.py"
# Compose reaches RabbitMQ, Redis and PostgreSQL by their compose names; in Kubernetes the
# platform ConfigMap names them, so these are not per-service settings there.
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Doc]:
    services: dict[str, Doc] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


@pytest.fixture(scope="module")
def deployments() -> dict[str, Doc]:
    return by_kind(documents(BASE), "Deployment")


@pytest.fixture(scope="module")
def config_maps() -> dict[str, Doc]:
    return by_kind(documents(BASE), "ConfigMap")


def dockerfile_cmd(service_dir: str) -> list[str]:
    """The CMD of a service's Dockerfile, as the argument list the container runs."""
    text = (REPO_ROOT / "services" / service_dir / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    parsed: list[str] = json.loads(cmd)
    return parsed


def k8s_settings(container: Doc, config_maps: dict[str, Doc]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for source in container["envFrom"]:
        settings.update(config_maps[source["configMapRef"]["name"]]["data"])
    for entry in container["env"]:
        settings[entry["name"]] = entry.get("value", "<secret>")
    return settings


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_same_image(compose: dict[str, Doc], deployments: dict[str, Doc], name: str) -> None:
    repository, tag = compose[name]["image"].split(":")
    deployment = deployments[name]
    images = {
        c["image"] for c in [*pod_spec(deployment)["initContainers"], main_container(deployment)]
    }
    assert images == {repository}
    pinned = {
        i["name"]: i["newTag"]
        for i in yaml.safe_load((DEV / "kustomization.yaml").read_text())["images"]
    }
    assert pinned[repository] == tag


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_same_commands_as_the_image(
    deployments: dict[str, Doc], config_maps: dict[str, Doc], name: str
) -> None:
    """The image migrates then serves in one command; Kubernetes splits it into an init
    container and the server, with the variables the image expands filled in."""
    service_dir, _, _prefix, _ = APP_SERVICES[name]
    shell, flag, script = dockerfile_cmd(service_dir)
    assert (shell, flag) == ("sh", "-c")
    migrate, serve = script.split(" && exec ")
    deployment = deployments[name]
    container = main_container(deployment)
    settings = k8s_settings(container, config_maps)
    expanded = re.sub(r"\$(\w+)", lambda m: settings[m.group(1)], serve)

    assert pod_spec(deployment)["initContainers"][0]["command"] == shlex.split(migrate)
    assert container["command"] == shlex.split(expanded)


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_same_settings_and_port(
    compose: dict[str, Doc], deployments: dict[str, Doc], config_maps: dict[str, Doc], name: str
) -> None:
    _, _, prefix, port = APP_SERVICES[name]
    compose_env: dict[str, str] = compose[name]["environment"]
    container = main_container(deployments[name])
    settings = k8s_settings(container, config_maps)
    own = {key for key in settings if key.startswith(prefix)} - URL_INPUTS

    assert own == set(compose_env)
    assert settings[f"{prefix}PORT"] == compose_env[f"{prefix}PORT"] == str(port)
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert f"127.0.0.1:{port}/health/ready" in " ".join(compose[name]["healthcheck"]["test"])
    dockerfile = (REPO_ROOT / "services" / APP_SERVICES[name][0] / "Dockerfile").read_text()
    assert f"EXPOSE {port}\n" in dockerfile


@pytest.mark.parametrize("name", list(APP_SERVICES))
def test_probes_point_at_endpoints_the_services_serve(
    deployments: dict[str, Doc], name: str
) -> None:
    served = set(re.findall(r'@router\.get\("(/health/\w+)"\)', HEALTH_ROUTES.read_text()))
    container = main_container(deployments[name])
    probed = {
        container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probed <= served
    assert {
        probe["httpGet"]["port"]
        for probe in (container["livenessProbe"], container["readinessProbe"])
    } == {"http"}
