"""``make bench``: start what is needed, measure P1-P7 side by side, report, stop everything.

    python -m bench [--reps N] [--only P1,P3] [--quick]

Progress goes to stderr while it runs; the table goes to stdout at the end, and the results to
``bench/results/<timestamp>.json`` (copied to ``latest.json``) with a plot beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

import uvloop

from bench import http_bench, outbox_latency, payments_bench, pipeline
from bench.loadgen import PERCENTILES, ensure_wrk, now_stamp
from bench.procs import AMQP, REPO, Bench, Processes, Running, say, wait_ready
from bench.report import (
    RESULTS_DIR,
    Charts,
    format_markdown,
    format_table,
    median_percentiles,
    plot,
    write_results,
)
from bench.stats import Goal, Result, Spread, Threshold, absolute_result, failed, ratio_result

# The gateway's per-client limit stays on; the bench's single client address needs it far higher.
GATEWAY_LIMITS = {"GATEWAY_RATE_PER_SECOND": "1000000", "GATEWAY_BURST": "1000000"}
# Every service logs JSON lines as in production (the launcher's default is the console format).
SYSTEM_ENV = {**GATEWAY_LIMITS, "LOG_JSON": "true"}
LOGIN_ACCOUNTS = 10

GOALS: dict[str, tuple[str, Goal, str]] = {
    "P1": (
        "cached GET /users/me via gateway ÷ bare FastAPI hello",
        Goal.ratio(">=", 0.50),
        "req/s",
    ),
    "P2": ("GET /users/{id}: cached ÷ cache off", Goal.ratio(">=", 2.5, unit="×"), "req/s"),
    "P3": ("GET /users/me: via gateway ÷ direct", Goal.ratio(">=", 0.90), "req/s"),
    "P4": (
        "completed orders/s ÷ raw aio-pika msgs/s",
        Goal.ratio(">=", 0.15),
        "/s",
    ),
    "P5": (
        "outbox commit → handler start at 200/s",
        Goal((Threshold("<=", 10, "p50", "ms"), Threshold("<=", 50, "p99", "ms"))),
        "ms",
    ),
    "P6": (
        "payments/s, provider 200 ms, 1 instance",
        Goal((Threshold(">=", 100, "payments/s"),)),
        "",
    ),
    "P7": ("read p99 during 20 logins/s ÷ idle", Goal.ratio("<=", 2.0, unit="×"), "ms"),
}


@dataclass(frozen=True)
class Plan:
    """Durations and sizes; ``--quick`` shrinks them for a smoke run."""

    reps: int = 3
    throughput: http_bench.ThroughputPlan = field(default_factory=http_bench.ThroughputPlan)
    latency: http_bench.LatencyPlan = field(default_factory=http_bench.LatencyPlan)
    raw_seconds: float = 4.0
    orders: int = 300
    order_concurrency: int = 16
    outbox_rate: float = 200.0
    outbox_seconds: float = 5.0
    payments: int = 600

    @classmethod
    def quick(cls, reps: int) -> Plan:
        return cls(
            reps=reps,
            throughput=http_bench.ThroughputPlan(seconds=2.0, warmup_seconds=1.0),
            latency=http_bench.LatencyPlan(seconds=3.0),
            raw_seconds=1.0,
            orders=60,
            outbox_seconds=2.0,
            payments=200,
        )


class Interrupted(Exception):  # noqa: N818 - a stop request, not an error
    """SIGTERM (or SIGHUP) arrived: stop like Ctrl-C."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


