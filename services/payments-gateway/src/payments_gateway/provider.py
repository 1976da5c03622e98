"""The external payment provider's HTTP API: charges and refunds, retried, behind a breaker.

One provider call is: the circuit breaker around tenacity's retries around single HTTP
attempts. So the breaker sees one outcome per call, however many attempts it took, and an open
circuit refuses the call before any attempt is made.

- Retried: transport errors (connect, read timeouts...), 5xx and 429, at most
  ``max_attempts`` attempts, exponential backoff with jitter, never sooner than the answer's
  ``Retry-After``; a ``Retry-After`` longer than ``retry_after_max`` ends the call at once
  (the caller defers the work by that long instead of holding a consumer).
- Not retried, and not failures of the provider: a decline (402) and other 4xx answers. A
  decline proves the provider is up, so both are the breaker's ``excluded`` exceptions.
- Every attempt of one call sends the same body with the same ``Idempotency-Key`` (the payment
  id for a charge, ``refund-<payment id>`` for its refund): a retried or repeated call that
  reached the provider before is answered with the first outcome and never moves money twice.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from servicekit.breaker import CircuitBreaker, CircuitOpenError, State
from servicekit.logging import get_logger

log = get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
BREAKER_NAME = "payment-provider"

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


class ProviderError(Exception):
    """The provider did not do what was asked."""


class ProviderUnavailable(ProviderError):  # noqa: N818 - named after what happened
    """No usable answer: a transport error, a 5xx or a 429 (worth retrying)."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class ChargeDeclined(ProviderError):  # noqa: N818 - named after what happened
    """The provider answered and refused the card."""

    def __init__(self, *, decline_code: str | None, charge_id: str | None) -> None:
        super().__init__(f"charge declined ({decline_code or 'no code'})")
        self.decline_code = decline_code
        self.charge_id = charge_id


class ProviderRejected(ProviderError):  # noqa: N818 - named after what happened
    """The provider answered with a 4xx other than a decline: retrying the same call won't help."""

    def __init__(self, *, status_code: int, code: str | None) -> None:
        super().__init__(f"provider rejected the request: {status_code} {code or ''}".strip())
        self.status_code = status_code
        self.code = code


@dataclass(frozen=True)
class ChargeRequest:
    """What to charge for one payment."""

    payment_id: uuid.UUID
    order_id: uuid.UUID
    amount: Decimal
    currency: str
    source: str


@dataclass(frozen=True)
class ChargeResult:
    """The provider's charge: settled now (succeeded) or later by webhook (pending)."""

    charge_id: str
    status: Literal["succeeded", "pending"]


@dataclass(frozen=True)
class ChargeState:
    """A charge as the provider has it now."""

    charge_id: str
    status: Literal["pending", "succeeded", "failed"]


@dataclass(frozen=True)
class RefundResult:
    """The provider's refund."""

    refund_id: str


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class _RetryAfterOrBackoff(wait_base):
    """Exponential backoff with jitter, but never shorter than the answer's Retry-After."""

    def __init__(self, backoff: wait_base) -> None:
        self._backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self._backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, ProviderUnavailable) and error.retry_after is not None:
            return max(delay, error.retry_after)
        return delay


class _RetryAfterBeyond(stop_base):
    """Stop when the provider asks for a longer pause than a call may hold its consumer."""

    def __init__(self, limit: float) -> None:
        self._limit = limit

    def __call__(self, retry_state: RetryCallState) -> bool:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        return (
            isinstance(error, ProviderUnavailable)
            and error.retry_after is not None
            and error.retry_after > self._limit
        )


