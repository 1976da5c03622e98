"""Scaled services: the gateway spreads requests, consumers compete, a killed replica loses no
order and a stopped one drains. Runs on the system the session started with SCALE replicas."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid

import httpx
from support import SCALE, System, docker
from test_flows import ORDER

from servicekit.testing.waiting import wait_until_sync

PORTS = {"orders": 8003, "payments-gateway": 8004}
# The gateway limits each client to 20 requests a second (burst 40): stay below it.
PACE = 0.07


def replicas(system: System, service: str) -> list[str]:
    found = system.containers(service)
    assert len(found) == SCALE[service], found
    return found


def place_orders(system: System, count: int, *, during: threading.Event | None = None) -> list[str]:
    """Place `count` orders, each under its own Idempotency-Key, retried until it is answered.

    A client that sees no answer (a replica died mid-request, 502/503/504) sends the same key
    again, as SYSTEM.md asks of clients: a retry never makes a second order."""
    placed: list[str] = []
    with system.client() as client:
        for index in range(count):
            if during is not None and index == count // 3:
                during.set()
            key = str(uuid.uuid4())
            headers = {**system.auth_headers(), "Idempotency-Key": key}
            deadline = time.monotonic() + 120
            while True:
                try:
                    response = client.post("/orders", json=ORDER, headers=headers)
                    if response.status_code in (200, 201):
                        placed.append(response.json()["id"])
                        break
                    assert response.status_code in (429, 502, 503, 504), response.text
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"order {key} was never accepted"
                time.sleep(0.5)
            time.sleep(PACE)
    return placed


def assert_confirmed_and_charged_once(system: System, order_ids: list[str]) -> None:
    assert len(set(order_ids)) == len(order_ids)
    with system.client() as client:

        def all_confirmed() -> bool:
            return all(
                client.get(f"/orders/{order_id}", headers=system.auth_headers()).json()["status"]
                == "confirmed"
                for order_id in order_ids
            )

        wait_until_sync(all_confirmed, timeout=180, interval=2, what="every order to be confirmed")
    ledger = system.ledger()
    for order_id in order_ids:
        charges = [e for e in ledger if e.get("type") == "charge" and order_id in str(e)]
        assert len(charges) == 1, (order_id, charges)


def count_in_logs(system: System, containers: list[str], needle: str) -> dict[str, int]:
    return {container[:12]: system.logs(container).count(needle) for container in containers}


def test_gateway_spreads_requests_over_every_replica(system: System) -> None:
    paths = {"orders": "/orders?limit=1", "payments-gateway": "/payments?limit=1"}
    with system.client() as client:
        for service, path in paths.items():
            prefix = f"spread-{uuid.uuid4().hex[:12]}"
            sent = 12 * SCALE[service]
            for index in range(sent):
                headers = {**system.auth_headers(), "X-Request-ID": f"{prefix}-{index}"}
                response = client.get(path, headers=headers)
                assert response.status_code == 200, response.text
                time.sleep(PACE)
            # Each request id appears in its replica's access log (and other lines of it).
            seen = {
                container[:12]: set(re.findall(rf"{prefix}-\d+", system.logs(container)))
                for container in replicas(system, service)
            }
            counts = {container: len(ids) for container, ids in seen.items()}
            print(service, "requests per replica:", counts)
            assert sum(counts.values()) == sent, counts
            assert set().union(*seen.values()) == {f"{prefix}-{i}" for i in range(sent)}
            assert all(count > 0 for count in counts.values()), counts


def test_consumers_compete_and_no_order_is_charged_twice(system: System) -> None:
    consumers = {service: replicas(system, service) for service in ("orders", "payments-gateway")}
    before = {s: count_in_logs(system, c, "event.handled") for s, c in consumers.items()}
    order_ids = place_orders(system, 20)
    assert_confirmed_and_charged_once(system, order_ids)
    for service, containers in consumers.items():
        after = count_in_logs(system, containers, "event.handled")
        handled = {c: after[c] - before[service][c] for c in after}
        print(service, "events handled per replica:", handled)
        assert sum(1 for n in handled.values() if n > 0) >= 2, (service, handled)


def test_killing_a_replica_under_load_loses_no_order(system: System) -> None:
    victims = [replicas(system, "orders")[0], replicas(system, "payments-gateway")[0]]
    loaded = threading.Event()
    placed: list[str] = []
    load = threading.Thread(target=lambda: placed.extend(place_orders(system, 30, during=loaded)))
    load.start()
    assert loaded.wait(timeout=120)
    for victim in victims:
        docker("kill", victim)
    load.join(timeout=600)
    assert not load.is_alive()
    assert len(placed) == 30
    assert_confirmed_and_charged_once(system, placed)
    # A killed container stays down (Docker restarts only what exits on its own): start the
    # replicas again for the tests that follow.
    for victim in victims:
        docker("start", victim)
    for victim in victims:
        wait_until_sync(
            lambda victim=victim: (
                system.inspect(victim)["State"].get("Health", {}).get("Status") == "healthy"
            ),
            timeout=300,
            interval=2,
            what=f"{victim[:12]} to be healthy again",
        )


SLOW_CLIENT = """
import socket, sys, time
port, body = int(sys.argv[1]), sys.argv[2].encode()
sock = socket.create_connection(("127.0.0.1", port))
sock.sendall(
    b"POST /orders HTTP/1.1\\r\\nHost: orders\\r\\nContent-Type: application/json\\r\\n"
    + b"Authorization: Bearer " + sys.argv[3].encode() + b"\\r\\n"
    + b"Idempotency-Key: " + sys.argv[4].encode() + b"\\r\\n"
    + b"Content-Length: " + str(len(body)).encode() + b"\\r\\nConnection: close\\r\\n\\r\\n"
    + body[:10]
)
print("sent", flush=True)
sys.stdin.readline()
# The server is draining once it refuses new connections; only then send the rest.
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        break
    time.sleep(0.1)
