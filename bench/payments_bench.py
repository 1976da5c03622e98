"""P6: payments per second of one payments-gateway instance while the provider takes 200 ms.

One payments-gateway instance and a provider simulator run on a namespace of their own (database,
exchange, ports), started from the launcher's own description of them, so nothing else consumes
or produces on that exchange. ``order.created`` events are published straight to the exchange;
a queue of the bench's counts ``payment.succeeded`` as the service's outbox publishes them.

With a 200 ms provider, 100 payments/s needs at least 20 provider calls in flight, so the bench
raises ``PAYMENTS_PAYMENT_CONCURRENCY`` (default 8, i.e. at most 40/s) and the database pool it
requires (the service refuses a pool smaller than 2 × concurrency + 2, since each payment in
flight holds its consumer transaction plus the short one that records the payment).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

import aio_pika
import httpx

from bench.procs import Bench, Processes, say, wait_ready
from servicekit.bus import EventBus
from servicekit.events import OrderCreated, OrderItemData, new_envelope

PROVIDER_LATENCY_MS = 200
# Each payment holds a slot for the provider's 200 ms plus its own database work (100-150 ms on
# a busy two-core machine): 32 slots allow about 32 / 0.33 s ≈ 95-110 payments/s. More slots
# did not help here (48 measured lower: the instance is then short of CPU, not of slots).
CONCURRENCY = int(os.environ.get("BENCH_PAYMENT_CONCURRENCY", "32"))
SETTINGS = {
    "PAYMENTS_PAYMENT_CONCURRENCY": str(CONCURRENCY),
    # The service refuses a pool below 2 × concurrency + 2 (66 for 32); all of it is kept open
    # (connections beyond the pool size are closed when handed back, then reopened).
    "PAYMENTS_DB_POOL_SIZE": str(2 * CONCURRENCY + 2),
    "PAYMENTS_DB_MAX_OVERFLOW": "2",
    # A full prefetch window behind the busy slots keeps every slot fed.
    "PAYMENTS_CONSUMER_PREFETCH": str(2 * CONCURRENCY),
}


@dataclass(frozen=True)
class PaymentsRun:
    payments: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.payments / self.seconds


def overrides(bench: Bench) -> dict[str, str]:
    """The P6 namespace, ports and payment settings on top of the bench's environment."""
    return {
        "SYSTEM_NAMESPACE": f"{bench.namespace}p6",
        "RUN_DIR": str(bench.run_dir / "p6"),
        "PAYMENTS_PORT": str(bench.ports["P6_PAYMENTS"]),
        "SIMULATOR_PORT": str(bench.ports["P6_SIMULATOR"]),
        **SETTINGS,
    }


def start(bench: Bench, processes: Processes) -> tuple[str, str]:
    """Migrate and start the simulator and one payments-gateway; (exchange, simulator url)."""
    env = overrides(bench)
    migrate = bench.plan_spec("payments-gateway-migrate", env)
    done = subprocess.run(  # noqa: S603 - the launcher's own migrate command
        list(migrate.command),
        env={**bench.env, **migrate.env},
        cwd=migrate.cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"payments migration failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    simulator = processes.start_spec(
        bench.plan_spec("provider-simulator", env), name="p6-simulator"
    )
    simulator_url = f"http://127.0.0.1:{bench.ports['P6_SIMULATOR']}"
    wait_ready(simulator, [f"{simulator_url}/healthz"])
    spec = bench.plan_spec("payments-gateway-1", env)
    # The plan derives only the settings the launcher sets; the P6 ones are added here.
    payments = processes.start(
        "p6-payments-gateway", spec.command, env={**spec.env, **SETTINGS}, cwd=spec.cwd
    )
    wait_ready(payments, [f"http://127.0.0.1:{bench.ports['P6_PAYMENTS']}/health/ready"])
    response = httpx.put(
        f"{simulator_url}/__admin/faults",
        json={"error_rate": 0, "latency_ms": PROVIDER_LATENCY_MS, "down": False},
        timeout=10,
        trust_env=False,
    )
    response.raise_for_status()
    return f"{env['SYSTEM_NAMESPACE']}.events", simulator_url


def _order() -> OrderCreated:
    return OrderCreated(
        order_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        items=[OrderItemData(sku="BENCH-1", quantity=1, unit_price=Decimal("10.00"))],
        total_amount=Decimal("10.00"),
        currency="USD",
        payment_token="tok_visa",
    )


async def _run(amqp_url: str, exchange: str, *, reps: int, payments: int) -> list[PaymentsRun]:
    bus = EventBus(url=amqp_url, exchange=exchange, service="bench-orders")
    await bus.connect()
    connection = await aio_pika.connect_robust(
        amqp_url, client_properties={"connection_name": f"bench-payments-results@{exchange}"}
    )
    try:
        channel = await connection.channel()
        results = await channel.declare_queue(
            f"{exchange}.bench.payment-results", durable=False, auto_delete=True
        )
        ex = await channel.get_exchange(exchange)
        for key in ("payment.succeeded", "payment.failed"):
            await results.bind(ex, routing_key=key)
        seen: dict[str, float] = {}
        failed: list[str] = []

        async def on_result(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                if message.type == "payment.succeeded":
                    seen[message.message_id or ""] = time.perf_counter()
                else:
                    failed.append(message.body.decode()[:300])

        await results.consume(on_result)

        async def batch(count: int) -> PaymentsRun:
            before = len(seen)
            started = time.perf_counter()
            await asyncio.gather(
                *(bus.publish(new_envelope(_order(), producer="orders")) for _ in range(count))
            )
            deadline = time.monotonic() + 180
            while len(seen) - before < count:
                if failed:
                    raise RuntimeError(f"a payment failed: {failed[0]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(seen) - before} of {count} payments in 180 s")
                await asyncio.sleep(0.05)
            return PaymentsRun(count, max(seen.values()) - started)

        await batch(2 * CONCURRENCY)  # warm-up: connections, pools, JIT-less caches
        runs = []
        for rep in range(1, reps + 1):
            run = await batch(payments)
            runs.append(run)
            say(
                f"  run {rep}/{reps}: {run.rate:,.1f} payments/s ({run.payments} in "
                f"{run.seconds:.1f} s, provider latency {PROVIDER_LATENCY_MS} ms)"
            )
        return runs
    finally:
        await connection.close()
        await bus.close()


def measure(amqp_url: str, exchange: str, *, reps: int, payments: int) -> list[PaymentsRun]:
    """``reps`` batches of ``payments`` order.created events, each timed to its last success."""
    return asyncio.run(_run(amqp_url, exchange, reps=reps, payments=payments))


def describe(settings: Mapping[str, str] = SETTINGS) -> str:
    """The settings P6 runs with, for the output."""
    return ", ".join(f"{key}={value}" for key, value in settings.items())
