"""The rules of payments: charge an order once, refund it once, settle pending charges.

A charge the provider answers ``pending`` settles by its webhook or, when none has come after
``reconcile_after_seconds``, by looking the charge up (``reconcile_pending_charges``).

Charging an order exactly once
------------------------------
``charge_order`` runs inside the consumer's transaction T (the inbox row and our writes commit
together, before the ack). The provider call is slow and may fail for minutes, so it is split:

1. The payment is created, or found, in its own short transaction that commits at once
   (``INSERT … ON CONFLICT (order_id) DO NOTHING``). The payment id, which is the provider's
   ``Idempotency-Key``, is thereby fixed and durable before any call: the same on every
   redelivery, deferral and crash, and for a second ``order.created`` envelope of the same
   order. T writes nothing to the payment before the call, so no lock is held on it while the
   provider is slow; T holds only its inbox row (which also makes a concurrent redelivery of
   the same message wait, then skip).
2. The provider is called with that key and the same body (amount, currency, token and
   metadata, all read from the stored row) on every attempt and every redelivery. The provider
   makes at most one charge per key and answers a repeated key with the first outcome.
3. The outcome is written in T by a guarded update (``WHERE status = 'pending'``) and its event
   is added to the outbox in T: state, event and inbox row commit together or not at all.

So: a crash before, during or after the call, before T commits, rolls T back; the message is
redelivered; step 1 finds the same payment and step 2 gets the charge already made replayed.
Two deliveries at once (a duplicated envelope) both call with the same key (one charge) and
both try the guarded update: the second waits for the first to commit, then finds the payment
no longer pending and writes and publishes nothing. A webhook racing with step 3 is decided
by the same guarded update. One payment, one charge, one event.

Costs of the split: each payment in flight holds two database connections for a moment (T's
and step 1's), which ``payment_concurrency`` bounds; and T stays open, idle, during the call.

An unreachable provider
-----------------------
When the call ends without an answer (transport errors, 5xx, 429, attempts exhausted) or the
circuit is open, the payment is not failed: the handler raises ``RetryLater``, T rolls back
(the payment from step 1 stays, pending) and the message waits in a TTL queue, holding no
consumer, until it is tried again. The deadline is measured from the payment's ``created_at``
(the first time this service saw the order, on this service's clock, the same for every
redelivery); once it has passed, the payment fails with ``provider_unavailable``.

A known gap: if an attempt reached the provider but its answer was lost, and no later attempt
gets through before the deadline, the payment is failed although the provider may have charged.
Should the provider announce that charge by webhook, the payment moves from failed
(``provider_unavailable``) to succeeded and ``payment.succeeded`` is published, so the order
side, whose order already failed, asks for a refund. Without a webhook, a real deployment must
reconcile such payments against the provider's records.

Refunds use the same scheme with the key ``refund-<payment id>`` and a guarded
``succeeded → refunded`` update; the payment row already exists, so no step 1 is needed.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payments_gateway.config import Settings
from payments_gateway.errors import (
    PaymentNotFound,
    PaymentNotSettled,
    WebhookMismatch,
    WebhookReplayed,
)
from payments_gateway.models import FailureReason, Payment, PaymentStatus
from payments_gateway.provider import (
    ChargeDeclined,
    ChargeRequest,
    ProviderClient,
    ProviderRejected,
    ProviderUnavailable,
)
from payments_gateway.repository import PaymentRepository, WebhookEventRepository
from payments_gateway.webhooks import WebhookEvent, parse_event, verify_signature
from servicekit.breaker import CircuitOpenError
from servicekit.bus import RetryLater
from servicekit.events import (
    OrderCreated,
    OrderRefundRequested,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
)
from servicekit.logging import get_logger
from servicekit.outbox import Outbox
from servicekit.pagination import decode_cursor, encode_cursor
from servicekit.security import Principal

log = get_logger(__name__)


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


# --- charging -------------------------------------------------------------------------------


async def open_payment(
    *, sessions: async_sessionmaker[AsyncSession], order: OrderCreated, now: datetime
) -> Payment:
    """The order's payment, created pending if new, committed at once (step 1 above)."""
    async with sessions() as session, session.begin():
        return await PaymentRepository(session).add_pending(
            payment_id=uuid.uuid4(),
            order_id=order.order_id,
            user_id=order.user_id,
            amount=order.total_amount,
            currency=order.currency,
            source_token=order.payment_token,
            now=now,
        )