class ProviderClient:
    """Charges and refunds through the provider, with retries and a circuit breaker."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        max_attempts: int = 3,
        backoff_initial: float = 0.2,
        backoff_max: float = 2.0,
        retry_after_max: float = 5.0,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, State, State], None] | None = None,
    ) -> None:
        self._http = http
        self._max_attempts = max_attempts
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial
        )
        self._retry_after_max = retry_after_max
        self._sleep = sleep
        self.breaker = CircuitBreaker(
            BREAKER_NAME,
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            excluded=(ChargeDeclined, ProviderRejected),
            clock=clock,
            on_state_change=on_state_change,
        )

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge a card token once per payment; raises ChargeDeclined on a decline."""
        body = {
            "amount": _money(request.amount),
            "currency": request.currency,
            "source": request.source,
            "metadata": {"order_id": str(request.order_id), "payment_id": str(request.payment_id)},
        }
        return await self._call(
            "charge", "/v1/charges", body, key=str(request.payment_id), parse=_charge_result
        )

    async def lookup_charge(self, charge_id: str) -> ChargeState:
        """A charge as the provider has it now (for charges whose webhook did not come)."""
        path = f"/v1/charges/{quote(charge_id, safe='')}"
        return await self._call("lookup", path, None, key=None, parse=_charge_state)

    async def refund(
        self, *, payment_id: uuid.UUID, order_id: uuid.UUID, charge_id: str, amount: Decimal
    ) -> RefundResult:
        """Refund a charge once per payment."""
        body = {
            "charge_id": charge_id,
            "amount": _money(amount),
            "metadata": {"order_id": str(order_id), "payment_id": str(payment_id)},
        }
        return await self._call(
            "refund", "/v1/refunds", body, key=refund_key(payment_id), parse=_refund_result
        )

    async def _call(
        self,
        operation: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        key: str | None,
        parse: Callable[[httpx.Response], T],
    ) -> T:
        """One call: the breaker around the retried attempts; logs its outcome."""
        started = time.perf_counter()
        attempts = 0

        async def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return parse(await self._send(path, body, key=key))

        async def retried() -> T:
            retrying = AsyncRetrying(
                retry=retry_if_exception_type(ProviderUnavailable),
                stop=stop_after_attempt(self._max_attempts)
                | _RetryAfterBeyond(self._retry_after_max),
                wait=_RetryAfterOrBackoff(self._backoff),
                sleep=self._sleep,
                before_sleep=self._log_retry(operation),
                reraise=True,
            )
            return await retrying(attempt)

        outcome = "ok"
        try:
            return await self.breaker.call(retried)
        except CircuitOpenError:
            outcome = "circuit_open"
            raise
        except Exception as error:
            outcome = type(error).__name__
            raise
        finally:
            log.info(
                "provider.call",
                operation=operation,
                idempotency_key=key,
                outcome=outcome,
                attempts=attempts,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                breaker=str(self.breaker.state),
                breaker_failures=self.breaker.failure_count,
            )

    async def _send(
        self, path: str, body: dict[str, Any] | None, *, key: str | None
    ) -> httpx.Response:
        """One HTTP attempt (a POST with its idempotency key, or a GET), its answer classified."""
        try:
            if body is None:
                response = await self._http.get(path)
            else:
                headers = {IDEMPOTENCY_HEADER: key} if key is not None else {}
                response = await self._http.post(path, json=body, headers=headers)
        except httpx.TransportError as error:
            raise ProviderUnavailable(f"transport error: {type(error).__name__}") from error
        status = response.status_code
        if status == 429 or status >= 500:
            raise ProviderUnavailable(
                f"provider answered {status}",
                status_code=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status == 402:
            answer = _json_object(response)
            raise ChargeDeclined(
                decline_code=_str_or_none(answer.get("decline_code")),
                charge_id=_str_or_none(answer.get("id")),
            )
        if 400 <= status < 500:
            problem = _json_object(response).get("error")
            code = problem.get("code") if isinstance(problem, dict) else None
            raise ProviderRejected(status_code=status, code=_str_or_none(code))
        if not 200 <= status < 300:
            raise ProviderUnavailable(f"unexpected answer {status}", status_code=status)
        return response

    def _log_retry(self, operation: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "provider.retrying",
                operation=operation,
                attempt=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 3),
                error=str(error),
            )

        return before_sleep

    @property
    def circuit_state(self) -> State:
        """The breaker's state."""
        return self.breaker.state


def refund_key(payment_id: uuid.UUID) -> str:
    """The idempotency key of a payment's refund."""
    return f"refund-{payment_id}"


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _charge_state(response: httpx.Response) -> ChargeState:
    answer = _json_object(response)
    charge_id, status = answer.get("id"), answer.get("status")
    if not isinstance(charge_id, str) or status not in ("pending", "succeeded", "failed"):
        raise ProviderUnavailable(f"unexpected charge lookup answer: {str(answer)[:200]}")
    return ChargeState(charge_id=charge_id, status=status)


def _charge_result(response: httpx.Response) -> ChargeResult:
    answer = _json_object(response)
    charge_id = _str_or_none(answer.get("id"))
    status = answer.get("status")
    if charge_id is None:
        # A success without a charge id is unusable; asking again with the same key is safe.
        raise ProviderUnavailable("charge answer without an id", status_code=response.status_code)
    if status in ("declined", "failed"):
        raise ChargeDeclined(
            decline_code=_str_or_none(answer.get("decline_code")), charge_id=charge_id
        )
    if status == "succeeded" or (status is None and response.status_code == 201):
        return ChargeResult(charge_id=charge_id, status="succeeded")
    if status == "pending" or response.status_code == 202:
        return ChargeResult(charge_id=charge_id, status="pending")
    raise ProviderUnavailable(f"charge answer with status {status!r}")


def _refund_result(response: httpx.Response) -> RefundResult:
    refund_id = _str_or_none(_json_object(response).get("id"))
    if refund_id is None:
        raise ProviderUnavailable("refund answer without an id", status_code=response.status_code)
    return RefundResult(refund_id=refund_id)
