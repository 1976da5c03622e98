"""deploy/k8s: schema-valid manifests, complete kustomizations, one scalable unit per service."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from test_compose import APP_SERVICES, SERVICE_ENV_VARS

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
BASE = K8S / "base"
DEV = K8S / "overlays" / "dev"
RABBITMQ_CLUSTER = K8S / "components" / "rabbitmq-cluster"
KUBERNETES_VERSION = "1.34"

# Variables a service container gets only to compose its connection URLs with $(VAR).
URL_INPUTS = frozenset({"DATABASE_PASSWORD", "AMQP_PASSWORD", "REDIS_PASSWORD"})
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE", re.IGNORECASE)
LITERAL_CREDENTIALS = re.compile(r"://[^/\s@:]*:(?!\$\()[^@/\s]+@")
DEV_ONLY = {"simulator", "mailpit"}

Doc = dict[str, Any]


def load_yaml(path: Path) -> list[Doc]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def kustomization_files() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def kustomization_of(path: Path) -> Doc:
    return load_yaml(path)[0]


def resource_files(directory: Path) -> Iterator[Path]:
    """Every manifest file a kustomization builds from, following directory resources."""
    kustomization = kustomization_of(directory / "kustomization.yaml")
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            yield from resource_files(target)
        else:
            yield target


def documents(directory: Path) -> list[Doc]:
    return [doc for path in resource_files(directory) for doc in load_yaml(path)]


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_spec(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def main_container(deployment: Doc) -> Doc:
    containers: list[Doc] = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    return containers[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def dev_secret_keys() -> dict[str, set[str]]:
    generators = kustomization_of(DEV / "kustomization.yaml").get("secretGenerator", [])
    return {
        generator["name"]: {literal.split("=", 1)[0] for literal in generator["literals"]}
        for generator in generators
    }


@pytest.fixture(scope="module")
def base_docs() -> list[Doc]:
    return documents(BASE)


@pytest.fixture(scope="module")
def dev_docs() -> list[Doc]:
    return documents(DEV)


@pytest.fixture(scope="module")
def deployments(base_docs: list[Doc]) -> dict[str, Doc]:
    return by_kind(base_docs, "Deployment")


@pytest.fixture(scope="module")
def config_maps(base_docs: list[Doc]) -> dict[str, Doc]:
    return by_kind(base_docs, "ConfigMap")


class TestKustomizations:
    @pytest.mark.parametrize("path", kustomization_files(), ids=lambda p: str(p.relative_to(K8S)))
    def test_everything_a_kustomization_names_exists(self, path: Path) -> None:
        directory = path.parent
        kustomization = kustomization_of(path)

        for entry in kustomization.get("resources", []):
            target = directory / entry
            assert target.is_file() or (target / "kustomization.yaml").is_file(), entry
        for patch in kustomization.get("patches", []):
            if "path" in patch:
                assert (directory / patch["path"]).is_file(), patch["path"]
        for generator in kustomization.get("configMapGenerator", []):
            for file in generator.get("files", []):
                assert (directory / file.split("=")[-1]).is_file(), file

    def test_every_manifest_is_used_by_a_kustomization(self) -> None:
        used: set[Path] = set()
        for path in kustomization_files():
            directory = path.parent
            kustomization = kustomization_of(path)
            used.update((directory / e).resolve() for e in kustomization.get("resources", []))
            used.update(
                (directory / p["path"]).resolve()
                for p in kustomization.get("patches", [])
                if "path" in p
            )
        manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}

        assert manifests - used == set()

    def test_base_is_namespace_less_and_dev_sets_the_namespace(
        self, base_docs: list[Doc], dev_docs: list[Doc]
    ) -> None:
        assert all("namespace" not in doc["metadata"] for doc in base_docs)
        assert "namespace" not in kustomization_of(BASE / "kustomization.yaml")
        namespace = kustomization_of(DEV / "kustomization.yaml")["namespace"]
        assert namespace in by_kind(dev_docs, "Namespace")

    def test_dev_overlay_adds_the_test_doubles_and_pins_every_built_image(
        self, base_docs: list[Doc], dev_docs: list[Doc]
    ) -> None:
        dev_deployments = by_kind(dev_docs, "Deployment")
        images = {
            container["image"]
            for deployment in dev_deployments.values()
            for container in pod_spec(deployment)["containers"]
        }
        pinned = {image["name"] for image in kustomization_of(DEV / "kustomization.yaml")["images"]}

        assert set(dev_deployments) >= DEV_ONLY
        assert set(by_kind(dev_docs, "Service")) >= DEV_ONLY
        assert not DEV_ONLY & set(by_kind(base_docs, "Deployment"))
        assert {image for image in images if ":" not in image} <= pinned


class TestSchemas:
    @pytest.mark.parametrize("directory", [BASE, DEV], ids=lambda p: str(p.relative_to(K8S)))
    def test_every_document_is_valid_kubernetes(self, directory: Path) -> None:
        docs = documents(directory)

        assert docs
        for doc in docs:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)

    def test_the_validator_rejects_a_misspelt_field(self, deployments: dict[str, Doc]) -> None:
        broken = copy.deepcopy(deployments["orders"])
        pod_spec(broken)["terminationGracePeriod"] = 30

        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)

    def test_patches_parse_and_target_existing_resources(self, base_docs: list[Doc]) -> None:
        kustomization = kustomization_of(DEV / "kustomization.yaml")
        known = {(doc["kind"], doc["metadata"]["name"]) for doc in base_docs}

        for patch in kustomization["patches"]:
            if "path" in patch:
                for doc in load_yaml(DEV / patch["path"]):
                    assert (doc["kind"], doc["metadata"]["name"]) in known
            else:
                assert any(kind == patch["target"]["kind"] for kind, _ in known)


class TestDeployments:
    def test_one_deployment_per_service_and_the_gateway(self, deployments: dict[str, Doc]) -> None:
        assert set(deployments) == {*APP_SERVICES, "gateway"}

    @pytest.mark.parametrize("name", [*APP_SERVICES, "gateway"])
    def test_probes_resources_and_draining(self, deployments: dict[str, Doc], name: str) -> None:
        deployment = deployments[name]
        spec = pod_spec(deployment)
        container = main_container(deployment)

        assert container["livenessProbe"]["httpGet"]
        assert container["readinessProbe"]["httpGet"]
        assert spec["terminationGracePeriodSeconds"] == 30
        assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
        for each in [*spec.get("initContainers", []), *spec["containers"]]:
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(each["resources"][bound]), each["name"]
            assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns replicas"

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_service_probes_migrations_and_command(
        self, deployments: dict[str, Doc], name: str
    ) -> None:
        _, package, _, port = APP_SERVICES[name]
        deployment = deployments[name]
        container = main_container(deployment)
        (migrate,) = pod_spec(deployment)["initContainers"]

        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert container["command"][:3] == ["uvicorn", "--factory", f"{package}.main:create_app"]
        assert container["command"][container["command"].index("--port") + 1] == str(port)
        assert migrate["command"] == ["python", "-m", f"{package}.cli", "migrate"]
        assert migrate["image"] == container["image"]
        assert migrate["env"] == container["env"]
        assert migrate["envFrom"] == container["envFrom"]

    @pytest.mark.parametrize("name", [*APP_SERVICES, "gateway"])
    def test_matching_service_autoscaler_and_disruption_budget(
        self, base_docs: list[Doc], deployments: dict[str, Doc], name: str
    ) -> None:
        deployment = deployments[name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        port_names = {port["name"] for port in main_container(deployment)["ports"]}
        service = by_kind(base_docs, "Service")[name]
        hpa = by_kind(base_docs, "HorizontalPodAutoscaler")[name]
        pdb = by_kind(base_docs, "PodDisruptionBudget")[name]

        assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
        assert selects(service["spec"]["selector"], labels)
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpa["spec"]["minReplicas"] >= 2
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        assert pdb["apiVersion"] == "policy/v1"
        assert selects(pdb["spec"]["selector"]["matchLabels"], labels)

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_service_port_is_the_one_the_gateway_uses(
        self, base_docs: list[Doc], name: str
    ) -> None:
        port = APP_SERVICES[name][3]
        service = by_kind(base_docs, "Service")[name]
        conf = (BASE / "gateway" / "nginx.conf").read_text()

        assert [p["port"] for p in service["spec"]["ports"]] == [port]
        assert re.search(rf"^\s*server {name}:{port} ", conf, re.MULTILINE)

    def test_gateway_mounts_the_generated_nginx_conf(self, deployments: dict[str, Doc]) -> None:
        kustomization = kustomization_of(BASE / "kustomization.yaml")
        generated = {g["name"]: g["files"] for g in kustomization["configMapGenerator"]}
        volumes = {v["name"]: v for v in pod_spec(deployments["gateway"])["volumes"]}
        container = main_container(deployments["gateway"])
        mount = next(m for m in container["volumeMounts"] if m["name"] == "config")

        assert generated["gateway-nginx"] == ["gateway/nginx.conf"]
        assert volumes["config"]["configMap"]["name"] == "gateway-nginx"
        assert f"{mount['mountPath']}/nginx.conf" in container["command"]
        assert container["image"] == "nginx:1.27-alpine"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


class TestConfiguration:
    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_env_names_are_known_settings(
        self, deployments: dict[str, Doc], config_maps: dict[str, Doc], name: str
    ) -> None:
        prefix = APP_SERVICES[name][2]
        container = main_container(deployments[name])
        sources = [ref["configMapRef"]["name"] for ref in container["envFrom"]]
        own_config = set(config_maps[f"{name}-config"]["data"])
        env_names = [entry["name"] for entry in container["env"]]

        assert sources == ["platform", f"{name}-config"]
        assert own_config <= SERVICE_ENV_VARS[name]
        assert set(env_names) <= SERVICE_ENV_VARS[name] | URL_INPUTS
        settings = own_config | set(env_names) - URL_INPUTS
        for required in ("DATABASE_URL", "REDIS_URL", "AMQP_URL", "JWKS_URL", "ENVIRONMENT"):
            assert prefix + required in settings
        assert config_maps[f"{name}-config"]["data"][f"{prefix}PORT"] == str(APP_SERVICES[name][3])

    @pytest.mark.parametrize("name", list(APP_SERVICES))
    def test_every_variable_reference_resolves(
        self, deployments: dict[str, Doc], config_maps: dict[str, Doc], name: str
    ) -> None:
        defined = set(config_maps["platform"]["data"]) | set(config_maps[f"{name}-config"]["data"])
        for entry in main_container(deployments[name])["env"]:
            for reference in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
                assert reference in defined, f"{entry['name']} uses undefined $({reference})"
            defined.add(entry["name"])

    def test_no_literal_secrets_in_base(self, base_docs: list[Doc]) -> None:
        assert not by_kind(base_docs, "Secret")
        for doc in base_docs:
            if doc["kind"] == "ConfigMap":
                for key, value in doc["data"].items():
                    assert not SECRET_NAME.search(key), key
                    assert not LITERAL_CREDENTIALS.search(str(value)), key
            if doc["kind"] != "Deployment":
                continue
            spec = pod_spec(doc)
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                for entry in container.get("env", []):
                    if SECRET_NAME.search(entry["name"]):
                        assert "secretKeyRef" in entry["valueFrom"], entry["name"]
                    assert not LITERAL_CREDENTIALS.search(entry.get("value", "")), entry["name"]

    def test_dev_overlay_provides_every_secret_key_referenced(self, dev_docs: list[Doc]) -> None:
        provided = dev_secret_keys()
        for deployment in by_kind(dev_docs, "Deployment").values():
            spec = pod_spec(deployment)
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                for entry in container.get("env", []):
                    ref = entry.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in provided.get(ref["name"], set()), ref

    def test_platform_points_at_external_infrastructure(self, config_maps: dict[str, Doc]) -> None:
        platform = config_maps["platform"]["data"]

        assert platform["ENVIRONMENT"] == "production"
        for host in ("POSTGRES_HOST", "REDIS_HOST", "RABBITMQ_HOST", "SMTP_HOST"):
            assert platform[host]
        assert not {"postgres", "redis", "rabbitmq"} & set(by_kind(documents(BASE), "Deployment"))


def rabbitmqcluster_schema() -> Doc:
    schema: Doc = json.loads(
        (Path(__file__).parent / "schemas" / "rabbitmqcluster-v1beta1.json").read_text()
    )
    return schema


def component_documents(directory: Path) -> tuple[list[Doc], list[Doc]]:
    """(resources, patches) of a kustomize Component."""
    kustomization = kustomization_of(directory / "kustomization.yaml")
    resources = [
        doc for entry in kustomization["resources"] for doc in load_yaml(directory / entry)
    ]
    patches = [
        doc
        for patch in kustomization.get("patches", [])
        for doc in load_yaml(directory / patch["path"])
    ]
    return resources, patches


class TestRabbitmqClusterComponent:
    """The optional broker cluster: the operator's RabbitmqCluster, the services pointed at it."""

    def test_it_is_a_component_an_overlay_can_add(self) -> None:
        kustomization = kustomization_of(RABBITMQ_CLUSTER / "kustomization.yaml")

        assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
        assert kustomization["kind"] == "Component"

    def test_the_cluster_is_schema_valid_with_three_spread_nodes(self) -> None:
        resources, _ = component_documents(RABBITMQ_CLUSTER)
        (cluster,) = [doc for doc in resources if doc["kind"] == "RabbitmqCluster"]
        schema = rabbitmqcluster_schema()
        jsonschema.validate(cluster, schema)
        spec = cluster["spec"]
        # The nested Kubernetes types, against Kubernetes' own schema (inside a pod spec).
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "check"},
            "spec": {
                "affinity": spec["affinity"],
                "containers": [
                    {"name": "rabbitmq", "image": spec["image"], "resources": spec["resources"]}
                ],
            },
        }
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)

        assert spec["replicas"] == 3
        anti = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
        assert spec["resources"]["requests"]["memory"] == spec["resources"]["limits"]["memory"]

    def test_the_schema_refuses_a_misspelt_field(self) -> None:
        resources, _ = component_documents(RABBITMQ_CLUSTER)
        broken = copy.deepcopy(next(doc for doc in resources if doc["kind"] == "RabbitmqCluster"))
        broken["spec"]["replica"] = 3
        schema = rabbitmqcluster_schema()

        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)

    def test_every_service_is_pointed_at_the_clusters_client_service(
        self, config_maps: dict[str, Doc], deployments: dict[str, Doc]
    ) -> None:
        resources, patches = component_documents(RABBITMQ_CLUSTER)
        cluster_name = next(d for d in resources if d["kind"] == "RabbitmqCluster")["metadata"][
            "name"
        ]
        (platform,) = patches

        assert (platform["kind"], platform["metadata"]["name"]) == ("ConfigMap", "platform")
        assert set(platform["data"]) <= set(config_maps["platform"]["data"])
        # The operator names the client Service after the cluster.
        assert platform["data"]["RABBITMQ_HOST"] == cluster_name
        for name in APP_SERVICES:
            prefix = APP_SERVICES[name][2]
            env = {e["name"]: e.get("value", "") for e in main_container(deployments[name])["env"]}
            assert "@$(RABBITMQ_HOST):$(RABBITMQ_PORT)/" in env[f"{prefix}AMQP_URL"]
