"""The gateway's limits: body size (413) and per-client request rate (429), as JSON envelopes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from e2e.support import System

from .helpers import User, assert_error_envelope, client_from

TOO_LARGE = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'

WRITES = [
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("PATCH", "/users/me"),
    ("POST", "/orders"),
    ("POST", "/payments/webhooks/provider"),
]


class TestBodySize:
    @pytest.mark.parametrize(("method", "path"), WRITES)
    def test_an_oversize_body_is_413(
        self, api: httpx.Client, alice: User, method: str, path: str
    ) -> None:
        response = api.request(
            method,
            path,
            content=TOO_LARGE,
            headers={**alice.auth, "Content-Type": "application/json"},
        )
        error = assert_error_envelope(response, 413)
        assert error["code"] == "payload_too_large"
        assert error["request_id"] == response.headers["x-request-id"]

    def test_an_oversize_chunked_body_is_413(self, api: httpx.Client, alice: User) -> None:
        def chunks() -> Iterator[bytes]:
            for start in range(0, len(TOO_LARGE), 64 * 1024):
                yield TOO_LARGE[start : start + 64 * 1024]

        response = api.patch(
            "/users/me",
            content=chunks(),
            headers={**alice.auth, "Content-Type": "application/json"},
        )
        assert_error_envelope(response, 413)


class TestRate:
    async def test_a_burst_past_the_limit_is_429_for_that_client_only(self, system: System) -> None:
        # From a loopback address of its own, so the rest of the suite keeps its budget.
        address = "127.0.0.3"
        port = system.ports["GATEWAY"]
        # Pipelined on many raw connections so the burst reaches nginx faster than any client
        # sending one request at a time could, however slow the machine is.
        request = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: gateway\r\n\r\n"
        connections, per_connection = 16, 100

        async def burst() -> bytes:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(address, 0)
            )
            writer.write(request * (per_connection - 1))
            writer.write(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), timeout=60)
            writer.close()
            return data

        replies = b"".join(await asyncio.gather(*(burst() for _ in range(connections))))
        assert replies.count(b"HTTP/1.1 200") > 0
        assert replies.count(b"HTTP/1.1 429") > 0, "no request was throttled"
        limited = replies[replies.index(b"HTTP/1.1 429") :]
        head, _, rest = limited.partition(b"\r\n\r\n")
        assert b"retry-after: 1" in head.lower()
        assert b"application/json" in head.lower()
        assert b'"too_many_requests"' in rest[:400]
        assert b'"request_id"' in rest[:400]

        # Another client is not throttled by that one's burst.
        with client_from(system, "127.0.0.4") as other:
            assert other.get("/.well-known/jwks.json").status_code == 200
