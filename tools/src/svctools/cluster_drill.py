"""Broker node loss under load (`make cluster-test`): the whole system on a three-node cluster.

It starts three throwaway RabbitMQ nodes joined into one cluster (``RabbitCluster``: own ports
and data, the machine's broker is not touched) and the system on ports, databases and a run
directory of its own (``svctools.chaos.start_system``: orders and payments-gateway twice), every
service given all three nodes in ``AMQP_URL``. Clients place orders through the gateway at a
steady rate (4/s) from before the first fault until 20 s after the last, while:

1. the node leading the most quorum queues is SIGKILLed, then started again;
2. later two nodes are stopped at once (the cluster loses its majority: no quorum queue can
   accept a message, so publishing stops or blocks and the outboxes hold the rows), then
   started again.

Then it waits (bounded) for the system to settle and checks the invariants of the chaos run
(``svctools.chaos.inspect``): every accepted order terminal, one charge per confirmed order in
the provider's ledger, one email per event, no message left in any queue, no outbox row
unpublished, no request that failed for good (a 500 from the gateway would be one). It prints
how long orders placed around each failover took to complete (p50, p99, max; orders placed
before the first fault for comparison) and the longest pause in completions, and exits 1 when
an invariant fails. The nodes, the system, its databases and run directory are removed.

    python -m svctools.cluster_drill [--rate R] [--outage S] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from servicekit.db import drop_database
from servicekit.operations import outbox_backlog
from servicekit.testing.rabbitnodes import RabbitCluster, RabbitNode
from svctools import chaos
from svctools.launcher import SERVICES

INSTANCES = {"orders": 2, "payments-gateway": 2}
# A few orders a second need few database connections; the machine's PostgreSQL is shared.
SMALL_POOLS = {
    f"{d.env_prefix}{name}": value
    for d in SERVICES
    for name, value in (("DB_POOL_SIZE", "3"), ("DB_MAX_OVERFLOW", "3"))
} | {"PAYMENTS_PAYMENT_CONCURRENCY": "2"}  # two connections per payment in flight


@dataclass(frozen=True)
class DrillSettings:
    rate: float  # orders per second
    outage: float  # seconds a killed or stopped node stays down
    settle_timeout: float
    keep: bool


def parse_args(argv: Sequence[str] | None) -> DrillSettings:
    parser = argparse.ArgumentParser(
        prog="python -m svctools.cluster_drill",
        description="Run the system on a three-node RabbitMQ cluster under load, kill the "
        "busiest node, then take the majority away, and check that nothing was lost.",
    )
    env = os.environ
    parser.add_argument(
        "--rate", type=float, default=float(env.get("CLUSTER_RATE", 4)), help="orders/s"
    )
    parser.add_argument(
        "--outage", type=float, default=float(env.get("CLUSTER_OUTAGE", 10)), help="seconds"
    )
    parser.add_argument("--settle-timeout", type=float, default=240)
    parser.add_argument("--keep", action="store_true", help="keep databases and logs")
    args = parser.parse_args(argv)
    return DrillSettings(args.rate, args.outage, args.settle_timeout, args.keep)


class ClusterQueues:
    """What ``chaos.inspect`` asks the broker, answered by the cluster."""

    def __init__(self, cluster: RabbitCluster) -> None:
        self.cluster = cluster

    async def queue_depths(self, prefix: str) -> dict[str, int]:
        listed = await asyncio.to_thread(self.cluster.queues, prefix)
        return {name: messages for name, _, messages in listed}


@dataclass
class Fault:
    """One failover: what was done, when it began and when the cluster was whole again."""

    name: str
    began: float = 0.0
    whole_again: float = 0.0
    outbox_peak: int = 0  # pending outbox rows seen while it lasted


@dataclass
class Gaps:
    """Completion times (s from 201 to terminal) of the orders placed in a window."""

    label: str
    latencies: list[float] = field(default_factory=list)
    longest_pause: float = 0.0  # the longest time no order completed, within the window

    def row(self) -> str:
        if not self.latencies:
            return f"  {self.label}\n      no orders"
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return (
            f"  {self.label}\n      {len(ordered):>4} orders"
            f"   p50 {statistics.median(ordered):6.2f} s"
            f"   p99 {p99:6.2f} s   max {ordered[-1]:6.2f} s"
            f"   longest pause in completions {self.longest_pause:5.2f} s"
        )


def say(text: str) -> None:
    chaos.say(text)


async def wait_whole(cluster: RabbitCluster, timeout: float = 120) -> None:
    everyone = sorted(node.nodename for node in cluster.nodes)
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(cluster.running_nodes) != everyone:
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster did not become whole again")
        await asyncio.sleep(1)


async def pending_rows(system: chaos.System) -> int:
    counts = await asyncio.gather(
        *(outbox_backlog(system.database_url(d)) for d in SERVICES), return_exceptions=True
    )
    return sum(c[0] for c in counts if isinstance(c, tuple))


async def watch_outbox(system: chaos.System, fault: Fault, stop: asyncio.Event) -> None:
    while not stop.is_set():
        fault.outbox_peak = max(fault.outbox_peak, await pending_rows(system))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def kill_busiest(cluster: RabbitCluster, system: chaos.System, outage: float) -> Fault:
    victim = await asyncio.to_thread(cluster.busiest_leader, f"{system.exchange}.")
    fault = Fault(f"SIGKILL {victim.name} (leads most queues), {outage:g} s, start")
    say(f"fault: {fault.name}")
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_outbox(system, fault, stop))
    fault.began = time.time()
    await asyncio.to_thread(victim.kill)
    await asyncio.sleep(outage)
    await asyncio.to_thread(victim.start)
    await wait_whole(cluster)
    fault.whole_again = time.time()
    stop.set()
    await watcher
    return fault


async def lose_majority(cluster: RabbitCluster, system: chaos.System, outage: float) -> Fault:
    leader = await asyncio.to_thread(cluster.busiest_leader, f"{system.exchange}.")
    others = [node for node in cluster.nodes if node is not leader]
    stopped: list[RabbitNode] = [leader, others[0]]
    fault = Fault(f"stop_app {' + '.join(n.name for n in stopped)} (no majority), {outage:g} s")
    say(f"fault: {fault.name}")
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_outbox(system, fault, stop))
    fault.began = time.time()
    await asyncio.gather(*(asyncio.to_thread(node.stop_app) for node in stopped))
    await asyncio.sleep(outage)
    await asyncio.gather(*(asyncio.to_thread(node.start_app) for node in stopped))
    await wait_whole(cluster)
    fault.whole_again = time.time()
    stop.set()
    await watcher
    return fault


async def completions(system: chaos.System) -> dict[str, tuple[datetime, datetime, str]]:
    """created_at, updated_at and status of every order."""
    orders = next(d for d in SERVICES if d.name == "orders")
    rows = await chaos._rows(
        system.database_url(orders), "SELECT id, created_at, updated_at, status FROM orders"
    )
    return {str(r["id"]): (r["created_at"], r["updated_at"], str(r["status"])) for r in rows}


def measure(
    label: str,
    placed_in: tuple[float, float],
    pause_in: tuple[float, float],
    stats: chaos.LoadStats,
    orders: dict[str, tuple[datetime, datetime, str]],
) -> Gaps:
    """Completion times of the orders placed in ``placed_in``; the longest pause in ``pause_in``.

    Only orders no client cancelled count (a cancellation moves an order on later).
    """
    gaps = Gaps(label)
    done = []
    for placed in stats.placed:
        row = orders.get(placed.order_id)
        if placed.plan != "keep" or row is None or row[2] not in chaos.TERMINAL:
            continue
        created, updated = row[0].timestamp(), row[1].timestamp()
        if placed_in[0] <= created < placed_in[1]:
            gaps.latencies.append(updated - created)
        if pause_in[0] <= updated < pause_in[1]:
            done.append(updated)
    edges = [pause_in[0], *sorted(done)]
    gaps.longest_pause = max((b - a for a, b in itertools.pairwise(edges)), default=0.0)
    return gaps


async def steady_load(
    client: chaos.Client,
    users: list[chaos.User],
    rate: float,
    stop: asyncio.Event,
    rng: random.Random,
    clients: int = 8,
) -> None:
    """Orders at ``rate`` per second (chaos's mix of tokens and cancellations) until ``stop``."""
    started = time.monotonic()
    seeds = [rng.getrandbits(32) for _ in range(clients)]

    async def worker(index: int) -> None:
        local = random.Random(seeds[index])  # noqa: S311 - test data
        number = index
        while not stop.is_set():
            await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
            if stop.is_set():
                return
            ((token, plan),) = chaos.order_mix(1, local)
            try:
                await client.place(users[number % len(users)], token, plan, local)
            except Exception as exc:  # reported, and the run fails
                client.stats.failures.append(f"order #{number}: {type(exc).__name__}: {exc}")
            number += clients

    await asyncio.gather(*(worker(i) for i in range(clients)))


async def drill(settings: DrillSettings) -> int:
    say("starting a three-node RabbitMQ cluster")
    with RabbitCluster.started(size=3) as cluster:
        urls = ",".join(cluster.urls)
        base = chaos.parse_settings([], os.environ)
        run = dataclasses.replace(base, clients=8)
        say(f"cluster {', '.join(n.nodename for n in cluster.nodes)}; starting the system")
        system = await chaos.start_system(
            run,
            dict(INSTANCES),
            namespace=f"cluster{uuid.uuid4().hex[:8]}",
            amqp_url=urls,
            redis_url=os.environ.get("REDIS_URL", "") or "redis://127.0.0.1:6379/0",
            extra_env=SMALL_POOLS,
        )
        say(f"system up: namespace {system.namespace}, logs {system.run_dir / 'logs'}")
        passed = False
        try:
            passed = await exercise(settings, run, system, cluster)
        finally:
            say("stopping the system")
            await asyncio.to_thread(chaos.stop_system, system)
            if settings.keep:
                say(f"kept: {system.run_dir}, databases *_{system.namespace}")
            else:
                for definition in SERVICES:
                    with contextlib.suppress(Exception):
                        await drop_database(system.database_url(definition))
                if passed:
                    shutil.rmtree(system.run_dir, ignore_errors=True)
                else:
                    say(f"the services' logs are kept in {system.run_dir / 'logs'}")
            say("removing the cluster")
    return 0 if passed else 1


async def exercise(
    settings: DrillSettings,
    run: chaos.Settings,
    system: chaos.System,
    cluster: RabbitCluster,
) -> bool:
    stats = chaos.LoadStats()
    rng = random.Random(run.seed)  # noqa: S311 - test data
    limits = httpx.Limits(max_connections=4 * run.clients + 8)
    async with httpx.AsyncClient(
        base_url=system.gateway, timeout=30, limits=limits, trust_env=False
    ) as http:
        # Until when a client waits to cancel a confirmed order (the load lasts 2–4 minutes).
        deadline = time.monotonic() + 300 + settings.settle_timeout
        client = chaos.Client(http, stats, deadline=deadline)
        users = [chaos.User(f"cluster.{uuid.uuid4().hex[:12]}@example.com") for _ in range(12)]
        await asyncio.gather(*(client.register(u) for u in users))
        say(f"placing {settings.rate:g} orders/s until the faults are over")
        started = time.time()
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(client, users, settings.rate, stop, rng))
        faults: list[Fault] = []
        try:
            await asyncio.sleep(20)
            faults.append(await kill_busiest(cluster, system, settings.outage))
            await asyncio.sleep(15)
            faults.append(await lose_majority(cluster, system, settings.outage))
            await asyncio.sleep(20)
            stop.set()
            await load
        finally:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
        say(f"load done: {len(stats.placed)} orders placed; settling")
        found, settled = await chaos.settle(
            system, stats, ClusterQueues(cluster), settings.settle_timeout
        )
        for task in stats.cancel_tasks:
            task.cancel()
        await asyncio.gather(*stats.cancel_tasks, return_exceptions=True)
    try:
        orders = await completions(system)
    except Exception as exc:  # reported with the rest; the figures are then missing
        found.problems.append(f"orders could not be read: {type(exc).__name__}: {exc}")
        orders = {}
    before = (started, faults[0].began)
    windows = [measure("placed before the first fault", before, before, stats, orders)]
    for fault in faults:
        # Orders placed while the node(s) were down; completions until the cluster was whole.
        down = (fault.began, fault.began + settings.outage)
        pause = (fault.began, fault.whole_again + 5)
        windows.append(measure(f"placed during: {fault.name}", down, pause, stats, orders))
    problems = list(found.problems)
    if settled is None:
        problems.append(f"not settled within {settings.settle_timeout:g} s")
    if faults[1].outbox_peak == 0:
        problems.append("the outboxes held no rows while the cluster had no majority")
    fivehundreds = [f for f in stats.failures if " 500 " in f or f.endswith(" 500")]
    print(report(system, stats, found, settled, faults, windows), flush=True)
    ok = not problems and not stats.failures and not fivehundreds
    print("  result:", "PASS" if ok else "FAIL", flush=True)
    for problem in [*problems, *(f"client: {f}" for f in stats.failures[:10])]:
        print(f"    - {problem}", flush=True)
    return ok


