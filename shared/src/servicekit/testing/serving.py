"""Serve an ASGI app for real with uvicorn, in the test's own event loop, on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from servicekit.testing.waiting import wait_until


class _InLoopServer(uvicorn.Server):
    """uvicorn in the test's event loop, leaving signal handling to pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def loopback_socket() -> socket.socket:
    """A socket bound to a free loopback port, for an app that must know its URL before it runs."""
    # IPPROTO_TCP explicitly, or asyncio skips TCP_NODELAY and each answer costs ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(
    app: ASGIApp, sock: socket.socket | None = None, **config: Any
) -> AsyncIterator[str]:
    """Serve ``app`` on ``sock`` (a fresh loopback one by default) until the block ends.

    Yields the base URL once uvicorn has started (the app's lifespan included). ``config``
    goes to ``uvicorn.Config``.
    """
    sock = sock or loopback_socket()
    server = _InLoopServer(
        uvicorn.Config(app, **{"log_config": None, "log_level": "warning", **config})
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))

    def started() -> bool:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped during startup")
        return bool(server.started)

    try:
        await wait_until(started, timeout=30, interval=0.01, what="the server to start")
    except BaseException:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
