"""Payment provider simulator: a test double of an external card processor.

It stands in for the card processor during development and tests. Everything lives in
memory; no card is ever charged. Tests drive it through the same HTTP API a real provider
would offer, inject faults through an admin API, and read back a ledger of every charge and
refund it actually made (to prove exactly-once charging).

Provider API
    ``POST /v1/charges``  ``{"amount": "21.00", "currency": "USD", "source": "tok_visa",
    "metadata": {...}}`` and ``POST /v1/refunds`` ``{"charge_id": "ch_…", "amount": "5.00"}``
    (amount optional: whatever is left to refund), both with a required ``Idempotency-Key``
    header; ``GET /v1/charges/{id}``. The same key with the same body replays the first
    response (header ``Idempotent-Replayed: true``); with another body it is a 409. Keys are
    scoped per endpoint. Errors are ``{"error": {"code": "...", "message": "..."}}``.

Test tokens (the charge's ``source``)
    ``tok_decline…``       402, status ``declined``, no money moved
    ``tok_pending_fail…``  202 ``pending``, later ``failed``, announced by webhook
    ``tok_pending…``       202 ``pending``, later ``succeeded``, announced by webhook
    anything else          201 ``succeeded``

Admin API (never faulted)
    ``PUT|GET /__admin/faults`` ``{"error_rate": 0.3, "latency_ms": 300, "down": false}``,
    ``GET /__admin/ledger``, ``GET /__admin/stats``, ``POST /__admin/reset``; ``GET /healthz``.
    Faults apply to ``/v1/*`` only and take effect before anything else happens, so a faulted
    request moves no money and does not consume its idempotency key. ``latency_ms`` makes
    every answer take at least that long; a new charge or refund holds its idempotency key
    for that time and takes effect at its end.

Webhook signature scheme
    Each delivery is ``POST <webhook_url>`` with a JSON body ``{"id": "evt_…", "type":
    "charge.succeeded" | "charge.failed", "created": <unix seconds>, "data": {"charge_id",
    "status", "amount", "currency", "idempotency_key", "metadata"}}`` and the header::

        Provider-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw_body}")>

    ``raw_body`` is the exact request body bytes. To verify: split the header on ``,`` and
    the first ``=``, recompute the HMAC-SHA256 keyed with the shared secret over the ASCII
    decimal ``t``, a ``.`` and the raw body, compare hex digests with
    ``hmac.compare_digest``, and refuse a ``t`` too far from the current time (replay).
    ``t`` is the time of the delivery attempt: a retried event carries a fresh ``t`` but the
    same event ``id``, on which receivers deduplicate. Delivery is retried with exponential
    backoff until the receiver answers 2xx (at most ``webhook_max_attempts`` attempts).

Run it with ``python -m svctools.simulator`` (``--help`` lists the options and their
``SIMULATOR_*`` environment variables).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import httpx
import orjson
import uvicorn
from fastapi import APIRouter, FastAPI, Header, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SIGNATURE_HEADER = "Provider-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8080/payments/webhooks/provider"
DEFAULT_WEBHOOK_SECRET = "whsec_dev_only"

log = logging.getLogger("svctools.simulator")

ChargeStatus = Literal["pending", "succeeded", "failed", "declined"]

_AMOUNT_PATTERN = re.compile(r"(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?")
_CENT = Decimal("0.01")
_MAX_BACKOFF_SECONDS = 30.0


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``Provider-Signature`` header value for ``body`` sent at ``timestamp``."""
    signed_payload = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed_payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _parse_amount(value: object) -> Decimal:
    # Money arrives as a string so that no float ever touches it.
    if not isinstance(value, str) or _AMOUNT_PATTERN.fullmatch(value) is None:
        raise ValueError('must be a decimal string with at most two places, such as "21.00"')
    amount = Decimal(value).quantize(_CENT)
    if amount <= 0:
        raise ValueError("must be greater than 0")
    return amount


def _format_amount(amount: Decimal) -> str:
    return format(amount.quantize(_CENT), "f")


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


Amount = Annotated[
    Decimal,
    PlainValidator(_parse_amount, json_schema_input_type=str),
    PlainSerializer(_format_amount, return_type=str),
]
Metadata = Annotated[dict[str, str], Field(max_length=50)]


