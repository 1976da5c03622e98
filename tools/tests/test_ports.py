"""svctools.ports: a block of ports that can all be bound, instances included."""

from __future__ import annotations

import socket

import pytest

from svctools.ports import EPHEMERAL_START, every_port, is_free, pick_block


def test_a_block_is_consecutive_and_every_port_of_it_is_free() -> None:
    names = ["GATEWAY", "AUTH", "USERS", "ORDERS"]
    ports = pick_block(names, instances={"ORDERS": 3})

    assert list(ports) == names
    assert [ports[n] - ports["GATEWAY"] for n in names] == [0, 1, 2, 3]
    every = every_port(ports, {"ORDERS": 3})
    assert ports["ORDERS"] + 200 in every
    assert len(every) == 6
    assert all(is_free(port) for port in every)
    assert max(every) < EPHEMERAL_START


def test_a_port_bound_on_loopback_is_not_free() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        assert not is_free(held.getsockname()[1])


def test_a_range_reaching_the_ephemeral_ports_is_refused() -> None:
    with pytest.raises(ValueError, match="ephemeral"):
        pick_block(["A"], instances={"A": 3}, low=32000, high=32700)
