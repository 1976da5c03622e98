"""Shared fixtures: serve an ASGI app for real over loopback, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import uvicorn
from starlette.types import ASGIApp

ServeApp = Callable[[ASGIApp], Awaitable[str]]


class _InProcessServer(uvicorn.Server):
    """uvicorn in the test's event loop, leaving signal handling to pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def serve(app: ASGIApp) -> str:
        # IPPROTO_TCP explicitly, or asyncio skips TCP_NODELAY and each answer costs ~40 ms.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        server = _InProcessServer(uvicorn.Config(app, log_config=None, log_level="warning"))
        task = asyncio.create_task(server.serve(sockets=[listener]))
        running.append((server, task))
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the test server stopped during startup")
            await asyncio.sleep(0.01)
        return f"http://127.0.0.1:{port}"

    yield serve
    for server, task in reversed(running):
        server.should_exit = True
        await task
