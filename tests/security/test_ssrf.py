"""Server-side request forgery: no endpoint fetches a URL a client supplies.

Structurally, no operation of any service takes a URL (by format or by name) in a parameter or
body field; and URL-looking values sent to free-text fields never make a service connect out.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e.support import System

from servicekit.testing.waiting import wait_until_sync

from .helpers import User, place_order

SERVICES = {
    "auth": "auth",
    "users": "users",
    "orders": "orders",
    "payments": "payments-gateway",
    "notifications": "notifications",
}
URL_FORMATS = {"uri", "url", "uri-reference", "iri", "iri-reference", "uri-template", "hostname"}
URL_NAMES = re.compile(r"url|uri|callback|webhook|href|link|redirect|endpoint|host", re.IGNORECASE)
METHODS = {"get", "put", "post", "patch", "delete"}


def _resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _schema_fields(
    document: dict[str, Any], schema: Any, where: str, seen: set[int]
) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """Every (field path, field name, schema) under ``schema``, following $refs."""
    schema = _resolve(document, schema)
    if not isinstance(schema, dict) or id(schema) in seen:
        return
    seen = seen | {id(schema)}
    yield where, None, schema
    for name, sub in schema.get("properties", {}).items():
        resolved = _resolve(document, sub)
        yield f"{where}.{name}", name, resolved if isinstance(resolved, dict) else {}
        yield from _schema_fields(document, sub, f"{where}.{name}", seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _schema_fields(document, schema[key], f"{where}[]", seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from _schema_fields(document, sub, where, seen)


def request_fields(document: dict[str, Any]) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """Every parameter and request-body field of every operation of an OpenAPI document."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            label = f"{method.upper()} {path}"
            for parameter in [*item.get("parameters", []), *operation.get("parameters", [])]:
                parameter = _resolve(document, parameter)
                where = f"{label} {parameter['in']}:{parameter['name']}"
                yield where, parameter["name"], _resolve(document, parameter.get("schema", {}))
                yield from _schema_fields(document, parameter.get("schema", {}), where, set())
            body = operation.get("requestBody", {})
            for media_type, content in _resolve(document, body).get("content", {}).items():
                where = f"{label} body({media_type})"
                yield from _schema_fields(document, content.get("schema", {}), where, set())


class TestNoUrlInputs:
    @pytest.mark.parametrize("prefix", list(SERVICES))
    def test_no_request_field_is_a_url(self, system: System, prefix: str) -> None:
        document = httpx.get(f"{system.service_url(SERVICES[prefix])}/{prefix}/openapi.json").json()
        fields = list(request_fields(document))
        assert fields, "the document lists no request fields at all"
        offending = [
            where
            for where, name, schema in fields
            if schema.get("format") in URL_FORMATS or (name is not None and URL_NAMES.search(name))
        ]
        assert not offending, f"request fields that look like URLs: {offending}"

    def test_the_walk_finds_the_fields_it_should(self, system: System) -> None:
        # A walker that finds nothing would pass the test above vacuously.
        document = httpx.get(f"{system.service_url('orders')}/orders/openapi.json").json()
        names = {name for _, name, _ in request_fields(document)}
        assert {"items", "sku", "unit_price", "payment_token", "limit", "cursor"} <= names


class Listener:
    """A TCP server that only counts the connections it is offered."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    try:
        yield server
    finally:
        server.close()


class TestUrlsInFreeText:
    def test_no_service_connects_to_a_url_given_as_text(
        self, api: httpx.Client, alice: User, listener: Listener
    ) -> None:
        url = f"http://127.0.0.1:{listener.port}/ssrf-{uuid.uuid4().hex[:8]}"
        # The listener works: a connection to it is counted.
        with socket.create_connection(("127.0.0.1", listener.port), timeout=2):
            pass
        wait_until_sync(lambda: listener.connections == 1, timeout=2)
        listener.connections = 0

        email = f"ssrf.{uuid.uuid4().hex[:8]}@example.com"
        password = "correct horse battery staple 42"
        registered = api.post(
            "/auth/register", json={"email": email, "password": password, "name": url}
        )
        assert registered.status_code == 201, registered.text
        patched = api.patch("/users/me", json={"name": url[:100], "bio": url}, headers=alice.auth)
        assert patched.status_code == 200, patched.text
        sku = place_order(
            api,
            alice,
            items=[{"sku": url, "quantity": 1, "unit_price": "1.00"}],
            token="tok_decline_sec",
        )
        assert 400 <= sku.status_code < 500, sku.text
        token = place_order(api, alice, token=url)
        assert token.status_code == 201, token.text
        order_id = token.json()["id"]
        hints = {
            "X-Forwarded-Host": f"127.0.0.1:{listener.port}",
            "Forwarded": f"host=127.0.0.1:{listener.port}",
            "Referer": url,
            "Origin": url,
        }
        assert api.get("/users/me", headers={**alice.auth, **hints}).status_code == 200

        # Give every consumer time to act on the events these caused (profile, email, charge).
        settled = wait_until_sync(
            lambda: (
                api.get(f"/orders/{order_id}", headers=alice.auth).json()["status"] != "pending"
            ),
            timeout=15,
        )
        assert settled, "the order's payment never settled"
        time.sleep(1)
        assert listener.connections == 0, "a service connected to a URL a client supplied"