def report(
    system: chaos.System,
    stats: chaos.LoadStats,
    found: chaos.Inspection,
    settled: float | None,
    faults: list[Fault],
    windows: list[Gaps],
) -> str:
    lines = [
        "",
        f"cluster run {system.namespace}: 3 RabbitMQ nodes, orders ×2, payments-gateway ×2",
        f"  orders placed (201)      {len(stats.placed)}",
        "    by final status        "
        + ", ".join(f"{k} {v}" for k, v in sorted(found.statuses.items())),
        "    client retries         "
        + (", ".join(f"{k} ×{v}" for k, v in sorted(stats.retries.items())) or "none"),
        f"  charges / refunds        {found.charges} / {found.refunds}",
        f"  emails                   {found.emails}",
        f"  lost / duplicate charges / duplicate emails   "
        f"{found.lost} / {found.duplicate_charges} / {found.duplicate_emails}",
        f"  messages left in queues  {sum(found.messages_left.values())}",
        f"  outbox backlog           {sum(found.outbox.values())}",
        "  time to settle           " + (f"{settled:.1f} s" if settled is not None else "no"),
        "",
        "faults (outbox rows pending at most while each lasted):",
    ]
    for fault in faults:
        lasted = fault.whole_again - fault.began
        lines.append(f"  {fault.name}: {lasted:.1f} s until whole, {fault.outbox_peak} rows")
    lines += ["", "order completion (201 to terminal state), orders not cancelled by their client:"]
    lines += [gaps.row() for gaps in windows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(drill(settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
