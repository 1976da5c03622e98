"""Shared fixtures: serve an ASGI app for real over loopback, on a free port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from starlette.types import ASGIApp

from servicekit.testing.serving import serving

ServeApp = Callable[[ASGIApp], Awaitable[str]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Ports that were free a moment ago, for servers started in another process."""
    return _free_port


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Serve apps with uvicorn on ephemeral loopback ports; returns each one's base URL."""
    async with contextlib.AsyncExitStack() as running:

        async def serve(app: ASGIApp) -> str:
            return await running.enter_async_context(serving(app))

        yield serve
