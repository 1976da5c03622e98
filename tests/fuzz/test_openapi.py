"""What the fuzzing relies on: each service documents the errors it answers with.

A client generated from the OpenAPI document (or a fuzzer checking status codes) only knows the
statuses it is told about, so every operation declares its error statuses with the error
envelope, and a method a path does not support is refused with the full list in ``Allow``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from e2e.support import System

from .support import SERVICES

METHODS = ("get", "put", "post", "patch", "delete")


def _document(system: System, prefix: str) -> dict[str, Any]:
    response = httpx.get(f"{system.service_url(SERVICES[prefix])}/{prefix}/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


@pytest.mark.parametrize("prefix", list(SERVICES))
def test_every_error_status_is_declared_with_the_envelope(system: System, prefix: str) -> None:
    document = _document(system, prefix)
    envelope = document["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    problems = []
    for method, path, operation in _operations(document):
        label = f"{method.upper()} {path}"
        responses = operation["responses"]
        if path == "/.well-known/jwks.json":
            continue
        expected = {"503"}
        if operation.get("security"):
            expected.add("401")
        if any(p["in"] in ("path", "query") for p in operation.get("parameters", [])):
            expected.add("422")
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            expected.add("404")
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            expected |= {"400", "415", "422"}
        if missing := expected - set(responses):
            problems.append(f"{label}: {sorted(missing)} not declared")
        for status, response in responses.items():
            if not status.startswith(("4", "5")):
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") != "#/components/schemas/ErrorEnvelope":
                problems.append(f"{label}: {status} is not the error envelope")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("prefix", list(SERVICES))
def test_an_unsupported_method_is_405_listing_every_supported_one(
    system: System, prefix: str
) -> None:
    document = _document(system, prefix)
    base = system.service_url(SERVICES[prefix])
    for path, item in document["paths"].items():
        documented = {method.upper() for method in item if method in METHODS}
        concrete = re.sub(r"\{[^}]+\}", str(uuid.UUID(int=1)), path)
        response = httpx.request("OPTIONS", f"{base}{concrete}")
        assert response.status_code == 405, (path, response.status_code)
        assert response.json()["error"]["code"] == "method_not_allowed"
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed == documented, (path, allowed, documented)
