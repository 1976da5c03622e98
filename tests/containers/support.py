"""The compose project's services and ports, the docker CLI and the running System."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = REPO_ROOT / "tests" / "containers" / "compose.test.yml"
# Everything but Prometheus and Grafana, which are not built from Debian's packages here.
SERVICES = (
    "postgres",
    "redis",
    "rabbitmq",
    "mailpit",
    "simulator",
    "auth",
    "users",
    "orders",
    "payments-gateway",
    "notifications",
    "gateway",
)
SCALE = {"orders": 3, "payments-gateway": 2}
UP_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


@dataclass
class System:
    """A running compose project: its CLI, its published URLs, a registered user."""

    project: str
    env: dict[str, str]
    gateway: str
    simulator: str
    mail: str
    started_at: float
    user: dict[str, str] = field(default_factory=dict)
    # What `docker compose up` reported while it brought the project up from cold: one
    # "Container <name>  <Starting|Started|Waiting|Healthy|...>" line per step, in order.
    cold_start_progress: str = ""

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        return self._compose(*args, timeout=timeout, check=check).stdout

    def compose_progress(self, *args: str, timeout: float = 300) -> str:
        """Run a compose command that must succeed; return its progress report (stderr)."""
        return self._compose(*args, timeout=timeout, check=True).stderr

    def _compose(self, *args: str, timeout: float, check: bool) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "-p", self.project, "-f", "docker-compose.yml"]
        command += ["-f", str(OVERRIDE.relative_to(REPO_ROOT)), *args]
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        return result

    def containers(self, service: str | None = None) -> list[str]:
        args = ["ps", "-q"] + ([service] if service else [])
        return self.compose(*args).split()

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(docker("inspect", container))[0]

    def logs(self, container: str) -> str:
        result = subprocess.run(
            ["docker", "logs", container], capture_output=True, text=True, check=True
        )
        return result.stdout + result.stderr

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway, timeout=30)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user['access_token']}"}

    def ledger(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.simulator}/__admin/ledger", timeout=10)
        response.raise_for_status()
        return list(response.json())

    def charges_for(self, order_id: str) -> list[dict[str, Any]]:
        return [
            entry
            for entry in self.ledger()
            if entry.get("type") == "charge" and order_id in json.dumps(entry)
        ]


def register(system: System) -> dict[str, str]:
    email = f"containers.{uuid.uuid4().hex[:12]}@example.com"
    password = secrets.token_urlsafe(16)
    with system.client() as client:
        created = client.post(
            "/auth/register", json={"email": email, "password": password, "name": "Container"}
        )
        assert created.status_code == 201, created.text
        tokens = client.post("/auth/login", json={"email": email, "password": password})
        assert tokens.status_code == 200, tokens.text
    return {"email": email, "id": created.json()["id"], **tokens.json()}
