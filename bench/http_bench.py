"""P1, P2, P3 and P7: the cached profile read, against its baselines, side by side.

Each repetition measures every side of a ratio one right after the other (interleaved), so a
change in the machine's load between repetitions moves both sides together.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from bench.loadgen import OpenLoopRun, RawHttp, WrkRun, open_loop, wrk
from bench.procs import say

PASSWORD = "a long enough bench passphrase"


@dataclass(frozen=True)
class Account:
    """A registered user whose profile exists, with a fresh access token."""

    email: str
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register(gateway: str, *, label: str) -> Account:
    """Register through the gateway, log in, and wait until the users service has the profile."""
    email = f"{label}-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=gateway, timeout=30, trust_env=False) as client:
        created = client.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "name": "Bench"}
        )
        created.raise_for_status()
        user_id = created.json()["id"]
        account = Account(email, user_id, login(client, email))
        deadline = time.monotonic() + 30
        while client.get("/users/me", headers=account.auth).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the profile of a registered user did not appear within 30 s")
            time.sleep(0.1)
    return account


def login(client: httpx.Client, email: str) -> str:
    """A fresh access token."""
    response = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["access_token"])


def refreshed(gateway: str, account: Account) -> Account:
    """The account with a new access token (they live 15 minutes; a bench run takes about 10)."""
    with httpx.Client(base_url=gateway, timeout=30, trust_env=False) as client:
        return Account(account.email, account.user_id, login(client, account.email))


@dataclass(frozen=True)
class ThroughputPlan:
    """How wrk drives a throughput measurement (pinned, the same for every side)."""

    seconds: float = 5.0
    warmup_seconds: float = 2.0
    connections: int = 32
    threads: int = 1


def measure_throughput(
    targets: dict[str, tuple[str, dict[str, str]]], *, reps: int, plan: ThroughputPlan
) -> dict[str, list[WrkRun]]:
    """wrk each target in turn, ``reps`` times (warmed up once first); runs by target name."""
    for name, (url, headers) in targets.items():
        say(f"  warming up {name}")
        wrk(url, seconds=plan.warmup_seconds, connections=plan.connections, headers=headers)
    runs: dict[str, list[WrkRun]] = {name: [] for name in targets}
    for rep in range(1, reps + 1):
        for name, (url, headers) in targets.items():
            run = wrk(
                url,
                seconds=plan.seconds,
                connections=plan.connections,
                threads=plan.threads,
                headers=headers,
            )
            runs[name].append(run)
            say(
                f"  run {rep}/{reps} {name}: {run.rate:,.0f} req/s, "
                f"p50 {run.latency_ms['p50']:.1f} ms, p99 {run.latency_ms['p99']:.1f} ms"
            )
    return runs


@dataclass(frozen=True)
class LatencyPlan:
    """The fixed-rate read and the login load of P7."""

    read_rate: float = 100.0
    login_rate: float = 20.0
    seconds: float = 10.0


async def _read_under_logins(
    gateway: str,
    reader: Account,
    login_emails: Sequence[str],
    plan: LatencyPlan,
    *,
    with_logins: bool,
) -> tuple[OpenLoopRun, OpenLoopRun | None]:
    reads = RawHttp(gateway)
    logins = RawHttp(gateway)
    try:
        # Warm the connections so neither run pays for opening them.
        await asyncio.gather(
            *(reads.request("GET", "/users/me", headers=reader.auth) for _ in range(20))
        )
        read = open_loop(
            reads,
            "GET",
            "/users/me",
            rate=plan.read_rate,
            seconds=plan.seconds,
            headers=[reader.auth],
        )
        if not with_logins:
            return await read, None
        login = open_loop(
            logins,
            "POST",
            "/auth/login",
            rate=plan.login_rate,
            seconds=plan.seconds,
            json_bodies=[{"email": email, "password": PASSWORD} for email in login_emails],
        )
        read_run, login_run = await asyncio.gather(read, login)
        return read_run, login_run
    finally:
        await reads.close()
        await logins.close()


def measure_read_latency(
    gateway: str, reader: Account, login_emails: Sequence[str], *, reps: int, plan: LatencyPlan
) -> tuple[list[OpenLoopRun], list[OpenLoopRun], list[OpenLoopRun]]:
    """P7: (idle runs, runs during logins, the login runs), interleaved per repetition."""
    idle: list[OpenLoopRun] = []
    loaded: list[OpenLoopRun] = []
    logins: list[OpenLoopRun] = []
    for rep in range(1, reps + 1):
        quiet, _ = asyncio.run(
            _read_under_logins(gateway, reader, login_emails, plan, with_logins=False)
        )
        busy, login_run = asyncio.run(
            _read_under_logins(gateway, reader, login_emails, plan, with_logins=True)
        )
        assert login_run is not None
        idle.append(quiet)
        loaded.append(busy)
        logins.append(login_run)
        q, b = quiet.percentiles(), busy.percentiles()
        say(
            f"  run {rep}/{reps}: read p99 idle {q['p99']:.1f} ms, during "
            f"{plan.login_rate:g} logins/s {b['p99']:.1f} ms (login p50 "
            f"{login_run.percentiles()['p50']:.0f} ms; login statuses {dict(login_run.statuses)})"
        )
    return idle, loaded, logins
