"""Broker address lists and the connection that moves to the next address when it loses one."""

from __future__ import annotations

import asyncio

import pytest

from servicekit.amqp import FailoverConnection, broker_urls, connect_failover, redact
from servicekit.testing.rabbitnodes import free_port

NODES = [f"amqp://shop:s3cret@rabbit-{i}:5672/shop" for i in range(3)]


class TestBrokerUrls:
    def test_one_url_is_a_list_of_one(self) -> None:
        assert broker_urls("amqp://guest:guest@127.0.0.1:5672/") == [
            "amqp://guest:guest@127.0.0.1:5672/"
        ]

    def test_a_comma_separated_list_keeps_its_order_and_drops_blanks(self) -> None:
        assert broker_urls(" , ".join(NODES) + ",") == NODES

    def test_a_sequence_is_taken_as_is(self) -> None:
        assert broker_urls(NODES) == NODES

    @pytest.mark.parametrize(
        "value", ["", " , ", "rabbit-0:5672", "http://rabbit-0/", "amqp:///shop"]
    )
    def test_what_is_no_list_of_broker_urls_is_refused(self, value: str) -> None:
        with pytest.raises(ValueError):
            broker_urls(value)

    def test_the_refusal_does_not_repeat_the_password(self) -> None:
        with pytest.raises(ValueError) as refused:
            broker_urls("amqp://shop:s3cret@rabbit-0/,http://shop:s3cret@rabbit-1/")
        assert "s3cret" not in str(refused.value)
        assert redact(NODES[0]) == "amqp://shop:******@rabbit-0:5672/shop"


def _closing(error: BaseException) -> asyncio.Future[None]:
    closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    closing.set_exception(error)
    return closing


class TestFailoverConnection:
    async def test_each_lost_connection_or_failed_attempt_moves_to_the_next_node(self) -> None:
        connection = FailoverConnection(NODES, start=1)
        assert connection.url.host == "rabbit-1"
        seen = []
        for _ in range(4):
            await connection._on_connection_close(_closing(ConnectionResetError()))
            seen.append(connection.url.host)
        assert seen == ["rabbit-2", "rabbit-0", "rabbit-1", "rabbit-2"]
        await connection.close()

    async def test_a_close_the_application_asked_for_stays_where_it_is(self) -> None:
        connection = FailoverConnection(NODES)
        await connection.close()
        await connection._on_connection_close(_closing(ConnectionResetError()))
        assert connection.url.host == "rabbit-0"

    async def test_one_address_is_plain_robust_reconnection(self) -> None:
        connection = FailoverConnection(NODES[:1])
        await connection._on_connection_close(_closing(ConnectionResetError()))
        assert connection.url.host == "rabbit-0"
        await connection.close()

    async def test_when_no_address_answers_the_last_error_is_raised(self) -> None:
        nobody = [f"amqp://guest:guest@127.0.0.1:{free_port()}/" for _ in range(2)]
        with pytest.raises(ConnectionError):
            await connect_failover(nobody, timeout=5)
