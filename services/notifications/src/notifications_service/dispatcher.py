"""The dispatcher: sends recorded notifications over SMTP, exactly once as far as SMTP allows.

Why a dispatcher and not a send inside the event handler: an SMTP send cannot be rolled back.
Sending inside the consumer's transaction would mean a crash (or a failed commit) after the
server accepted the message leaves no record of it, and the redelivered event sends it again;
and a slow or dead SMTP server would hold the consumer's transaction and its queue. So:

1. The event handler, in the consumer's transaction with the inbox row, renders the email and
   inserts the notification as ``pending``. The unique key (event_id, template) makes a second
   delivery of the event record nothing; ``pg_notify`` wakes the dispatchers at commit.
2. A dispatcher (a background task in every instance, woken by that notification and polling
   every ``dispatch_poll_seconds`` as a fallback) claims due rows with ``FOR UPDATE SKIP
   LOCKED`` and, in a committed step *before* talking to SMTP, marks them ``sending``,
   ``attempts + 1``, leased until ``now + send_lease_seconds``.
3. It sends; on acceptance it marks the row ``sent``. A transient refusal (connection refused,
   timeout, 4xx) puts the row back to ``pending`` with exponential backoff and jitter, capped
   at its ``deliver_by`` deadline (``delivery_deadline_seconds`` after recording); a failure at
   or past the deadline, or a permanent refusal (5xx for the recipient or the message), marks
   it ``failed``. Each outcome is written only if the row is still this attempt's.

A crash between the server's acceptance and the ``sent`` commit leaves the row ``sending``; it
is retried only after the lease expires, so a message is never sent twice in normal operation
nor lost after a crash. In that rare case the repeat carries the same ``Message-ID``
(``<event_id.template@domain>``), which lets mail servers and clients drop the duplicate.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, TypeVar

import structlog
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from notifications_service.config import Settings
from notifications_service.mailer import DeliveryError, OutgoingEmail
from notifications_service.metrics import (
    EMAILS_SENT,
    NOTIFICATIONS_FAILED,
    SEND_DURATION,
    SEND_FAILURES,
)
from notifications_service.models import Notification
from notifications_service.repository import DISPATCH_CHANNEL, NotificationRepository
from servicekit import tracecontext
from servicekit.db import asyncpg_dsn
from servicekit.logging import get_logger
from servicekit.runtime import ServiceRuntime
from servicekit.worker import NotifiedLoop

log = get_logger(__name__)

T = TypeVar("T")


class Mailer(Protocol):
    """Hands one email to a mail server; raises DeliveryError when it is not accepted."""

    async def send(self, email: OutgoingEmail) -> None: ...


@dataclass(frozen=True)
class Claim:
    """A notification this dispatcher holds for one attempt."""

    email: OutgoingEmail
    attempt: int
    correlation_id: str | None = None
    traceparent: str | None = None


def backoff(attempt: int, *, initial: float, maximum: float) -> float:
    """Seconds before the next attempt: doubling per attempt, capped, jittered to 50-100 %."""
    ceiling = min(maximum, initial * 2 ** max(attempt - 1, 0))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


class Dispatcher:
    """Background sender of pending notifications (one per process)."""

    def __init__(self, *, settings: Settings, mailer: Mailer) -> None:
        self.settings = settings
        self.mailer = mailer
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._slots = asyncio.Semaphore(settings.dispatch_concurrency)
        self._loop: NotifiedLoop | None = None
        self.smtp_error: str | None = None

    async def start(self, runtime: ServiceRuntime) -> None:
        """Listen for new notifications and start sending in the background."""
        self._sessions = runtime.sessions
        runtime.health.add("smtp", self.check, critical=False)
        self._loop = NotifiedLoop(
            name="notifications-dispatcher",
            dsn=asyncpg_dsn(runtime.engine.url),
            channel=DISPATCH_CHANNEL,
            step=self.dispatch_once,
            batch_size=self.settings.dispatch_batch_size,
            poll_interval=self.settings.dispatch_poll_seconds,
        )
        await self._loop.start()

    async def stop(self, _runtime: ServiceRuntime | None = None) -> None:
        """Stop claiming, let sends in flight finish (bounded), stop listening."""
        loop, self._loop = self._loop, None
        if loop is not None and not await loop.stop(timeout=self.settings.smtp_timeout_seconds + 5):
            # The claimed rows stay `sending` and are retried once their lease expires.
            log.warning("dispatcher.stop_timed_out")

    async def check(self) -> None:
        """Readiness detail: fails while the last SMTP attempt failed for a transient reason."""
        if self.smtp_error is not None:
            raise ConnectionError(self.smtp_error)

    async def dispatch_once(self) -> int:
        """Claim one batch of due notifications and send them; returns how many it claimed."""
        if self._loop is not None and self._loop.stopping:
            return 0
        claims = await self._claim()
        if claims:
            await asyncio.gather(*(self._deliver(claim) for claim in claims))
        return len(claims)

    async def _claim(self) -> list[Claim]:
        s = self.settings
        async with self._session() as session, session.begin():
            rows = await NotificationRepository(session).claim_due(
                limit=s.dispatch_batch_size, lease=timedelta(seconds=s.send_lease_seconds)
            )
            return [
                Claim(
                    email=_outgoing(row),
                    attempt=row.attempts,
                    correlation_id=row.correlation_id,
                    traceparent=row.traceparent,
                )
                for row in rows
            ]

    async def _deliver(self, claim: Claim) -> None:
        parent = propagate.extract({"traceparent": claim.traceparent or ""})
        with (
            structlog.contextvars.bound_contextvars(correlation_id=claim.correlation_id),
            tracecontext.tracer().start_as_current_span(
                "email send",
                context=parent,
                kind=SpanKind.CLIENT,
                attributes={"notification.template": claim.email.template},
            ),
        ):
            await self._deliver_in_context(claim)

    async def _deliver_in_context(self, claim: Claim) -> None:
        email = claim.email
        bound = {"notification_id": str(email.notification_id), "attempt": claim.attempt}
        service = self.settings.service_name
        async with self._slots:
            started = time.perf_counter()
            try:
                await self.mailer.send(email)
            except DeliveryError as exc:
                SEND_DURATION.labels(service).observe(time.perf_counter() - started)
                SEND_FAILURES.labels(service, "permanent" if exc.permanent else "transient").inc()
                await self._record_failure(claim, exc)
                return
            SEND_DURATION.labels(service).observe(time.perf_counter() - started)
        self.smtp_error = None
        EMAILS_SENT.labels(service, email.template).inc()
        await self._record(
            lambda repo: repo.mark_sent(
                notification_id=email.notification_id, attempt=claim.attempt
            )
        )
        log.info("notification.sent", template=email.template, **bound)

    async def _record_failure(self, claim: Claim, exc: DeliveryError) -> None:
        s = self.settings
        email = claim.email
        retry_in = (
            None
            if exc.permanent
            else timedelta(
                seconds=backoff(
                    claim.attempt,
                    initial=s.send_retry_initial_seconds,
                    maximum=s.send_retry_max_seconds,
                )
            )
        )
        if not exc.permanent:
            self.smtp_error = exc.reason
        status = await self._record(
            lambda repo: repo.mark_attempt_failed(
                notification_id=email.notification_id,
                attempt=claim.attempt,
                error=exc.reason,
                retry_in=retry_in,
            )
        )
        fields = {
            "notification_id": str(email.notification_id),
            "attempt": claim.attempt,
            "error": exc.reason,
        }
        if status == "failed":
            NOTIFICATIONS_FAILED.labels(self.settings.service_name, email.template).inc()
            log.error("notification.failed", permanent=exc.permanent, **fields)
        else:
            log.warning(
                "notification.send_retrying",
                retry_in=retry_in.total_seconds() if retry_in else None,
                **fields,
            )

    async def _record(self, change: Callable[[NotificationRepository], Awaitable[T]]) -> T:
        # Outcomes are retried for up to half the lease: a lost `sent` would mean a resend after
        # the lease, and a database refusing connections for a few seconds (a busy server) is
        # not a reason to send an email twice.
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(self.settings.send_lease_seconds / 2),
            wait=wait_exponential(multiplier=0.1, max=2),
            reraise=True,
        ):
            with attempt:
                async with self._session() as session, session.begin():
                    return await change(NotificationRepository(session))
        raise AssertionError("unreachable")

    def _session(self) -> AsyncSession:
        if self._sessions is None:
            raise RuntimeError("Dispatcher.start() was not called")
        return self._sessions()


def _outgoing(row: Notification) -> OutgoingEmail:
    return OutgoingEmail(
        notification_id=row.id,
        event_id=row.event_id,
        template=row.template,
        recipient=row.recipient,
        recipient_name=row.recipient_name,
        subject=row.subject,
        text=row.body_text,
        html=row.body_html,
    )
