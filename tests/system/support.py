"""The order flow's settings, an in-loop uvicorn server and what the fixtures hand the tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import uvicorn
from starlette.types import ASGIApp

from svctools.smtp_sink import SmtpSink

FAST_RETRIES = [200, 500, 1000]
WEBHOOK_SECRET = "whsec_system_tests_only"


class _Server(uvicorn.Server):
    """uvicorn in the test's event loop, leaving signal handling to pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` over loopback on a free port until the block ends; yields its base URL."""
    # IPPROTO_TCP explicitly, or asyncio skips TCP_NODELAY and each answer costs ~40 ms.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server stopped during startup")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        listener.close()


@dataclass(frozen=True)
class Databases:
    """This run's migrated databases of the order flow's services."""

    orders: str
    payments: str
    notifications: str


@dataclass
class OrderFlow:
    """The running services and how to reach them."""

    exchange: str
    orders: httpx.AsyncClient
    payments: httpx.AsyncClient
    notifications: httpx.AsyncClient
    sink: SmtpSink