async def charge_order(
    *,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    provider: ProviderClient,
    settings: Settings,
    order: OrderCreated,
) -> None:
    """Charge an order once; defer while the provider is unreachable, up to the deadline."""
    payment = await open_payment(sessions=sessions, order=order, now=utcnow())
    if payment.status != PaymentStatus.PENDING:
        log.info("payment.already_settled", payment_id=str(payment.id), status=payment.status)
        return
    if payment.provider_reference is not None or payment.source_token is None:
        log.info("payment.awaiting_webhook", payment_id=str(payment.id))
        return
    await _charge(session, outbox, provider, settings, payment)


async def _charge(
    session: AsyncSession,
    outbox: Outbox,
    provider: ProviderClient,
    settings: Settings,
    payment: Payment,
) -> None:
    """One charge attempt of a pending payment, its outcome written in ``session``.

    Raises RetryLater while the provider is unreachable and the deadline is ahead; fails the
    payment with ``provider_unavailable`` once it has passed.
    """
    if payment.source_token is None:  # pragma: no cover - callers check it
        raise ValueError(f"payment {payment.id} has no source to charge")
    request = ChargeRequest(
        payment_id=payment.id,
        order_id=payment.order_id,
        amount=payment.amount,
        currency=payment.currency,
        source=payment.source_token,
    )
    try:
        result = await provider.charge(request)
    except ChargeDeclined:
        await _fail(session, outbox, payment.id, reason=FailureReason.DECLINED)
        return
    except (ProviderUnavailable, CircuitOpenError) as error:
        deadline = payment.created_at + timedelta(seconds=settings.provider_deadline_seconds)
        now = utcnow()
        if now >= deadline:
            await _fail(session, outbox, payment.id, reason=FailureReason.PROVIDER_UNAVAILABLE)
            return
        delay = min(_defer_delay(error, settings), (deadline - now).total_seconds())
        log.warning(
            "payment.deferred",
            payment_id=str(payment.id),
            retry_in_s=round(delay, 2),
            deadline=deadline.isoformat(),
            error=str(error),
        )
        raise RetryLater(delay, f"provider unavailable: {error}") from error
    if result.status == "pending":
        await PaymentRepository(session).await_webhook(
            payment.id, charge_id=result.charge_id, now=utcnow()
        )
        log.info("payment.charge_pending", payment_id=str(payment.id), charge_id=result.charge_id)
        return
    await _succeed(session, outbox, payment.id, charge_id=result.charge_id)


def _defer_delay(error: Exception, settings: Settings) -> float:
    # An open circuit says when it will let a trial call through; a provider may say
    # Retry-After; otherwise the configured pause.
    if isinstance(error, CircuitOpenError):
        return max(error.retry_after, 0.1)
    if isinstance(error, ProviderUnavailable) and error.retry_after is not None:
        return max(error.retry_after, settings.provider_defer_seconds)
    return settings.provider_defer_seconds


async def _succeed(
    session: AsyncSession,
    outbox: Outbox,
    payment_id: uuid.UUID,
    *,
    charge_id: str,
    from_status: PaymentStatus = PaymentStatus.PENDING,
) -> bool:
    payment = await PaymentRepository(session).transition(
        payment_id,
        from_status=from_status,
        to_status=PaymentStatus.SUCCEEDED,
        now=utcnow(),
        provider_reference=charge_id,
        reason=None,
        source_token=None,
    )
    if payment is None:
        log.info("payment.already_settled", payment_id=str(payment_id))
        return False
    await outbox.add(
        session,
        PaymentSucceeded(
            payment_id=payment.id,
            order_id=payment.order_id,
            user_id=payment.user_id,
            amount=payment.amount,
            currency=payment.currency,
            provider_reference=charge_id,
        ),
    )
    log.info("payment.succeeded", payment_id=str(payment.id), charge_id=charge_id)
    return True