class Session:
    """One bench run: the processes, the accounts, the results so far."""

    def __init__(self, bench: Bench, processes: Processes, plan: Plan, only: set[str]) -> None:
        self.bench = bench
        self.processes = processes
        self.plan = plan
        self.only = only
        self.results: dict[str, Result] = {}
        self.charts = Charts()
        self.system: Running | None = None

    def wanted(self, *ids: str) -> bool:
        return any(i in self.only for i in ids)

    def attempt(self, ids: Sequence[str], step: Callable[[], None]) -> None:
        """Run one measurement; if it breaks, its goals are reported as failed, the rest go on."""
        try:
            step()
        except (KeyboardInterrupt, Interrupted):
            raise
        except Exception as exc:
            say(f"  {'/'.join(ids)} failed: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            for goal_id in ids:
                if goal_id not in self.results:
                    measure, goal, unit = GOALS[goal_id]
                    self.results[goal_id] = failed(
                        id=goal_id,
                        measure=measure,
                        goal=goal,
                        unit=unit,
                        error=f"{type(exc).__name__}: {str(exc)[:200]}",
                    )

    def _ratio(
        self, goal_id: str, measured: Sequence[float], baseline: Sequence[float], notes: list[str]
    ) -> None:
        measure, goal, unit = GOALS[goal_id]
        self.results[goal_id] = ratio_result(
            id=goal_id,
            measure=measure,
            goal=goal,
            unit=unit,
            measured=measured,
            baseline=baseline,
            notes=notes,
        )

    # --- the system and the HTTP goals --------------------------------------------------------

    def start_system(self) -> None:
        say(
            f"starting the system (namespace {self.bench.namespace}, gateway "
            f"{self.bench.gateway}; gateway rate limit raised for this run: "
            f"GATEWAY_RATE_PER_SECOND={GATEWAY_LIMITS['GATEWAY_RATE_PER_SECOND']}, "
            f"GATEWAY_BURST={GATEWAY_LIMITS['GATEWAY_BURST']}; one instance of each service)"
        )
        started = time.monotonic()
        self.system = self.bench.start_system(self.processes)
        say(f"system ready in {time.monotonic() - started:.0f} s")

    def start_hello(self) -> str:
        port = self.bench.ports["HELLO"]
        hello = self.processes.start(
            "hello",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.hello:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "10",
            ],
            env={"PYTHONUNBUFFERED": "1"},
            cwd=REPO,
        )
        url = f"http://127.0.0.1:{port}/hello"
        wait_ready(hello, [url])
        return url

    def start_users_without_cache(self) -> str:
        """A second users instance on the same database with its cache switched off (P2)."""
        port = self.bench.ports["USERS_NOCACHE"]
        spec = self.bench.plan_spec("users-1")
        command = list(spec.command)
        command[command.index("--port") + 1] = str(port)
        users = self.processes.start(
            "users-cache-off",
            command,
            env={**spec.env, "USERS_PORT": str(port), "USERS_CACHE_ENABLED": "false"},
            cwd=spec.cwd,
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(users, [f"{url}/health/ready"])
        return url

    def http_goals(self, reader: http_bench.Account) -> None:
        plan = self.plan
        throughput = plan.throughput
        pinned = (
            f"wrk -t{throughput.threads} -c{throughput.connections}, {throughput.seconds:g} s "
            f"per run; every service and the hello app: 1 uvicorn worker; nginx: "
            f"worker_processes auto ({os.cpu_count()})"
        )
        if self.wanted("P1", "P3"):
            say("P1/P3: cached GET /users/me via the gateway, direct, and a bare hello app")
            hello_url = self.start_hello()
            runs = http_bench.measure_throughput(
                {
                    "hello": (hello_url, {}),
                    "direct": (f"{self.bench.url('USERS')}/users/me", reader.auth),
                    "gateway": (f"{self.bench.gateway}/users/me", reader.auth),
                },
                reps=plan.reps,
                plan=throughput,
            )
            rates = {name: [r.rate for r in rs] for name, rs in runs.items()}
            for name, label in (
                ("hello", "bare FastAPI hello"),
                ("direct", "GET /users/me direct"),
                ("gateway", "GET /users/me via gateway"),
            ):
                self.charts.throughput[label] = (Spread.of(rates[name]), "req/s")
                self.charts.latency_ms[f"{label} (wrk, closed loop)"] = median_percentiles(
                    [r.latency_ms for r in runs[name]]
                )
            self._ratio("P1", rates["gateway"], rates["hello"], [pinned])
            self._ratio("P3", rates["gateway"], rates["direct"], [pinned])
        if self.wanted("P2"):
            say("P2: GET /users/{id} direct, on the cached instance and on one with the cache off")
            uncached = self.start_users_without_cache()
            path = f"/users/{reader.user_id}"
            runs = http_bench.measure_throughput(
                {
                    "cached": (f"{self.bench.url('USERS')}{path}", reader.auth),
                    "cache off": (f"{uncached}{path}", reader.auth),
                },
                reps=plan.reps,
                plan=throughput,
            )
            rates = {name: [r.rate for r in rs] for name, rs in runs.items()}
            self.charts.throughput["GET /users/{id} cached"] = (Spread.of(rates["cached"]), "req/s")
            self.charts.throughput["GET /users/{id} cache off"] = (
                Spread.of(rates["cache off"]),
                "req/s",
            )
            self._ratio(
                "P2",
                rates["cached"],
                rates["cache off"],
                [pinned, "cache off: a second users instance with USERS_CACHE_ENABLED=false"],
            )

    def latency_goal(self, reader: http_bench.Account, login_emails: list[str]) -> None:
        plan = self.plan.latency
        say(
            f"P7: GET /users/me via the gateway at {plan.read_rate:g}/s (open loop), idle and "
            f"during {plan.login_rate:g} logins/s"
        )
        idle, loaded, logins = http_bench.measure_read_latency(
            self.bench.gateway, reader, login_emails, reps=self.plan.reps, plan=plan
        )
        idle_p99 = [run.percentiles()["p99"] for run in idle]
        loaded_p99 = [run.percentiles()["p99"] for run in loaded]
        self.charts.latency_ms["P7 read, idle (open loop)"] = median_percentiles(
            [run.percentiles() for run in idle]
        )
        self.charts.latency_ms[f"P7 read, {plan.login_rate:g} logins/s"] = median_percentiles(
            [run.percentiles() for run in loaded]
        )
        self.charts.latency_ms[f"P7 login at {plan.login_rate:g}/s"] = median_percentiles(
            [run.percentiles() for run in logins]
        )
        late = sum(run.late_starts for run in (*idle, *loaded))
        notes = [
            f"{plan.read_rate:g} reads/s for {plan.seconds:g} s per run, latency counted from "
            "when each request was due (open loop)",
            f"logins spread over {LOGIN_ACCOUNTS} accounts; login errors: "
            f"{sum(run.errors for run in logins)}; read errors: "
            f"{sum(run.errors for run in (*idle, *loaded))}; requests sent >5 ms late: {late}",
        ]
        self._ratio("P7", loaded_p99, idle_p99, notes)

    def orders_goal(self) -> None:
        plan = self.plan
        say(
            f"P4: raw aio-pika publish+consume ({plan.raw_seconds:g} s) and {plan.orders} "
            f"orders ({plan.order_concurrency} at a time) until confirmed, paid and notified"
        )
        accounts = [
            http_bench.register(self.bench.gateway, label=f"bench-orders{rep}")
            for rep in range(plan.reps)
        ]
        time.sleep(1.0)  # the registrations reach notifications' projection too
        dsns = {
            name: self.bench.database_url(name).replace("postgresql+asyncpg", "postgresql")
            for name in ("orders", "payments", "notifications")
        }
        raws, runs = pipeline.measure(
            amqp_url=AMQP,
            raw_queue=f"{self.bench.namespace}.bench.raw",
            gateway=self.bench.gateway,
            accounts=accounts,
            dsns=dsns,
            raw_seconds=plan.raw_seconds,
            orders=plan.orders,
            concurrency=plan.order_concurrency,
        )
        self.charts.throughput["raw aio-pika publish+consume"] = (
            Spread.of([r.rate for r in raws]),
            "msgs/s",
        )
        self.charts.throughput["completed orders"] = (
            Spread.of([r.rate for r in runs]),
            "orders/s",
        )
        notes = [
            "raw: persistent messages, confirms awaited 100 at a time, quorum queue, prefetch 32, "
            "one publisher and one consumer connection in the bench process",
            f"orders: {plan.orders} POST /orders via the gateway, {plan.order_concurrency} at a "
            "time; done when order confirmed, payment succeeded and email recorded",
        ]
        self._ratio("P4", [r.rate for r in runs], [r.rate for r in raws], notes)

    def stop_system(self) -> None:
        if self.system is not None:
            say("stopping the system")
            self.processes.stop(self.system, grace=60)
            self.system = None
        for running in list(self.processes.running):
            self.processes.stop(running)

    # --- harnesses ----------------------------------------------------------------------------

    def outbox_goal(self) -> None:
        plan = self.plan
        say(
            f"P5: outbox commit → handler start at {plan.outbox_rate:g} events/s "
            f"({plan.outbox_seconds:g} s per run)"
        )
        runs = uvloop.run(
            outbox_latency.measure(
                database_url=self.bench.database_url("outbox_latency"),
                amqp_url=AMQP,
                exchange=f"{self.bench.namespace}.bench-outbox.events",
                reps=self.plan.reps,
                rate=plan.outbox_rate,
                seconds=plan.outbox_seconds,
            )
        )
        measure, goal, unit = GOALS["P5"]
        self.charts.latency_ms["P5 outbox commit → handler"] = median_percentiles(
            [{p: run.at(float(p[1:])) for p in PERCENTILES} for run in runs]
        )
        self.results["P5"] = absolute_result(
            id="P5",
            measure=measure,
            goal=goal,
            unit=unit,
            values={"p50": [r.at(50) for r in runs], "p99": [r.at(99) for r in runs]},
            notes=[
                f"{int(plan.outbox_rate * plan.outbox_seconds)} events per run, one transaction "
                "each; producer + relay in one process, consumer (inbox) in another",
                f"events never seen: {sum(r.lost for r in runs)}; commits started >5 ms late: "
                f"{sum(r.late_commits for r in runs)}",
            ],
        )

    def payments_goal(self) -> None:
        plan = self.plan
        say(
            f"P6: one payments-gateway instance, provider latency "
            f"{payments_bench.PROVIDER_LATENCY_MS} ms, {plan.payments} order.created events "
            f"per run ({payments_bench.describe()})"
        )
        exchange, _ = payments_bench.start(self.bench, self.processes)
        runs = payments_bench.measure(AMQP, exchange, reps=plan.reps, payments=plan.payments)
        measure, goal, unit = GOALS["P6"]
        rates = [r.rate for r in runs]
        self.charts.throughput["payments, provider 200 ms"] = (Spread.of(rates), "payments/s")
        self.results["P6"] = absolute_result(
            id="P6",
            measure=measure,
            goal=goal,
            unit=unit,
            values={"payments/s": rates},
            notes=[
                f"settings: {payments_bench.describe()}",
                "order.created published straight to the exchange; counted on payment.succeeded",
            ],
        )

    # --- the whole run ------------------------------------------------------------------------

    def run(self) -> None:
        needs_system = self.wanted("P1", "P2", "P3", "P4", "P7")
        if needs_system:
            self.start_system()
            reader = http_bench.register(self.bench.gateway, label="bench-reader")
            # Several accounts: the per-email login throttle counts logins still in flight.
            login_emails = [
                http_bench.register(self.bench.gateway, label=f"bench-login{i}").email
                for i in range(LOGIN_ACCOUNTS)
            ]
            if self.wanted("P1", "P2", "P3"):
                self.attempt(["P1", "P2", "P3"], lambda: self.http_goals(reader))
            if self.wanted("P7"):
                reader = http_bench.refreshed(self.bench.gateway, reader)
                self.attempt(["P7"], lambda: self.latency_goal(reader, login_emails))
            if self.wanted("P4"):
                self.attempt(["P4"], self.orders_goal)
            self.stop_system()
        if self.wanted("P5"):
            self.attempt(["P5"], self.outbox_goal)
        if self.wanted("P6"):
            self.attempt(["P6"], self.payments_goal)
            self.stop_system()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement (>= 3)")
    parser.add_argument("--only", default="", help="comma-separated goal ids, e.g. P1,P3")
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the processes' logs (.run/bench-<timestamp>/) even when every measurement ran",
    )
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    only = {part.strip().upper() for part in args.only.split(",") if part.strip()} or set(GOALS)
    unknown = only - set(GOALS)
    if unknown:
        parser.error(f"unknown goal ids: {sorted(unknown)}")
    plan = Plan.quick(args.reps) if args.quick else Plan(reps=args.reps)

    stamp = now_stamp()
    started = time.monotonic()
    load = os.getloadavg()
    say(
        f"bench {stamp}: {len(only)} goals, {plan.reps} runs each; {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} (a shared machine: expect noise)"
    )
    ensure_wrk()
    run_dir = REPO / ".run" / f"bench-{stamp}"
    bench = Bench.create(run_dir, extra_env=SYSTEM_ENV)
    # Ctrl-C raises KeyboardInterrupt even where the shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    session: Session | None = None
    interrupted = False
    try:
        with Processes(run_dir / "logs") as processes:
            session = Session(bench, processes, plan, only)
            session.run()
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        say("interrupted: stopping everything the bench started")
    finally:
        say("cleaning up the bench's databases and queues")
        bench.cleanup()
    if interrupted or session is None:
        say(f"logs: {run_dir.relative_to(REPO)}")
        return 130

    results = [session.results[i] for i in GOALS if i in session.results]
    path = write_results(results, directory=RESULTS_DIR, stamp=stamp)
    end_load = os.getloadavg()
    title = (
        f"make bench {stamp} — {platform.node()}, {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} → {end_load[0]:.1f}; medians of {plan.reps} runs"
    )
    image = plot(session.charts, RESULTS_DIR / f"{stamp}.png", title=title)
    print()
    print(format_table(results))
    print()
    print(
        f"medians of {plan.reps} runs (lowest–highest run in brackets); ratios are the median of "
        "per-run ratios, both sides measured back to back in each run"
    )
    limits = " ".join(f"{key}={value}" for key, value in GATEWAY_LIMITS.items())
    print(f"gateway rate limit raised for this run (it stays on): {limits}")
    print(f"load average {load[0]:.2f} at the start, {end_load[0]:.2f} at the end")
    print(f"results: {path.relative_to(REPO)} (and latest.json), plot: {image.relative_to(REPO)}")
    print(f"took {time.monotonic() - started:.0f} s")
    if args.keep_logs or any(result.error for result in results):
        print(f"logs of every process: {run_dir.relative_to(REPO)}")
    else:
        # Tens of megabytes of request logs per run; nothing failed, so nothing to look into.
        shutil.rmtree(run_dir, ignore_errors=True)
    if os.environ.get("BENCH_MARKDOWN"):
        print()
        print(format_markdown(results))
    return 0
