"""The SMTP sink, receiving real SMTP over loopback on ephemeral ports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from svctools.smtp_sink import SmtpSink, read_messages


def multipart_message(
    *, to: str = "Alice Example <alice@example.com>", subject: str = "Your order is confirmed"
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Shop <no-reply@shop.example>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="shop.example")
    message.set_content("Order 42 is confirmed.\nTotal: 21.00 USD\n")
    message.add_alternative(
        "<p>Order <b>42</b> is confirmed.</p><p>Total: 21.00 USD</p>\n", subtype="html"
    )
    return message


async def send(
    sink: SmtpSink,
    message: EmailMessage,
    *,
    sender: str | None = None,
    recipients: list[str] | None = None,
) -> None:
    await aiosmtplib.send(
        message,
        sender=sender,
        recipients=recipients,
        hostname="127.0.0.1",
        port=sink.port,
        timeout=10,
    )


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    async with SmtpSink(port=0, maildir=tmp_path / "mail", http_port=0) as running:
        yield running


@pytest.fixture
async def sink_api(sink: SmtpSink) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sink.http_port}") as client:
        yield client


class TestReceiving:
    async def test_a_multipart_message_is_stored_and_read_back(self, sink: SmtpSink) -> None:
        message = multipart_message()

        await send(
            sink,
            message,
            sender="bounces@shop.example",
            recipients=["alice@example.com", "audit@shop.example"],
        )

        [received] = read_messages(sink.maildir)
        assert received.mail_from == "bounces@shop.example"
        assert received.rcpt_tos == ["alice@example.com", "audit@shop.example"]
        assert received.to == ["alice@example.com"]
        assert received.subject == "Your order is confirmed"
        assert received.message_id == message["Message-ID"]
        assert received.text == "Order 42 is confirmed.\nTotal: 21.00 USD\n"
        assert received.html == "<p>Order <b>42</b> is confirmed.</p><p>Total: 21.00 USD</p>\n"
        assert abs(datetime.now(UTC) - received.received_at) < timedelta(seconds=30)

    async def test_the_raw_message_and_its_envelope_are_kept_on_disk(self, sink: SmtpSink) -> None:
        await send(sink, multipart_message())

        [received] = read_messages(sink.maildir)
        names = sorted(path.name for path in sink.maildir.iterdir())
        assert names == [f"{received.id}.eml", f"{received.id}.json"]
        raw = (sink.maildir / f"{received.id}.eml").read_bytes()
        assert b"Subject: Your order is confirmed" in raw
        assert b"Content-Type: multipart/alternative" in raw

    async def test_non_ascii_subjects_and_bodies_survive(self, sink: SmtpSink) -> None:
        message = EmailMessage()
        message["From"] = "shop@example.com"
        message["To"] = "zoë@example.com"
        message["Subject"] = "Bestätigung: Ihre Bestellung"
        message.set_content("Grüße — 21,00 €\n")

        await send(sink, message)

        [received] = read_messages(sink.maildir)
        assert received.subject == "Bestätigung: Ihre Bestellung"
        assert received.text == "Grüße — 21,00 €\n"
        assert received.html is None

    async def test_messages_are_listed_oldest_first(self, sink: SmtpSink) -> None:
        for number in range(3):
            await send(sink, multipart_message(subject=f"message {number}"))

        subjects = [message.subject for message in read_messages(sink.maildir)]

        assert subjects == ["message 0", "message 1", "message 2"]

    async def test_concurrent_clients_each_get_their_message_stored(self, sink: SmtpSink) -> None:
        await asyncio.gather(
            *(send(sink, multipart_message(subject=f"parallel {n}")) for n in range(10))
        )

        subjects = {message.subject for message in read_messages(sink.maildir)}

        assert subjects == {f"parallel {n}" for n in range(10)}

    def test_a_missing_maildir_reads_as_empty(self, tmp_path: Path) -> None:
        assert read_messages(tmp_path / "never-created") == []


class TestHttpApi:
    async def test_messages_are_listed_as_json(
        self, sink: SmtpSink, sink_api: httpx.AsyncClient
    ) -> None:
        await send(sink, multipart_message())

        response = await sink_api.get("/messages")

        assert response.status_code == 200
        [listed] = response.json()
        [received] = read_messages(sink.maildir)
        assert listed["id"] == received.id
        assert listed["subject"] == "Your order is confirmed"
        assert listed["to"] == ["alice@example.com"]
        assert listed["rcpt_tos"] == ["alice@example.com"]
        assert listed["mail_from"] == "no-reply@shop.example"
        assert listed["text"] == received.text
        assert listed["html"] == received.html
        assert listed["received_at"].endswith("Z")

    async def test_delete_clears_every_message(
        self, sink: SmtpSink, sink_api: httpx.AsyncClient
    ) -> None:
        await send(sink, multipart_message())
        await send(sink, multipart_message())

        response = await sink_api.delete("/messages")

        assert response.status_code == 204
        assert read_messages(sink.maildir) == []
        assert (await sink_api.get("/messages")).json() == []
        assert list(sink.maildir.iterdir()) == []

    async def test_health(self, sink_api: httpx.AsyncClient) -> None:
        assert (await sink_api.get("/healthz")).status_code == 200


class TestRejectMode:
    async def test_rejecting_gives_the_client_a_transient_451(self, sink: SmtpSink) -> None:
        sink.reject = True

        with pytest.raises(aiosmtplib.SMTPResponseException) as raised:
            await send(sink, multipart_message())

        assert raised.value.code == 451
        assert "temporarily unavailable" in raised.value.message
        assert read_messages(sink.maildir) == []

    async def test_the_fault_switch_over_http_rejects_then_restores(
        self, sink: SmtpSink, sink_api: httpx.AsyncClient
    ) -> None:
        switched_on = await sink_api.put("/__admin/faults", json={"reject": True})
        with pytest.raises(aiosmtplib.SMTPDataError) as raised:
            await send(sink, multipart_message(subject="refused"))
        state = (await sink_api.get("/__admin/faults")).json()
        switched_off = await sink_api.put("/__admin/faults", json={"reject": False})
        await send(sink, multipart_message(subject="accepted"))

        assert switched_on.json() == {"reject": True}
        assert raised.value.code == 451
        assert state == {"reject": True}
        assert switched_off.json() == {"reject": False}
        assert [message.subject for message in read_messages(sink.maildir)] == ["accepted"]


class TestLifecycle:
    async def test_stop_frees_both_ports_even_with_a_client_connected(self, tmp_path: Path) -> None:
        first = SmtpSink(port=0, maildir=tmp_path / "mail", http_port=0)
        await first.start()
        idle_client = aiosmtplib.SMTP(hostname="127.0.0.1", port=first.port, timeout=10)
        await idle_client.connect()

        async with asyncio.timeout(5):
            await first.stop()

        second = SmtpSink(port=first.port, maildir=tmp_path / "mail", http_port=first.http_port)
        async with second:
            await send(second, multipart_message())
            async with httpx.AsyncClient() as client:
                listed = await client.get(f"http://127.0.0.1:{second.http_port}/messages")
        assert second.port == first.port
        assert len(listed.json()) == 1
        idle_client.close()

    async def test_a_taken_port_fails_start_loudly(self, sink: SmtpSink, tmp_path: Path) -> None:
        clash = SmtpSink(port=sink.port, maildir=tmp_path / "other")

        with pytest.raises(OSError):
            await clash.start()


class TestCommandLine:
    async def test_python_dash_m_receives_mail_and_stops_cleanly_on_sigterm(
        self, tmp_path: Path, free_port: Callable[[], int]
    ) -> None:
        smtp_port, http_port = free_port(), free_port()
        maildir = tmp_path / "mail"
        env = os.environ | {
            "SMTP_SINK_HOST": "127.0.0.1",
            "SMTP_SINK_PORT": str(smtp_port),
            "SMTP_SINK_HTTP_PORT": str(http_port),
            "SMTP_SINK_MAILDIR": str(maildir),
            "SMTP_SINK_LOG_LEVEL": "warning",
        }
        process = subprocess.Popen([sys.executable, "-m", "svctools.smtp_sink"], env=env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
                async with asyncio.timeout(20):
                    while True:
                        try:
                            await client.get("/healthz")
                            break
                        except httpx.TransportError:
                            await asyncio.sleep(0.1)
            await aiosmtplib.send(
                multipart_message(), hostname="127.0.0.1", port=smtp_port, timeout=10
            )
        finally:
            process.send_signal(signal.SIGTERM)
            return_code = await asyncio.to_thread(process.wait, 20)

        assert return_code == 0
        assert [message.subject for message in read_messages(maildir)] == [
            "Your order is confirmed"
        ]