async def _fail(
    session: AsyncSession, outbox: Outbox, payment_id: uuid.UUID, *, reason: FailureReason
) -> bool:
    payment = await PaymentRepository(session).transition(
        payment_id,
        from_status=PaymentStatus.PENDING,
        to_status=PaymentStatus.FAILED,
        now=utcnow(),
        reason=reason.value,
        source_token=None,
    )
    if payment is None:
        log.info("payment.already_settled", payment_id=str(payment_id))
        return False
    await outbox.add(
        session,
        PaymentFailed(
            payment_id=payment.id,
            order_id=payment.order_id,
            user_id=payment.user_id,
            amount=payment.amount,
            currency=payment.currency,
            reason=reason.value,
        ),
    )
    log.info("payment.failed", payment_id=str(payment.id), reason=reason.value)
    return True


# --- reconciling ----------------------------------------------------------------------------


async def reconcile_pending_charges(
    *,
    sessions: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    provider: ProviderClient,
    settings: Settings,
) -> int:
    """Settle charges still pending long after the provider said pending; how many settled.

    The webhook is how a pending charge normally settles; this catches the ones whose webhook
    never arrived (lost, refused, the provider's retries given up). Each payment is settled by
    the same guarded update as a webhook, so a webhook arriving meanwhile, or another instance
    reconciling the same payment, changes it and publishes its event once.
    """
    cutoff = utcnow() - timedelta(seconds=settings.reconcile_after_seconds)
    async with sessions() as session:
        stale = await PaymentRepository(session).awaiting_webhook(
            since_before=cutoff, limit=settings.reconcile_batch
        )
    settled = 0
    for payment in stale:
        charge_id = payment.provider_reference
        if charge_id is None:  # pragma: no cover - the query selects payments with one
            continue
        try:
            charge = await provider.lookup_charge(charge_id)
        except (ProviderUnavailable, CircuitOpenError) as error:
            log.warning("payment.reconcile_deferred", payment_id=str(payment.id), error=str(error))
            break  # the provider is away: the next round tries again
        except ProviderRejected as error:
            log.error(
                "payment.reconcile_refused",
                payment_id=str(payment.id),
                charge_id=charge_id,
                status_code=error.status_code,
            )
            continue
        if charge.status == "pending":
            continue
        async with sessions() as session, session.begin():
            if charge.status == "succeeded":
                changed = await _succeed(session, outbox, payment.id, charge_id=charge_id)
            else:
                changed = await _fail(session, outbox, payment.id, reason=FailureReason.DECLINED)
        if changed:
            settled += 1
            log.warning(
                "payment.reconciled",
                payment_id=str(payment.id),
                charge_id=charge_id,
                status=charge.status,
                pending_since=payment.updated_at.isoformat(),
            )
    return settled


async def sweep_stalled_payments(
    *,
    sessions: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    provider: ProviderClient,
    settings: Settings,
) -> Counter[str]:
    """Move on payments pending, uncharged, for ``payment_stall_seconds``; outcomes counted.

    Such a payment's ``order.created`` was lost after the payment was recorded (or waits in a
    delay queue). It is charged again here with the same idempotency key, the payment id, so a
    charge the provider already made is replayed, never repeated; past its deadline it fails
    with ``provider_unavailable`` (``payment.failed``: the order fails). A delivery of the
    message racing with this is decided by the guarded update: one outcome, one event.
    """
    cutoff = utcnow() - timedelta(seconds=settings.payment_stall_seconds)
    async with sessions() as session:
        stalled = await PaymentRepository(session).stalled(
            since_before=cutoff, limit=settings.reconcile_batch
        )
    outcomes: Counter[str] = Counter()
    for payment in stalled:
        log.warning(
            "payment.stalled",
            payment_id=str(payment.id),
            order_id=str(payment.order_id),
            pending_since=payment.updated_at.isoformat(),
        )
        try:
            async with sessions() as session, session.begin():
                await _charge(session, outbox, provider, settings, payment)
                settled = await PaymentRepository(session).get(payment.id)
        except RetryLater as deferral:
            outcomes["deferred"] += 1
            if isinstance(deferral.__cause__, CircuitOpenError):
                break  # the provider is away: the next round tries again
            continue
        status = settled.status if settled is not None else "?"
        outcomes[
            "awaiting_webhook"
            if status == PaymentStatus.PENDING
            else "failed_deadline"
            if settled is not None and settled.reason == FailureReason.PROVIDER_UNAVAILABLE
            else str(status)
        ] += 1
    return outcomes


