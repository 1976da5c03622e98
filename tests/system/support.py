"""The order flow's settings, an in-loop uvicorn server and what the fixtures hand the tests."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from svctools.smtp_sink import SmtpSink

FAST_RETRIES = [200, 500, 1000]
WEBHOOK_SECRET = "whsec_system_tests_only"


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
