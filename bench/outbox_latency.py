"""P5: from an outbox commit to the start of the consumer's handler, at 200 events per second.

A tiny harness around the shared library itself: the producer (this process) commits one event
per transaction with ``Outbox.add`` on an open-loop schedule and runs an ``OutboxRelay`` (woken by
``pg_notify`` at commit) publishing through an ``EventBus``, as a service does; the consumer is a
separate process (as another service would be) with a ``Consumer`` (inbox row, same
transaction) whose handler notes the time it starts. Both run as the services run the library:
on uvloop (which uvicorn picks when it is installed) and with the start-up heap frozen out of
the garbage collector's sight (``freeze_heap``, the services' default). The latency of an event
is that start time minus the time its commit returned, both from the same machine's clock.

    python -m bench.outbox_latency consume DATABASE_URL AMQP_URL EXCHANGE
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import uvloop
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.procs import REPO, say
from bench.stats import percentile
from servicekit.bus import EventBus, ReceivedEvent
from servicekit.db import create_engine, drop_database, ensure_database, session_factory
from servicekit.events import UserUpdated
from servicekit.inbox import inbox_table
from servicekit.logging import configure_logging
from servicekit.outbox import Outbox, OutboxRelay, outbox_table
from servicekit.runtime import freeze_heap
from servicekit.settings import ServiceSettings

SERVICE = "bench-outbox"
PURPOSE = "outbox-latency"
GEN0_THRESHOLD = ServiceSettings.model_fields["gc_gen0_threshold"].default


def _tables() -> tuple[MetaData, Table, Table]:
    metadata = MetaData()
    return metadata, outbox_table(metadata), inbox_table(metadata)


async def consume(database_url: str, amqp_url: str, exchange: str) -> None:
    """The consumer process: prints ``START <event id> <time>`` per handled event until SIGTERM."""
    configure_logging(service=f"{SERVICE}-consumer", json=True, level="WARNING")
    metadata = MetaData()
    inbox = inbox_table(metadata)
    engine = create_engine(database_url, pool_size=10, max_overflow=0, application_name=SERVICE)
    bus = EventBus(url=amqp_url, exchange=exchange, service=f"{SERVICE}-consumer")
    await bus.connect()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def started(event: ReceivedEvent, session: AsyncSession) -> None:
        sys.stdout.write(f"START {event.envelope.id} {time.time():.6f}\n")
        sys.stdout.flush()

    consumer = bus.consumer(
        PURPOSE,
        handlers={UserUpdated.event_type: started},
        session_factory=session_factory(engine),
        inbox=inbox,
    )
    await consumer.start()
    freeze_heap(gen0_threshold=GEN0_THRESHOLD)
    print("READY", flush=True)
    await stop.wait()
    await bus.close()
    await engine.dispose()


@dataclass(frozen=True)
class LatencyRun:
    latencies_ms: tuple[float, ...]
    lost: int
    late_commits: int

    def at(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def _produce(
    outbox: Outbox,
    sessions: async_sessionmaker[AsyncSession],
    *,
    rate: float,
    seconds: float,
) -> tuple[dict[str, float], int]:
    loop = asyncio.get_running_loop()
    committed: dict[str, float] = {}
    late = 0
    user_id = uuid.uuid4()

    async def one(due: float) -> None:
        nonlocal late
        if loop.time() - due > 0.005:
            late += 1
        async with sessions() as session, session.begin():
            envelope = await outbox.add(
                session,
                UserUpdated(
                    user_id=user_id,
                    email="bench@example.com",
                    name="Bench",
                    updated_at=datetime.now(UTC),
                ),
            )
        committed[str(envelope.id)] = time.time()

    tasks = []
    start = loop.time() + 0.05
    for index in range(int(rate * seconds)):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    return committed, late


async def _read_starts(stdout: asyncio.StreamReader, starts: dict[str, float]) -> None:
    """Collect the consumer's lines as they come (a full pipe would stall its event loop)."""
    while line := await stdout.readline():
        marker, event_id, stamp = [*line.decode().strip().split(" "), "", ""][:3]
        if marker == "START":
            starts[event_id] = float(stamp)


async def _wait_for(starts: dict[str, float], wanted: set[str], timeout: float) -> None:
    for _ in range(int(timeout / 0.05)):
        if wanted.issubset(starts):
            return
        await asyncio.sleep(0.05)  # the reader task fills ``starts``


async def measure(
    *, database_url: str, amqp_url: str, exchange: str, reps: int, rate: float, seconds: float
) -> list[LatencyRun]:
    """Create the harness database, run ``reps`` runs of ``rate`` events/s, drop it again."""
    await ensure_database(database_url)
    engine = create_engine(database_url, pool_size=20, max_overflow=10, application_name=SERVICE)
    consumer: asyncio.subprocess.Process | None = None
    relay: OutboxRelay | None = None
    thresholds = gc.get_threshold()
    bus = EventBus(url=amqp_url, exchange=exchange, service=SERVICE)
    try:
        metadata, outbox_t, _ = _tables()
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        consumer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.outbox_latency",
            "consume",
            database_url,
            amqp_url,
            exchange,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        assert consumer.stdout is not None

        async def ready() -> None:
            assert consumer is not None
            assert consumer.stdout is not None
            while (line := await consumer.stdout.readline()) and line.strip() != b"READY":
                pass
            if not line:
                raise RuntimeError("the harness consumer exited before it was ready")

        await asyncio.wait_for(ready(), timeout=60)
        await bus.connect()
        relay = OutboxRelay(engine=engine, table=outbox_t, publish=bus.publish_raw)
        await relay.start()
        outbox = Outbox(outbox_t, producer=SERVICE)
        sessions = session_factory(engine)
        # One untimed event first: connections, queues and caches warm.
        await _produce(outbox, sessions, rate=rate, seconds=0.5)
        freeze_heap(gen0_threshold=GEN0_THRESHOLD)
        starts: dict[str, float] = {}
        reader = asyncio.create_task(_read_starts(consumer.stdout, starts))
        await asyncio.sleep(1.0)
        runs: list[LatencyRun] = []
        for rep in range(1, reps + 1):
            committed, late = await _produce(outbox, sessions, rate=rate, seconds=seconds)
            await _wait_for(starts, set(committed), timeout=30)
            latencies = tuple(
                (starts[event_id] - at) * 1000
                for event_id, at in committed.items()
                if event_id in starts
            )
            run = LatencyRun(latencies, len(committed) - len(latencies), late)
            runs.append(run)
            say(
                f"  run {rep}/{reps}: {len(committed)} events at {rate:g}/s: p50 "
                f"{run.at(50):.1f} ms, p99 {run.at(99):.1f} ms, max {max(latencies):.1f} ms"
                + (f", {run.lost} not seen" if run.lost else "")
            )
        reader.cancel()
        return runs
    finally:
        if relay is not None:
            await relay.stop(flush_timeout=0)
        await bus.close()
        if consumer is not None and consumer.returncode is None:
            consumer.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.wait(), timeout=15)
            if consumer.returncode is None:
                consumer.kill()
        await engine.dispose()
        with contextlib.suppress(Exception):
            await drop_database(database_url)
        gc.unfreeze()  # the bench's later goals run in this process
        gc.set_threshold(*thresholds)


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "consume":
        print(__doc__, file=sys.stderr)
        return 2
    uvloop.run(consume(*argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