class ChargeRequest(BaseModel):
    """Body of ``POST /v1/charges``."""

    amount: Amount
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    source: Annotated[str, Field(min_length=1, max_length=255)]
    metadata: Metadata = Field(default_factory=dict)


class RefundRequest(BaseModel):
    """Body of ``POST /v1/refunds``; without ``amount`` the rest of the charge is refunded."""

    charge_id: Annotated[str, Field(min_length=1, max_length=255)]
    amount: Amount | None = None
    metadata: Metadata = Field(default_factory=dict)


class FaultsUpdate(BaseModel):
    """Body of ``PUT /__admin/faults``; omitted fields keep their current value."""

    model_config = ConfigDict(extra="forbid")

    error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    latency_ms: Annotated[int, Field(ge=0, le=120_000)] | None = None
    down: bool | None = None


class ProviderError(Exception):
    """An expected failure, answered as ``{"error": {"code", "message"}}``."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON body answering this error."""
        return {"error": {"code": self.code, "message": self.message}}


class IdempotencyKeyMissingError(ProviderError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "idempotency_key_missing"


class IdempotencyKeyReusedError(ProviderError):
    status_code = status.HTTP_409_CONFLICT
    code = "idempotency_key_reused"


class ChargeNotFoundError(ProviderError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "charge_not_found"


class ChargeNotRefundableError(ProviderError):
    status_code = status.HTTP_409_CONFLICT
    code = "charge_not_refundable"


class RefundExceedsChargeError(ProviderError):
    status_code = status.HTTP_409_CONFLICT
    code = "refund_exceeds_charge"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as first answered, replayed verbatim for its idempotency key."""

    status_code: int
    body: dict[str, Any]

    def render(self, *, replayed: bool) -> JSONResponse:
        """The HTTP response, marked when it is a replay."""
        headers = {REPLAYED_HEADER: "true"} if replayed else None
        return JSONResponse(self.body, status_code=self.status_code, headers=headers)


@dataclass(slots=True)
class Charge:
    id: str
    idempotency_key: str
    amount: Decimal
    currency: str
    source: str
    metadata: dict[str, str]
    status: ChargeStatus
    created_at: datetime
    decline_code: str | None = None
    amount_refunded: Decimal = Decimal("0.00")

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "charge",
            "status": self.status,
            "amount": _format_amount(self.amount),
            "currency": self.currency,
            "amount_refunded": _format_amount(self.amount_refunded),
            "decline_code": self.decline_code,
            "metadata": dict(self.metadata),
            "created_at": _rfc3339(self.created_at),
        }

    def to_ledger(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "charge",
            "idempotency_key": self.idempotency_key,
            "amount": _format_amount(self.amount),
            "currency": self.currency,
            "status": self.status,
            "charge_id": None,
            "metadata": dict(self.metadata),
            "created_at": _rfc3339(self.created_at),
        }


@dataclass(slots=True)
class Refund:
    id: str
    idempotency_key: str
    charge_id: str
    amount: Decimal
    currency: str
    metadata: dict[str, str]
    created_at: datetime
    status: Literal["succeeded"] = "succeeded"

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "refund",
            "status": self.status,
            "charge_id": self.charge_id,
            "amount": _format_amount(self.amount),
            "currency": self.currency,
            "metadata": dict(self.metadata),
            "created_at": _rfc3339(self.created_at),
        }

    def to_ledger(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "refund",
            "idempotency_key": self.idempotency_key,
            "amount": _format_amount(self.amount),
            "currency": self.currency,
            "status": self.status,
            "charge_id": self.charge_id,
            "metadata": dict(self.metadata),
            "created_at": _rfc3339(self.created_at),
        }


@dataclass(slots=True)
class Faults:
    error_rate: float = 0.0
    latency_ms: int = 0
    down: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "latency_ms": self.latency_ms, "down": self.down}


@dataclass(slots=True)
class _KeyRecord:
    fingerprint: str
    outcome: asyncio.Task[StoredResponse]


@dataclass(slots=True)
class _WebhookStats:
    attempts: int = 0
    delivered: int = 0
    abandoned: int = 0


@dataclass(slots=True)
class _Stats:
    requests: Counter[str] = field(default_factory=Counter)
    faulted: int = 0
    webhooks: _WebhookStats = field(default_factory=_WebhookStats)


def _fingerprint(request: BaseModel) -> str:
    canonical = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class ProviderSimulator:
    """The simulator's state and rules; one instance per app.

    All state is touched by coroutines of one event loop; every read-modify-write of the
    ledger happens under ``_lock`` so that it stays atomic even across an ``await``.
    """

    def __init__(
        self,
        *,
        webhook_url: str | None,
        webhook_secret: str,
        pending_delay: float,
        webhook_max_attempts: int,
        webhook_backoff: float,
    ) -> None:
        self.webhook_url = webhook_url
        self._webhook_secret = webhook_secret
        self._pending_delay = pending_delay
        self._webhook_max_attempts = webhook_max_attempts
        self._webhook_backoff = webhook_backoff
        self.faults = Faults()
        self._lock = asyncio.Lock()
        self._charges: dict[str, Charge] = {}
        self._ledger: list[Charge | Refund] = []
        self._keys: dict[tuple[str, str], _KeyRecord] = {}
        self._stats = _Stats()
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._random = random.SystemRandom()

    # -- faults -------------------------------------------------------------------------

    def update_faults(self, update: FaultsUpdate) -> Faults:
        """Apply the fields present in ``update``; the others keep their value."""
        if update.error_rate is not None:
            self.faults.error_rate = update.error_rate
        if update.latency_ms is not None:
            self.faults.latency_ms = update.latency_ms
        if update.down is not None:
            self.faults.down = update.down
        log.info("faults.updated %s", self.faults.to_json())
        return self.faults

    def record_request(self, route: str) -> None:
        """Count a request received on a provider route."""
        self._stats.requests[route] += 1

    def outage(self) -> JSONResponse | None:
        """The answer of a provider that is down, if it is."""
        if not self.faults.down:
            return None
        self._stats.faulted += 1
        return _error_response(503, "provider_down", "the provider is down")

    def injected_error(self) -> JSONResponse | None:
        """A 500 or 503 for ``error_rate`` of the requests, else None."""
        if self.faults.error_rate <= 0 or self._random.random() >= self.faults.error_rate:
            return None
        self._stats.faulted += 1
        kind = self._random.randrange(3)
        if kind == 0:
            return _error_response(500, "internal_error", "injected provider error")
        headers = {"Retry-After": "1"} if kind == 1 else None
        return _error_response(503, "unavailable", "injected provider outage", headers)

    async def sleep_until_answer_due(self, arrived: float) -> None:
        """Hold an answer until ``latency_ms`` has passed since the request arrived."""
        remaining = self.faults.latency_ms / 1000 - (time.monotonic() - arrived)
        if remaining > 0:
            await asyncio.sleep(remaining)

    # -- idempotency --------------------------------------------------------------------

    async def _idempotent(
        self,
        *,
        endpoint: str,
        key: str,
        request: BaseModel,
        operation: Callable[[], Awaitable[StoredResponse]],
    ) -> tuple[StoredResponse, bool]:
        fingerprint = _fingerprint(request)
        scoped_key = (endpoint, key)
        record = self._keys.get(scoped_key)
        replayed = record is not None
        if record is None:
            task = asyncio.create_task(self._settle(operation))
            record = _KeyRecord(fingerprint=fingerprint, outcome=task)
            self._keys[scoped_key] = record
            task.add_done_callback(lambda done: self._release_if_failed(scoped_key, done))
        elif record.fingerprint != fingerprint:
            raise IdempotencyKeyReusedError(
                f"Idempotency-Key {key!r} was already used with a different request body"
            )
        # Shielded: a client that hangs up mid-request does not abort the charge, and a
        # concurrent request with the same key waits here for the first one's outcome.
        return await asyncio.shield(record.outcome), replayed

    async def _settle(self, operation: Callable[[], Awaitable[StoredResponse]]) -> StoredResponse:
        await asyncio.sleep(self.faults.latency_ms / 1000)
        try:
            return await operation()
        except ProviderError as error:
            return StoredResponse(error.status_code, error.body())

    def _release_if_failed(self, scoped_key: tuple[str, str], done: asyncio.Task[Any]) -> None:
        # A crash is not an outcome: forget the key so that a retry can still succeed.
        if done.cancelled() or done.exception() is not None:
            record = self._keys.get(scoped_key)
            if record is not None and record.outcome is done:
                del self._keys[scoped_key]

    # -- charges and refunds ------------------------------------------------------------

    async def create_charge(
        self, *, key: str, request: ChargeRequest
    ) -> tuple[StoredResponse, bool]:
        """Charge ``request.source`` once per idempotency key."""

        async def operation() -> StoredResponse:
            async with self._lock:
                return self._charge(key=key, request=request)

        return await self._idempotent(
            endpoint="charges", key=key, request=request, operation=operation
        )

    def _charge(self, *, key: str, request: ChargeRequest) -> StoredResponse:
        charge = Charge(
            id=_new_id("ch"),
            idempotency_key=key,
            amount=request.amount,
            currency=request.currency,
            source=request.source,
            metadata=dict(request.metadata),
            status="succeeded",
            created_at=datetime.now(UTC),
        )
        self._charges[charge.id] = charge
        if request.source.startswith("tok_decline"):
            charge.status = "declined"
            charge.decline_code = "card_declined"
            log.info("charge.declined id=%s", charge.id)
            return StoredResponse(status.HTTP_402_PAYMENT_REQUIRED, charge.to_api())
        self._ledger.append(charge)
        if request.source.startswith("tok_pending"):
            charge.status = "pending"
            self._spawn(self._complete_pending(charge))
            log.info("charge.pending id=%s", charge.id)
            return StoredResponse(status.HTTP_202_ACCEPTED, charge.to_api())
        log.info("charge.succeeded id=%s amount=%s", charge.id, charge.amount)
        return StoredResponse(status.HTTP_201_CREATED, charge.to_api())

    async def create_refund(
        self, *, key: str, request: RefundRequest
    ) -> tuple[StoredResponse, bool]:
        """Refund part or all of a succeeded charge once per idempotency key."""

        async def operation() -> StoredResponse:
            async with self._lock:
                return self._refund(key=key, request=request)

        return await self._idempotent(
            endpoint="refunds", key=key, request=request, operation=operation
        )

    def _refund(self, *, key: str, request: RefundRequest) -> StoredResponse:
        charge = self._charges.get(request.charge_id)
        if charge is None:
            raise ChargeNotFoundError(f"no charge {request.charge_id!r}")
        if charge.status != "succeeded":
            raise ChargeNotRefundableError(f"charge {charge.id} is {charge.status}")
        refundable = charge.amount - charge.amount_refunded
        amount = refundable if request.amount is None else request.amount
        if amount <= 0 or amount > refundable:
            raise RefundExceedsChargeError(
                f"refund of {_format_amount(amount)} exceeds the "
                f"{_format_amount(refundable)} left to refund on charge {charge.id}"
            )
        refund = Refund(
            id=_new_id("re"),
            idempotency_key=key,
            charge_id=charge.id,
            amount=amount,
            currency=charge.currency,
            metadata=dict(request.metadata),
            created_at=datetime.now(UTC),
        )
        charge.amount_refunded += amount
        self._ledger.append(refund)
        log.info("refund.succeeded id=%s charge_id=%s amount=%s", refund.id, charge.id, amount)
        return StoredResponse(status.HTTP_201_CREATED, refund.to_api())

    def get_charge(self, charge_id: str) -> dict[str, Any]:
        """The charge as it stands now."""
        charge = self._charges.get(charge_id)
        if charge is None:
            raise ChargeNotFoundError(f"no charge {charge_id!r}")
        return charge.to_api()

    # -- pending charges and webhooks ---------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._webhook_tasks.add(task)
        task.add_done_callback(self._webhook_tasks.discard)

    async def _complete_pending(self, charge: Charge) -> None:
        await asyncio.sleep(self._pending_delay)
        async with self._lock:
            if charge.source.startswith("tok_pending_fail"):
                charge.status = "failed"
                charge.decline_code = "card_declined"
            else:
                charge.status = "succeeded"
        log.info("charge.%s id=%s", charge.status, charge.id)
        event = {
            "id": _new_id("evt"),
            "type": f"charge.{charge.status}",
            "created": int(time.time()),
            "data": {
                "charge_id": charge.id,
                "status": charge.status,
                "amount": _format_amount(charge.amount),
                "currency": charge.currency,
                "idempotency_key": charge.idempotency_key,
                "metadata": dict(charge.metadata),
            },
        }
        if self.webhook_url is not None:
            await self._deliver(self.webhook_url, orjson.dumps(event))

    async def _deliver(self, url: str, body: bytes) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        for attempt in range(1, self._webhook_max_attempts + 1):
            self._stats.webhooks.attempts += 1
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign_webhook(self._webhook_secret, int(time.time()), body),
            }
            try:
                response = await self._http.post(url, content=body, headers=headers)
            except httpx.HTTPError as error:
                log.warning("webhook.attempt_failed attempt=%d error=%r", attempt, error)
            else:
                if response.is_success:
                    self._stats.webhooks.delivered += 1
                    log.info("webhook.delivered attempt=%d", attempt)
                    return
                log.warning(
                    "webhook.attempt_failed attempt=%d status=%d", attempt, response.status_code
                )
            if attempt < self._webhook_max_attempts:
                backoff = self._webhook_backoff * 2 ** (attempt - 1)
                await asyncio.sleep(min(backoff, _MAX_BACKOFF_SECONDS))
        self._stats.webhooks.abandoned += 1
        log.error("webhook.abandoned attempts=%d", self._webhook_max_attempts)

    # -- admin --------------------------------------------------------------------------

    def ledger(self) -> list[dict[str, Any]]:
        """Every charge and refund that moved (or holds) money, in creation order."""
        return [entry.to_ledger() for entry in self._ledger]

    def stats(self) -> dict[str, Any]:
        """Requests received per provider route, how many were faulted, webhook counts."""
        webhooks = self._stats.webhooks
        return {
            "requests": dict(self._stats.requests),
            "faulted": self._stats.faulted,
            "webhooks": {
                "attempts": webhooks.attempts,
                "delivered": webhooks.delivered,
                "abandoned": webhooks.abandoned,
            },
        }

    async def reset(self) -> None:
        """Forget every charge, refund, key, statistic and fault; drop pending webhooks."""
        await self._cancel_webhooks()
        async with self._lock:
            self._charges.clear()
            self._ledger.clear()
            self._keys.clear()
            self._stats = _Stats()
            self.faults = Faults()
        log.info("simulator.reset")

    async def aclose(self) -> None:
        """Stop background work and close the webhook client."""
        await self._cancel_webhooks()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _cancel_webhooks(self) -> None:
        tasks = list(self._webhook_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status_code, headers=headers)


_CHARGE_PATH = re.compile(r"/v1/charges/[^/]+")


def _route_template(path: str) -> str:
    # Statistics count per route, not per charge id.
    return "/v1/charges/{charge_id}" if _CHARGE_PATH.fullmatch(path) else path


class FaultInjectionMiddleware:
    """Counts provider requests and applies the configured faults before any effect."""

    def __init__(self, app: ASGIApp, simulator: ProviderSimulator) -> None:
        self.app = app
        self.simulator = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        simulator = self.simulator
        simulator.record_request(_route_template(scope["path"]))
        outage = simulator.outage()
        if outage is not None:
            await outage(scope, receive, send)
            return
        arrived = time.monotonic()

        async def send_when_due(message: Message) -> None:
            if message["type"] == "http.response.start":
                await simulator.sleep_until_answer_due(arrived)
            await send(message)

        error = simulator.injected_error()
        if error is not None:
            await error(scope, receive, send_when_due)
            return
        await self.app(scope, receive, send_when_due)


IdempotencyKeyHeader = Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER, max_length=255)]


def _require_key(key: str | None) -> str:
    if not key:
        raise IdempotencyKeyMissingError(f"the {IDEMPOTENCY_HEADER} header is required")
    return key


def _provider_router(simulator: ProviderSimulator) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["provider"])

    @router.post("/charges", status_code=201)
    async def create_charge(
        body: ChargeRequest, idempotency_key: IdempotencyKeyHeader = None
    ) -> Response:
        """Charge a card token (see the module docs for the test tokens)."""
        outcome, replayed = await simulator.create_charge(
            key=_require_key(idempotency_key), request=body
        )
        return outcome.render(replayed=replayed)

    @router.post("/refunds", status_code=201)
    async def create_refund(
        body: RefundRequest, idempotency_key: IdempotencyKeyHeader = None
    ) -> Response:
        """Refund part or all of a succeeded charge."""
        outcome, replayed = await simulator.create_refund(
            key=_require_key(idempotency_key), request=body
        )
        return outcome.render(replayed=replayed)

    @router.get("/charges/{charge_id}")
    async def get_charge(charge_id: str) -> dict[str, Any]:
        """The charge as it stands now."""
        return simulator.get_charge(charge_id)

    return router


def _admin_router(simulator: ProviderSimulator) -> APIRouter:
    router = APIRouter(prefix="/__admin", tags=["admin"])

    @router.get("/faults")
    async def get_faults() -> dict[str, Any]:
        """The faults in force."""
        return simulator.faults.to_json()

    @router.put("/faults")
    async def put_faults(update: FaultsUpdate) -> dict[str, Any]:
        """Change the faults; 0/0/false restores normal service."""
        return simulator.update_faults(update).to_json()

    @router.get("/ledger")
    async def get_ledger() -> list[dict[str, Any]]:
        """Every charge and refund actually made, oldest first."""
        return simulator.ledger()

    @router.get("/stats")
    async def get_stats() -> dict[str, Any]:
        """Requests received per provider route and how many were faulted."""
        return simulator.stats()

    @router.post("/reset", status_code=204)
    async def reset() -> Response:
        """Clear ledger, idempotency keys, statistics and faults."""
        await simulator.reset()
        return Response(status_code=204)

    return router


async def _provider_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ProviderError)
    return JSONResponse(error.body(), status_code=error.status_code)


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return _error_response(400, "malformed_body", "the request body is not valid JSON")
    details = [
        {
            "field": ".".join(str(part) for part in problem.get("loc", ())),
            "message": str(problem.get("msg", "")),
            "type": str(problem.get("type", "")),
        }
        for problem in problems
    ]
    body = {"error": {"code": "validation_error", "message": "invalid input", "details": details}}
    return JSONResponse(body, status_code=422)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    response = _error_response(error.status_code, code, str(error.detail))
    if error.headers:
        response.headers.update(error.headers)
    return response


def create_app(
    *,
    webhook_url: str | None,
    webhook_secret: str,
    pending_delay: float = 0.5,
    webhook_max_attempts: int = 10,
    webhook_backoff: float = 0.25,
) -> FastAPI:
    """Build a simulator app with its own, empty, in-memory state."""
    simulator = ProviderSimulator(
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        pending_delay=pending_delay,
        webhook_max_attempts=webhook_max_attempts,
        webhook_backoff=webhook_backoff,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await simulator.aclose()

    app = FastAPI(
        title="Payment provider simulator",
        description="A test double of an external card processor. No money moves.",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.simulator = simulator
    app.add_middleware(FaultInjectionMiddleware, simulator=simulator)
    app.add_exception_handler(ProviderError, _provider_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(_provider_router(simulator))
    app.include_router(_admin_router(simulator))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Answers 200 while the simulator runs."""
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    """Run the simulator with uvicorn until interrupted."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m svctools.simulator",
        description="Payment provider simulator (a test double; no money moves).",
    )
    parser.add_argument("--host", default=env.get("SIMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=env.get("SIMULATOR_PORT", "8090"))
    parser.add_argument(
        "--webhook-url",
        default=env.get("SIMULATOR_WEBHOOK_URL", DEFAULT_WEBHOOK_URL),
        help="where pending charges are announced; empty disables webhooks "
        "(env SIMULATOR_WEBHOOK_URL)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=env.get("SIMULATOR_WEBHOOK_SECRET", DEFAULT_WEBHOOK_SECRET),
        help="HMAC key for Provider-Signature (env SIMULATOR_WEBHOOK_SECRET)",
    )
    parser.add_argument(
        "--pending-delay",
        type=float,
        default=env.get("SIMULATOR_PENDING_DELAY", "0.5"),
        help="seconds before a pending charge completes (env SIMULATOR_PENDING_DELAY)",
    )
    parser.add_argument("--log-level", default=env.get("SIMULATOR_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = create_app(
        webhook_url=args.webhook_url or None,
        webhook_secret=args.webhook_secret,
        pending_delay=args.pending_delay,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()
