"""The system as `make run` starts it: gateway routing, request ids, instances, limits."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from servicekit.testing.waiting import wait_until_sync

from .support import SERVICES, System

PREFIXES = ["auth", "users", "orders", "payments", "notifications"]


class TestGateway:
    def test_healthz(self, system: System) -> None:
        response = httpx.get(f"{system.gateway}/healthz")
        assert response.status_code == 200

    @pytest.mark.parametrize("prefix", PREFIXES)
    def test_each_service_openapi_and_docs_through_the_gateway(
        self, system: System, prefix: str
    ) -> None:
        spec = httpx.get(f"{system.gateway}/{prefix}/openapi.json")
        assert spec.status_code == 200
        assert spec.json()["openapi"].startswith("3.")
        docs = httpx.get(f"{system.gateway}/{prefix}/docs")
        assert docs.status_code == 200

    def test_health_is_not_exposed_through_the_gateway(self, system: System) -> None:
        assert httpx.get(f"{system.gateway}/health/ready").status_code == 404
        for service in SERVICES:
            assert httpx.get(f"{system.service_url(service)}/health/live").status_code == 200

    def test_request_id_reaches_the_service_log_and_comes_back(self, system: System) -> None:
        request_id = f"e2e-{uuid.uuid4().hex}"
        response = httpx.get(
            f"{system.gateway}/orders/no-such-order-route", headers={"X-Request-ID": request_id}
        )
        assert response.headers["x-request-id"] == request_id
        assert response.json()["error"]["request_id"] == request_id

        def access_lines() -> list[dict[str, object]]:
            return [
                json.loads(line)
                for line in (system.log("orders-1") + system.log("orders-2")).splitlines()
                if request_id in line and line.startswith("{")
            ]

        # The access line is written once the response has gone out: it may trail it a little.
        lines = wait_until_sync(access_lines, timeout=5, what="access lines")
        assert any(
            line.get("request_id") == request_id and line.get("event") == "http.request"
            for line in lines
        ), lines

    def test_a_generated_request_id_is_returned(self, system: System) -> None:
        response = httpx.get(f"{system.gateway}/auth/openapi.json")
        assert len(response.headers["x-request-id"]) >= 16

    async def test_requests_reach_both_instances(self, system: System) -> None:
        marker = f"/users/openapi.json?probe={uuid.uuid4().hex}"
        async with httpx.AsyncClient(base_url=system.gateway) as client:
            for _ in range(6):
                responses = await asyncio.gather(*(client.get(marker) for _ in range(5)))
                assert all(r.status_code == 200 for r in responses)
        first, second = system.log("users-1"), system.log("users-2")
        assert "/users/openapi.json" in first
        assert "/users/openapi.json" in second

    def test_oversize_body_is_413_json(self, system: System) -> None:
        body = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        response = httpx.post(
            f"{system.gateway}/auth/register",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]

    def test_oversize_headers_are_400_json(self, system: System) -> None:
        response = httpx.get(f"{system.gateway}/users/me", headers={"X-Padding": "x" * 20_000})

        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == "headers_too_large"
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]

    async def test_a_burst_past_the_rate_limit_is_429_json(self, system: System) -> None:
        statuses, replies = await self.burst(system, "/.well-known/jwks.json", client="127.0.0.2")
        assert statuses.count(b"200") > 0
        assert statuses.count(b"429") > 0, "no request was throttled"
        limited = next(r for r in replies if r.startswith(b"HTTP/1.1 429"))
        head, _, body = limited.partition(b"\r\n\r\n")
        assert b"retry-after: 1" in head.lower()
        assert b"application/json" in head.lower()
        assert b'"too_many_requests"' in body

    async def test_unknown_paths_are_rate_limited_too(self, system: System) -> None:
        statuses, replies = await self.burst(system, "/no/such/route", client="127.0.0.3")

        assert statuses.count(b"404") > 0
        assert statuses.count(b"429") > 0, "unknown paths escaped the rate limit"
        not_found = next(r for r in replies if r.startswith(b"HTTP/1.1 404"))
        assert b'"not_found"' in not_found.partition(b"\r\n\r\n")[2]

    @staticmethod
    async def burst(system: System, path: str, *, client: str) -> tuple[list[bytes], list[bytes]]:
        """600 requests for ``path`` at once: (their status codes, the raw replies).

        They come from their own loopback address (``client``): the limit is per client
        address, so the other tests, from 127.0.0.1, keep their whole budget, in any order.

        The connections are opened first, then every request is written at once, so the burst
        reaches nginx faster than the limit (rate + burst) lets through, however slow the
        machine is. Throttled requests never reach a service.
        """
        port = system.ports["GATEWAY"]
        request = f"GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n".encode()
        connections = [
            await asyncio.open_connection("127.0.0.1", port, local_addr=(client, 0))
            for _ in range(600)
        ]
        for _, writer in connections:
            writer.write(request)

        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
            data = await asyncio.wait_for(reader.read(), timeout=60)
            writer.close()
            return data

        replies = await asyncio.gather(*(reply(r, w) for r, w in connections))
        statuses = [r.split(b" ", 2)[1] for r in replies if r.startswith(b"HTTP/1.1")]
        return statuses, replies
