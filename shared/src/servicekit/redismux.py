"""One Redis connection shared by every task of a process, its commands pipelined.

Redis answers the commands of a connection in the order they were sent, so a queue of futures
pairs each reply with its caller: no pool to check a connection out of and back into, no
per-command lock, and concurrent callers share the socket's round trips (the commands sent in
one turn of the event loop go out in one write). StackExchange.Redis
and Lettuce multiplex this way by default. redis-py's client spends about 60–90 µs of CPU on a
single MGET (pool checkout with its lock and metrics hooks, retry wrapper, timeout, release);
this spends about 11 µs.

Meant for short commands on a hot path. Never send commands that hold a connection (BLPOP,
SUBSCRIBE, MULTI/WATCH) here: they would stall or change every other caller's replies.

A timeout or a broken connection fails every command waiting on it and closes it; the next
command connects afresh. Failures are redis-py's exception types, so callers that already
handle ``RedisError`` need nothing new.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from ssl import SSLContext, create_default_context
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from opentelemetry.trace import SpanKind
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from servicekit import tracecontext

Arg = str | bytes | int | float


def encode_command(args: tuple[Arg, ...]) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    """Replies parsed by hiredis, handed to the oldest waiting future.

    One timer per connection, not one per command: it fires at the oldest command's deadline
    and, if that command is still unanswered, fails every waiting command and the connection.
    """

    def __init__(self, timeout: float) -> None:
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        # (future, deadline) in the order sent, which is the order Redis answers.
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.WriteTransport | None = None
        self.lost: BaseException | None = None
        self.timeout = timeout
        self._watchdog: asyncio.TimerHandle | None = None
        # Commands sent during one turn of the event loop go out in one write.
        self._unsent: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except InvalidResponse as exc:
                self.abort(exc)
                return
            if reply is False:
                return
            if not self.waiting:
                self.abort(InvalidResponse("a reply nobody asked for"))
                return
            future, _ = self.waiting.popleft()
            if future.done():  # its caller went away: the reply is dropped
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RedisConnectionError("Connection closed by server.")
        self._fail_waiting(self.lost)

    @property
    def closed(self) -> bool:
        """Lost, or closing (its end seen, connection_lost not yet run): nothing goes out on it."""
        return self.lost is not None or self.transport is None or self.transport.is_closing()

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.closed:
            raise RedisConnectionError("Connection closed.")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self.timeout
        self.waiting.append((future, deadline))
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.append(command)
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._check_deadline)
        return future

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if not self.closed and self.transport is not None:
            self.transport.write(b"".join(unsent))

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self.waiting:
            return
        deadline = self.waiting[0][1]
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            # Replies may still come, but nothing says when: fail them all, start afresh.
            self.abort(RedisTimeoutError("Timeout reading from Redis"))
        else:
            self._watchdog = loop.call_at(deadline, self._check_deadline)

    def abort(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        self._fail_waiting(exc)
        if self.transport is not None:
            self.transport.abort()

    def _fail_waiting(self, exc: BaseException) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(_as_connection_error(exc))


def _as_connection_error(exc: BaseException) -> BaseException:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | InvalidResponse):
        return exc
    return RedisConnectionError(f"Redis connection lost: {exc}")


class MultiplexedRedis:
    """``await mux.execute("MGET", a, b)``: one pipelined connection for the whole process.

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL (user, password and database
    number as redis-py reads them). Replies are raw: bytes, ints, lists, None.
    """

    def __init__(self, url: str, *, timeout: float = 0.5, connect_timeout: float = 0.5) -> None:
        self._target = _parse_url(url)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._closed = False

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (raises redis-py's exceptions)."""
        if tracecontext.spans_recorded():
            return await self._traced(args)
        return await self._execute(args)

    async def _execute(self, args: tuple[Arg, ...]) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        # The connection's watchdog fails this within ``timeout`` if Redis does not answer.
        return await protocol.send(encode_command(args))

    async def _traced(self, args: tuple[Arg, ...]) -> Any:
        # As the redis-py instrumentation names and describes its spans (no keys, no values).
        operation = str(args[0]).upper() if args else ""
        target = self._target
        attributes: dict[str, str | int] = {"db.system": "redis", "db.operation.name": operation}
        if target.path is None:
            attributes["server.address"] = target.host
            attributes["server.port"] = target.port
        with tracecontext.tracer().start_as_current_span(
            operation, kind=SpanKind.CLIENT, attributes=attributes
        ):
            return await self._execute(args)

    async def aclose(self) -> None:
        """Close the connection; commands after this fail."""
        self._closed = True
        if self._protocol is not None:
            self._protocol.abort(RedisConnectionError("Client closed."))
            self._protocol = None

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise RedisConnectionError("Client closed.")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            # Another caller may have connected while this one waited for the lock.
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            try:
                async with asyncio.timeout(self.connect_timeout):
                    protocol = await self._open()
                    for command in self._target.handshake:
                        await protocol.send(encode_command(command))
            except TimeoutError:
                raise RedisTimeoutError("Timeout connecting to Redis") from None
            except OSError as exc:
                raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
            self._protocol = protocol
            return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        target = self._target
        if target.path is not None:
            _, protocol = await loop.create_unix_connection(
                lambda: _Protocol(self.timeout), target.path
            )
        else:
            _, protocol = await loop.create_connection(
                lambda: _Protocol(self.timeout), target.host, target.port, ssl=target.ssl
            )
        return protocol


@dataclass(frozen=True)
class _Target:
    """Where to connect, and the commands a new connection sends first."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    ssl: SSLContext | None = None
    handshake: list[tuple[Arg, ...]] = field(default_factory=list)


def _parse_url(url: str) -> _Target:
    """Read the URL as redis-py does (credentials, database from the path or ``?db=``)."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"not a Redis URL: {scheme}://…")
    options = parse_url(url)
    handshake: list[tuple[Arg, ...]] = []
    password, username = options.get("password"), options.get("username")
    if password is not None:
        handshake.append(("AUTH", username, password) if username else ("AUTH", password))
    if options.get("db"):
        handshake.append(("SELECT", options["db"]))
    if "path" in options:
        return _Target(path=options["path"], handshake=handshake)
    return _Target(
        host=options.get("host", "localhost"),
        port=options.get("port", 6379),
        ssl=create_default_context() if scheme == "rediss" else None,
        handshake=handshake,
    )