async def purge_webhook_events(
    *, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> int:
    """Delete applied webhook ids older than the retention; how many were deleted."""
    before = utcnow() - timedelta(days=settings.webhook_retention_days)
    async with sessions() as session, session.begin():
        purged = await WebhookEventRepository(session).purge(received_before=before)
    if purged:
        log.info("webhook.ids_purged", count=purged, received_before=before.isoformat())
    return purged


# --- refunding ------------------------------------------------------------------------------


async def refund_order(
    *,
    session: AsyncSession,
    outbox: Outbox,
    provider: ProviderClient,
    settings: Settings,
    request: OrderRefundRequested,
    requested_at: datetime,
) -> None:
    """Refund an order's payment once; wait (bounded) for a payment that is not settled yet."""
    repository = PaymentRepository(session)
    payment = await repository.get_by_order(request.order_id)
    now = utcnow()
    if payment is None or payment.status == PaymentStatus.PENDING:
        wait_until = requested_at + timedelta(seconds=settings.refund_wait_seconds)
        state = "unknown" if payment is None else "pending"
        if now < wait_until:
            log.info("refund.waiting_for_payment", order_id=str(request.order_id), payment=state)
            raise RetryLater(settings.provider_defer_seconds, f"payment {state}")
        # Raised, not dropped: after the consumer's retries it is parked for an operator.
        raise PaymentNotSettled(f"payment of order {request.order_id} is still {state}")
    if payment.status == PaymentStatus.FAILED:
        log.info("refund.nothing_to_refund", payment_id=str(payment.id))
        return
    if payment.status == PaymentStatus.REFUNDED:
        log.info("refund.already_refunded", payment_id=str(payment.id))
        return
    if payment.provider_reference is None:  # pragma: no cover - a succeeded payment has one
        raise PaymentNotSettled(f"payment {payment.id} succeeded without a charge")
    if request.amount != payment.amount:
        log.warning(
            "refund.amount_differs",
            payment_id=str(payment.id),
            requested=str(request.amount),
            refunding=str(payment.amount),
        )
    try:
        result = await provider.refund(
            payment_id=payment.id,
            order_id=payment.order_id,
            charge_id=payment.provider_reference,
            amount=payment.amount,
        )
    except (ProviderUnavailable, CircuitOpenError) as error:
        deadline = requested_at + timedelta(seconds=settings.provider_deadline_seconds)
        if now >= deadline:
            raise  # the consumer retries a few times, then parks it for an operator
        delay = min(_defer_delay(error, settings), (deadline - now).total_seconds())
        log.warning("refund.deferred", payment_id=str(payment.id), retry_in_s=round(delay, 2))
        raise RetryLater(delay, f"provider unavailable: {error}") from error
    refunded = await repository.transition(
        payment.id,
        from_status=PaymentStatus.SUCCEEDED,
        to_status=PaymentStatus.REFUNDED,
        now=utcnow(),
        refund_reference=result.refund_id,
    )
    if refunded is None:
        log.info("refund.already_refunded", payment_id=str(payment.id))
        return
    await outbox.add(
        session,
        PaymentRefunded(
            payment_id=refunded.id,
            order_id=refunded.order_id,
            user_id=refunded.user_id,
            amount=refunded.amount,
            currency=refunded.currency,
            provider_reference=result.refund_id,
        ),
    )
    log.info("payment.refunded", payment_id=str(refunded.id), refund_id=result.refund_id)


# --- the provider's webhook -----------------------------------------------------------------


async def receive_provider_webhook(
    *,
    session: AsyncSession,
    outbox: Outbox,
    secret: str,
    tolerance: int,
    signature: str | None,
    body: bytes,
) -> tuple[WebhookEvent, bool]:
    """Verify and apply one delivery; returns the event and whether it changed the payment."""
    verify_signature(
        secret=secret, header=signature, body=body, now=time.time(), tolerance=tolerance
    )
    event = parse_event(body)
    payment = await _payment_of(PaymentRepository(session), event)
    recorded = await WebhookEventRepository(session).record(
        event_id=event.id, event_type=event.type, payment_id=payment.id, now=utcnow()
    )
    if not recorded:
        # Refused rather than acknowledged again, so a replay is visible to whoever sent it.
        log.warning("webhook.replayed", webhook_event_id=event.id, payment_id=str(payment.id))
        raise WebhookReplayed()
    log.info(
        "webhook.received",
        webhook_event_id=event.id,
        webhook_type=event.type,
        payment_id=str(payment.id),
        status=payment.status,
    )
    charge = event.data
    if event.type == "charge.succeeded" and charge.status == "succeeded":
        given_up = (
            payment.status == PaymentStatus.FAILED
            and payment.reason == FailureReason.PROVIDER_UNAVAILABLE
        )
        if given_up:
            # The provider charged after all (an answer lost before the deadline): announce it,
            # so the order side, whose order already failed, asks for the money back.
            log.warning("payment.charged_after_deadline", payment_id=str(payment.id))
        return event, await _succeed(
            session,
            outbox,
            payment.id,
            charge_id=charge.charge_id,
            from_status=PaymentStatus.FAILED if given_up else PaymentStatus.PENDING,
        )
    if event.type == "charge.failed":
        return event, await _fail(session, outbox, payment.id, reason=FailureReason.DECLINED)
    log.info("webhook.ignored", webhook_event_id=event.id, webhook_type=event.type)
    return event, False


async def _payment_of(repository: PaymentRepository, event: WebhookEvent) -> Payment:
    charge = event.data
    payment: Payment | None = None
    # The gateway puts the payment id in the charge's metadata and uses it as the key.
    for candidate in (charge.metadata.get("payment_id"), charge.idempotency_key):
        payment_id = _uuid_or_none(candidate)
        if payment_id is not None:
            payment = await repository.get(payment_id)
            if payment is not None:
                break
    if payment is None:
        payment = await repository.get_by_charge(charge.charge_id)
    if payment is None:
        raise PaymentNotFound("No payment is known for this charge.")
    if payment.provider_reference not in (None, charge.charge_id):
        raise WebhookMismatch("The webhook names another charge than the payment's.")
    order_id = charge.metadata.get("order_id")
    if order_id is not None and order_id != str(payment.order_id):
        raise WebhookMismatch("The webhook names another order than the payment's.")
    if charge.amount is not None and charge.amount != payment.amount:
        raise WebhookMismatch("The webhook's amount is not the payment's.")
    if charge.currency is not None and charge.currency != payment.currency:
        raise WebhookMismatch("The webhook's currency is not the payment's.")
    return payment


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# --- reading --------------------------------------------------------------------------------


async def get_payment(
    *, session: AsyncSession, principal: Principal, payment_id: uuid.UUID
) -> Payment:
    """One payment of the caller (any payment for an admin)."""
    payment = await PaymentRepository(session).get(payment_id)
    if payment is None or not (principal.is_admin or payment.user_id == principal.user_id):
        raise PaymentNotFound()
    return payment


async def list_payments(
    *,
    session: AsyncSession,
    principal: Principal,
    order_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[Payment], str | None]:
    """A page of the caller's payments (everyone's for an admin), newest first."""
    after = decode_cursor(cursor) if cursor else None
    rows = await PaymentRepository(session).page(
        user_id=None if principal.is_admin else principal.user_id,
        order_id=order_id,
        after=after,
        limit=limit + 1,
    )
    items = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(last.created_at, last.id)
    return items, next_cursor