print("refused", flush=True)
sock.sendall(body[10:])
answer = b""
while chunk := sock.recv(65536):
    answer += chunk
print(answer.split(b"\\r\\n", 1)[0].decode(), flush=True)
"""


def test_stop_drains_a_replica_with_a_request_in_flight(system: System) -> None:

    target = replicas(system, "orders")[-1]
    image = system.inspect(target)["Config"]["Image"]
    grace = 30  # stop_grace_period in docker-compose.yml
    key = str(uuid.uuid4())
    # A client in the replica's network namespace (not its process tree, so it outlives it).
    client = subprocess.Popen(
        ["docker", "run", "--rm", "-i", f"--network=container:{target}", image, "python", "-c",
         SLOW_CLIENT, str(PORTS["orders"]), json.dumps(ORDER), system.user["access_token"], key],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdout is not None
    assert client.stdin is not None
    assert client.stdout.readline().strip() == "sent"

    stopped: dict[str, float] = {}

    def stop() -> None:
        began = time.monotonic()
        docker("stop", "-t", str(grace), target, timeout=grace + 30)
        stopped["seconds"] = time.monotonic() - began

    stopper = threading.Thread(target=stop)
    stopper.start()
    client.stdin.write("stopping\n")
    client.stdin.flush()
    assert client.stdout.readline().strip() == "refused"
    status_line = client.stdout.readline().strip()
    client.wait(timeout=60)
    stopper.join(timeout=grace + 60)
    state = system.inspect(target)["State"]
    print("drained in", round(stopped["seconds"], 2), "s; in-flight answer:", status_line)
    assert status_line.startswith("HTTP/1.1 201"), status_line
    assert state["ExitCode"] == 0, state
    assert stopped["seconds"] < grace
    docker("start", target)
    wait_until_sync(
        lambda: system.inspect(target)["State"].get("Health", {}).get("Status") == "healthy",
        timeout=300,
        interval=2,
        what="the stopped replica to be healthy again",
    )
