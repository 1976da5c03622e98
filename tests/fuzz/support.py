"""The fuzzing's settings, checks, per-service results and schemathesis auth provider."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from schemathesis import AuthContext, Case
from security.helpers import User, register

from servicekit.testing.forgery import Forger

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))

# Gateway prefix -> the launcher's service name.
SERVICES = {
    "auth": "auth",
    "users": "users",
    "orders": "orders",
    "payments": "payments-gateway",
    "notifications": "notifications",
}

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "ignored_auth",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
]


@dataclass
class ServiceResult:
    """What one service's run did, for the summary at the end of the session."""

    requests: dict[str, int] = field(default_factory=dict)
    linked_steps: int = 0
    failures: int = 0
    seconds: float = 0.0
    stop_reason: str = ""


RESULTS: dict[str, ServiceResult] = {}


def fuzz_config() -> schemathesis.Config:
    """Positive and negative data, the checks above and no example database on disk."""
    settings: dict[str, Any] = {
        "suppress-health-check": ["all"],
        "request-timeout": 30,
        "workers": 1,
        "generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    }
    if os.environ.get("FUZZ_SEED"):
        settings["seed"] = int(os.environ["FUZZ_SEED"])
    return schemathesis.Config.from_dict(settings)


def _client_address() -> str:
    # 198.18.0.0/15 is for benchmarking; each case is a different client of the login throttle.
    number = uuid.uuid4().int
    return f"198.18.{number % 256}.{1 + (number >> 8) % 254}"


def auth_provider(forger: Forger, user: User, gateway: httpx.Client) -> type[Any]:
    """A schemathesis auth provider: a fresh token per request, of the right kind of user."""

    class FreshToken:
        def get(self, case: Case[Any], context: AuthContext) -> str:
            label = context.operation.label
            if label == "GET /users":
                return forger.valid(user.id, roles=["user", "admin"])
            if label == "DELETE /users/me":
                # Deleting the fuzz user would end the run: each deletion gets a user of its own.
                return forger.valid(register(gateway, "Doomed").id)
            return forger.valid(user.id)

        def set(self, case: Case[Any], data: str, context: AuthContext) -> None:
            case.headers["Authorization"] = f"Bearer {data}"
            case.headers["X-Real-IP"] = _client_address()

    return FreshToken
