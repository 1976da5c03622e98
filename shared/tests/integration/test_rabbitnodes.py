"""The throwaway RabbitMQ nodes that broker-fault tests run against, alone and clustered."""

from __future__ import annotations

import aio_pika
import pytest

from servicekit.testing.rabbitnodes import RabbitCluster, rabbit_node


async def _roundtrip(url: str, queue_name: str) -> bytes:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await channel.default_exchange.publish(
            aio_pika.Message(b"kept", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue_name,
        )
        message = await queue.get(timeout=10, fail=True)
        assert message is not None
        await message.ack()
        return message.body


class TestRabbitNode:
    async def test_a_node_serves_amqp_and_survives_an_app_restart(self) -> None:
        with rabbit_node() as node:
            assert await _roundtrip(node.url, "before") == b"kept"
            node.stop_app()
            node.start_app()
            assert await _roundtrip(node.url, "after") == b"kept"
        assert not node.running
        assert not node.base.exists()

    async def test_a_killed_node_is_gone_and_starts_again(self) -> None:
        with rabbit_node() as node:
            node.kill()
            assert not node.running
            node.start()
            assert await _roundtrip(node.url, "again") == b"kept"


class TestRabbitCluster:
    @pytest.mark.timeout(300)
    async def test_three_nodes_form_one_cluster(self) -> None:
        with RabbitCluster.started(size=3) as cluster:
            assert cluster.running_nodes() == sorted(n.nodename for n in cluster.nodes)
            for url in cluster.urls:
                assert await _roundtrip(url, f"q{url[-6:-1]}") == b"kept"
