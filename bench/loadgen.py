"""Load generators: wrk for closed-loop throughput, an open-loop asyncio client for latency.

Throughput (P1-P3) is measured with wrk, Debian's C load generator, so the client costs little
of the two cores; the bench installs it with apt-get when it is missing, as the launcher does for
nginx. Latency at a fixed rate (P7) uses an open-loop generator: request *i* is due at
``start + i / rate`` whatever happened to the earlier ones, and its latency is counted from
when it was due, not from when it was sent, so a stall shows up in every request it delays
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.procs import say
from bench.stats import percentile

PERCENTILES = ("p50", "p90", "p99", "p99.9")

_WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK {"requests": %d, "duration_us": %d, "status": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "p50": %d, "p90": %d, "p99": %d, "p99.9": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


class LoadError(RuntimeError):
    """The load generator could not run or the target answered with errors."""


def find_wrk() -> str | None:
    """The wrk binary, if installed."""
    return shutil.which("wrk", path=f"{os.environ.get('PATH', '')}:/usr/bin:/usr/local/bin")


def ensure_wrk() -> str:
    """Path of wrk; installs Debian's package when running as root, else says how."""
    found = find_wrk()
    if found:
        return found
    can_install = (
        os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get")
    )
    if not can_install:
        raise LoadError(
            "wrk (the load generator) is not installed: `sudo apt-get install wrk` (Debian/"
            "Ubuntu), `brew install wrk` (macOS)"
        )
    say("wrk (the load generator) is missing: installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
        done = subprocess.run(  # noqa: S603 - fixed apt-get commands
            step, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            output = f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            raise LoadError(f"{' '.join(step)} failed:\n{output}")
    found = find_wrk()
    if not found:
        raise LoadError("apt-get installed wrk but it is not on the PATH")
    return found


@dataclass(frozen=True)
class WrkRun:
    """One wrk run: requests per second and latency percentiles (ms)."""

    requests: int
    seconds: float
    errors: int
    latency_ms: Mapping[str, float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def parse_wrk(output: str) -> WrkRun:
    """Read the line the report script prints."""
    for line in output.splitlines():
        if line.startswith("BENCH_WRK "):
            data = json.loads(line.removeprefix("BENCH_WRK "))
            errors = sum(data[k] for k in ("status", "connect", "read", "write", "timeout"))
            return WrkRun(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors=int(errors),
                latency_ms={p: data[p] / 1000 for p in PERCENTILES},
            )
    raise LoadError(f"wrk printed no report:\n{output[-2000:]}")


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body: str | None = None,
    max_error_share: float = 0.001,
) -> WrkRun:
    """Run wrk against ``url``; fails if more than ``max_error_share`` of requests failed."""
    binary = ensure_wrk()
    script = _WRK_REPORT
    if method != "GET" or body is not None:
        script = f"wrk.method = {json.dumps(method)}\n" + script
    if body is not None:
        script = f"wrk.body = {_lua_string(body)}\n" + script
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = handle.name
    command = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        script_path,
    ]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    try:
        done = subprocess.run(  # noqa: S603 - wrk with the bench's own arguments
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    finally:
        os.unlink(script_path)
    if done.returncode != 0:
        raise LoadError(f"wrk exited with {done.returncode}: {done.stderr[-2000:]}")
    run = parse_wrk(done.stdout)
    if run.requests == 0 or run.errors > max_error_share * run.requests:
        raise LoadError(
            f"{url}: {run.errors} of {run.requests} requests failed (non-2xx or socket errors)"
        )
    return run


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


class RawHttp:
    """A minimal HTTP/1.1 client on kept-alive connections, for the open-loop generator.

    A general client costs the generator a millisecond of CPU per request on a busy machine,
    which would show up in the latencies it measures; this one parses a status line, headers
    and a Content-Length (or chunked) body, and nothing else.
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"an http:// URL is needed, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open: set[asyncio.StreamWriter] = set()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> int:
        """Send one request; returns the status code (the body is read and dropped)."""
        body = json.dumps(json_body).encode() if json_body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if json_body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._open.add(writer)
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(payload)
                status, keep = await self._response(reader)
        except BaseException:
            self._discard(writer)
            raise
        if keep:
            self._idle.append((reader, writer))
        else:
            self._discard(writer)
        return status

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        keep = True
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep = b"close" not in value.lower()
        if chunked:
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readline()
        elif length:
            await reader.readexactly(length)
        return status, keep

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        writer.close()

    async def close(self) -> None:
        """Close every connection."""
        for writer in list(self._open):
            self._discard(writer)
        self._idle.clear()


@dataclass(frozen=True)
class OpenLoopRun:
    """Latencies (ms, from when each request was due) of a fixed-rate run."""

    latencies_ms: tuple[float, ...]
    errors: int
    rate: float
    late_starts: int  # requests sent more than 5 ms after they were due (generator overloaded)
    statuses: Mapping[int, int]

    def percentiles(self) -> dict[str, float]:
        return {p: percentile(self.latencies_ms, float(p[1:])) for p in PERCENTILES}


async def open_loop(
    client: RawHttp,
    method: str,
    path: str,
    *,
    rate: float,
    seconds: float,
    headers: Sequence[Mapping[str, str]] = ({},),
    json_bodies: Sequence[Any] = (None,),
    expect: int = 200,
) -> OpenLoopRun:
    """Send ``rate`` requests per second for ``seconds``, each on schedule (open loop).

    Request *i* uses ``headers[i % len]`` and ``json_bodies[i % len]`` (several accounts).
    """
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    start = loop.time() + 0.05
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    late = 0

    async def one(index: int, due: float) -> None:
        nonlocal late
        if loop.time() - due > 0.005:
            late += 1
        try:
            status = await client.request(
                method,
                path,
                headers=headers[index % len(headers)],
                json_body=json_bodies[index % len(json_bodies)],
            )
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            status = 0
        statuses[status] = statuses.get(status, 0) + 1
        if status == expect:
            latencies.append((loop.time() - due) * 1000)

    tasks: list[asyncio.Task[None]] = []
    for index in range(total):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    if not latencies:
        raise LoadError(f"{method} {path}: no request succeeded (statuses {statuses})")
    errors = total - len(latencies)
    return OpenLoopRun(tuple(latencies), errors, rate, late, statuses)


def now_stamp() -> str:
    """A timestamp for file names (UTC, sortable)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
