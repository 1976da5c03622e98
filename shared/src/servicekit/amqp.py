"""Connections to RabbitMQ given as several addresses: the nodes of a cluster.

aio-pika's ``RobustConnection`` reconnects, restores its channels, re-declares their exchanges
and queues and consumes again, but always to the one URL it was given. ``FailoverConnection``
is that connection with a list of URLs: every lost connection and every failed attempt moves it
to the next address, so a client whose node dies is on a live one at its next attempt
(``reconnect_interval``, a second by default). It hooks ``_on_connection_close``, which aio-pika
calls for both, and changes nothing else of the reconnect logic.

A setting holds one URL or several separated by commas (each a whole URL: credentials, port,
vhost and query; a comma inside a password must be written ``%2C``)::

    amqp://shop:secret@rabbit-0:5672/shop,amqp://shop:secret@rabbit-1:5672/shop

Clients start at a random address, so the connections of many processes spread over the nodes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

#: Seconds between two connection attempts (aio-pika's default is 5).
RECONNECT_INTERVAL = 1.0


def broker_urls(value: str | Sequence[str]) -> list[str]:
    """The addresses in ``value``: one URL, a comma-separated list, or a sequence of them."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = [item.strip() for item in items if item.strip()]
    if not urls:
        raise ValueError("no broker address given")
    for url in urls:
        parsed = URL(url)
        if parsed.scheme not in ("amqp", "amqps") or not parsed.host:
            raise ValueError(f"not an amqp:// or amqps:// URL with a host: {redact(url)!r}")
    return urls


def redact(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    parsed = URL(url)
    return str(parsed.with_password("******")) if parsed.password else url


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection that moves on to the next address whenever it loses its node."""

    def __init__(self, urls: Sequence[str], *, start: int = 0, **kwargs: Any) -> None:
        if not urls:
            raise ValueError("no broker address given")
        self.urls = [URL(url) for url in urls]
        self._index = start % len(self.urls)
        super().__init__(self.urls[self._index], **kwargs)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # aio-pika calls this when an open connection is lost and when an attempt fails; the
        # reconnect loop then connects to ``self.url``, so pointing it at the next node is all
        # failover takes. A close asked for by the application stays where it is.
        if not self._close_called and len(self.urls) > 1:
            self._index = (self._index + 1) % len(self.urls)
            self.url = self.urls[self._index]
        await super()._on_connection_close(closing)


async def connect_failover(
    urls: str | Sequence[str],
    *,
    timeout: float | None = None,
    reconnect_interval: float = RECONNECT_INTERVAL,
    **kwargs: Any,
) -> FailoverConnection:
    """Connect to the first address that answers (starting at a random one) and stay connected.

    Raises the last attempt's error when no address answers; once connected, the connection
    reconnects by itself, trying the addresses in turn.
    """
    addresses = broker_urls(urls)
    start = random.randrange(len(addresses))  # noqa: S311 - spreading load, not security
    failure: BaseException | None = None
    for offset in range(len(addresses)):
        connection = FailoverConnection(
            addresses, start=start + offset, reconnect_interval=reconnect_interval, **kwargs
        )
        try:
            await connection.connect(timeout=timeout)
        except CONNECTION_EXCEPTIONS as exc:
            failure = exc
            await connection.close()
            continue
        return connection
    assert failure is not None
    raise failure


async def connect_first(
    urls: str | Sequence[str], *, timeout: float | None = None, **kwargs: Any
) -> AbstractConnection:
    """A plain (not reconnecting) connection to the first address that answers, in order.

    For short-lived tools such as the dead-letter commands.
    """
    failure: BaseException | None = None
    for url in broker_urls(urls):
        try:
            connection: AbstractConnection = await aio_pika.connect(url, timeout=timeout, **kwargs)
        except CONNECTION_EXCEPTIONS as exc:
            failure = exc
            continue
        return connection
    assert failure is not None
    raise failure
