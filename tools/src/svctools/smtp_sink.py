"""A local SMTP sink for development and tests: accepts every message, relays none.

Messages are kept in a directory (the "maildir") so that tests and other processes can read
them without talking to the sink. Each message is two files sharing a name
``<received_ns>-<uuid hex>``:

- ``<name>.eml``  the raw RFC 5322 bytes exactly as received after ``DATA``;
- ``<name>.json`` the SMTP envelope: ``{"mail_from", "rcpt_tos", "received_at"}``.

Both are written under a hidden temporary name and renamed into place, the envelope first,
so a visible ``.eml`` is always complete and has its envelope. ``read_messages(maildir)``
parses them, oldest first.

An optional HTTP API (``http_port``) serves ``GET /messages``, ``DELETE /messages``,
``GET|PUT /__admin/faults`` (``{"reject": true}`` makes the SMTP server answer
``451 4.3.0 temporarily unavailable`` at the end of ``DATA``, a transient failure for the
client; ``false`` restores) and ``GET /healthz``. The same switch is ``SmtpSink.reject``.

Run it with ``python -m svctools.smtp_sink`` (``--help`` lists the options and their
``SMTP_SINK_*`` environment variables).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.message
import email.policy
import email.utils
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict

log = logging.getLogger("svctools.smtp_sink")

REJECT_REPLY = "451 4.3.0 temporarily unavailable"
_HOSTNAME = "smtp-sink.localhost"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message as the sink received it."""

    id: str
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    to: list[str]
    message_id: str | None
    text: str | None
    html: str | None
    received_at: datetime

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``received_at`` as RFC 3339 UTC)."""
        return {
            "id": self.id,
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "subject": self.subject,
            "to": list(self.to),
            "message_id": self.message_id,
            "text": self.text,
            "html": self.html,
            "received_at": self.received_at.isoformat().replace("+00:00", "Z"),
        }


def read_messages(maildir: Path) -> list[ReceivedMessage]:
    """Every message stored in ``maildir``, oldest first (none if it does not exist)."""
    if not maildir.is_dir():
        return []
    messages = []
    for path in sorted(maildir.glob("*.eml"), key=_arrival_order):
        try:
            messages.append(_read_message(path))
        except FileNotFoundError:
            continue  # cleared while we were reading
    return messages


def clear_messages(maildir: Path) -> None:
    """Delete every stored message."""
    if not maildir.is_dir():
        return
    for path in maildir.glob("*.eml"):
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)


def _arrival_order(path: Path) -> tuple[int, str]:
    received_ns, _, _ = path.stem.partition("-")
    if received_ns.isdigit():
        return int(received_ns), path.name
    return path.stat().st_mtime_ns, path.name


def _read_message(path: Path) -> ReceivedMessage:
    raw = path.read_bytes()
    envelope = _read_envelope(path.with_suffix(".json"))
    # SMTP carries CRLF line ends; Python's text convention is LF.
    parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    message_id = parsed.get("Message-ID")
    received_at = envelope.get("received_at")
    return ReceivedMessage(
        id=path.stem,
        mail_from=str(envelope.get("mail_from", "")),
        rcpt_tos=[str(rcpt) for rcpt in envelope.get("rcpt_tos", [])],
        subject=_utf8(str(parsed.get("Subject", ""))),
        to=[address for _, address in email.utils.getaddresses(_header_values(parsed, "To"))],
        message_id=str(message_id).strip() if message_id is not None else None,
        text=str(text_part.get_content()) if text_part is not None else None,
        html=str(html_part.get_content()) if html_part is not None else None,
        received_at=(
            datetime.fromisoformat(received_at)
            if isinstance(received_at, str)
            else datetime.fromtimestamp(_arrival_order(path)[0] / 1e9, UTC)
        ),
    )


def _header_values(message: email.message.Message, name: str) -> list[str]:
    return [_utf8(str(value)) for value in message.get_all(name, [])]


def _utf8(value: str) -> str:
    # Raw UTF-8 in a header (RFC 6532, sent with SMTPUTF8) comes out of the parser as
    # surrogate escapes.
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _read_envelope(path: Path) -> dict[str, Any]:
    try:
        envelope = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    return envelope if isinstance(envelope, dict) else {}


def _store(maildir: Path, *, mail_from: str, rcpt_tos: list[str], raw: bytes) -> str:
    received_ns = time.time_ns()
    name = f"{received_ns}-{uuid.uuid4().hex}"
    envelope = {
        "mail_from": mail_from,
        "rcpt_tos": rcpt_tos,
        "received_at": datetime.fromtimestamp(received_ns / 1e9, UTC).isoformat(),
    }
    _write_atomically(maildir / f"{name}.json", orjson.dumps(envelope))
    _write_atomically(maildir / f"{name}.eml", raw)
    return name


def _write_atomically(path: Path, data: bytes) -> None:
    # Readers glob for *.eml and *.json; the temporary name matches neither.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class _MaildirHandler:
    """aiosmtpd handler: store each message, or refuse it while rejecting."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(  # noqa: N802 - the name aiosmtpd looks up
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self._sink.reject:
            log.info("smtp_sink.rejected rcpt_tos=%s", envelope.rcpt_tos)
            return REJECT_REPLY
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        name = await asyncio.to_thread(
            _store,
            self._sink.maildir,
            mail_from=str(envelope.mail_from or ""),
            rcpt_tos=[str(rcpt) for rcpt in envelope.rcpt_tos],
            raw=raw,
        )
        log.info("smtp_sink.received id=%s rcpt_tos=%s", name, envelope.rcpt_tos)
        return f"250 2.0.0 OK: queued as {name}"


def _accept_any_credentials(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
) -> AuthResult:
    # Like Mailpit's "accept any": a client configured with credentials still gets through.
    return AuthResult(success=True)


class _SinkSMTP(SMTP):  # type: ignore[misc]
    """An SMTP session that its sink can close when it stops."""

    def __init__(self, handler: _MaildirHandler, sink: SmtpSink) -> None:
        super().__init__(
            handler,
            hostname=_HOSTNAME,
            ident="svctools SMTP sink",
            enable_SMTPUTF8=sink.smtputf8,
            auth_require_tls=False,
            authenticator=_accept_any_credentials,
        )
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sink._sessions.add(self)
        self._sink.connections += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink._sessions.discard(self)
        super().connection_lost(error)


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process hosting it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FaultSwitch(BaseModel):
    """Body of ``PUT /__admin/faults``."""

    model_config = ConfigDict(extra="forbid")

    reject: bool


def _http_app(sink: SmtpSink) -> FastAPI:
    app = FastAPI(title="SMTP sink", description="Mail received by the local SMTP sink.")

    @app.get("/messages")
    async def list_messages() -> list[dict[str, Any]]:
        """Every message received, oldest first."""
        messages = await asyncio.to_thread(read_messages, sink.maildir)
        return [message.to_json() for message in messages]

    @app.delete("/messages", status_code=204)
    async def delete_messages() -> Response:
        """Forget every message received."""
        await asyncio.to_thread(clear_messages, sink.maildir)
        return Response(status_code=204)

    @app.get("/__admin/faults")
    async def get_faults() -> FaultSwitch:
        """Whether the SMTP server is refusing mail."""
        return FaultSwitch(reject=sink.reject)

    @app.put("/__admin/faults")
    async def put_faults(switch: FaultSwitch) -> FaultSwitch:
        """Make the SMTP server refuse (451) or accept mail."""
        sink.reject = switch.reject
        log.info("smtp_sink.faults reject=%s", sink.reject)
        return FaultSwitch(reject=sink.reject)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Answers 200 while the sink runs."""
        return {"status": "ok"}

    return app


class SmtpSink:
    """An SMTP server on the running event loop that stores what it receives in ``maildir``.

    Port 0 (SMTP or HTTP) picks a free port; ``port`` and ``http_port`` hold the bound ports
    once ``start()`` returned. Set ``reject`` to answer 451 to every message.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1025,
        maildir: Path,
        http_port: int | None = None,
        smtputf8: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.maildir = maildir
        self.http_port = http_port
        # Whether it offers SMTPUTF8 (UTF-8 addresses), as most servers now do.
        self.smtputf8 = smtputf8
        self.reject = False
        self.connections = 0  # accepted since start, for tests of connection reuse
        self._handler = _MaildirHandler(self)
        self._sessions: set[_SinkSMTP] = set()
        self._smtp_server: asyncio.Server | None = None
        self._http_server: _EmbeddedServer | None = None
        self._http_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SmtpSink:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the SMTP port (and the HTTP port, if any) and start accepting."""
        if self._smtp_server is not None:
            raise RuntimeError("the SMTP sink is already running")
        await asyncio.to_thread(self.maildir.mkdir, parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._smtp_server = await loop.create_server(
            lambda: _SinkSMTP(self._handler, self), self.host, self.port
        )
        self.port = self._smtp_server.sockets[0].getsockname()[1]
        try:
            if self.http_port is not None:
                await self._start_http(self.http_port)
        except BaseException:
            await self.stop()
            raise
        log.info(
            "smtp_sink.started host=%s port=%s http_port=%s maildir=%s",
            self.host,
            self.port,
            self.http_port,
            self.maildir,
        )

    async def _start_http(self, port: int) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it every response waits out the peer's delayed ACK (~40 ms).
        listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, port))
        except OSError:
            listener.close()
            raise
        self.http_port = listener.getsockname()[1]
        config = uvicorn.Config(
            _http_app(self), lifespan="off", log_config=None, log_level="warning"
        )
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        self._http_server, self._http_task = server, task
        while not server.started:
            if task.done():
                listener.close()
                task.result()
                raise RuntimeError("the SMTP sink's HTTP API stopped during startup")
            await asyncio.sleep(0.01)

    @property
    def open_connections(self) -> int:
        """Connections open right now."""
        return len(self._sessions)

    async def drop_connections(self) -> None:
        """Close every open connection, as a server does with idle ones; keep accepting."""
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await asyncio.sleep(0)  # let the closed sessions run connection_lost

    async def stop(self) -> None:
        """Close every connection and free the ports; safe to call twice."""
        if self._http_server is not None and self._http_task is not None:
            self._http_server.should_exit = True
            await self._http_task
            self._http_server = self._http_task = None
        server, self._smtp_server = self._smtp_server, None
        if server is None:
            return
        server.close()
        await self.drop_connections()
        await server.wait_closed()
        # Let the closed sessions run connection_lost before the loop may go away.
        await asyncio.sleep(0)
        log.info("smtp_sink.stopped port=%s", self.port)


def _optional_port(value: str) -> int | None:
    if value.strip().lower() in {"", "off", "none", "disabled"}:
        return None
    return int(value)


def main(argv: list[str] | None = None) -> None:
    """Run the sink until SIGINT or SIGTERM."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m svctools.smtp_sink",
        description="Local SMTP sink: stores every message, relays none.",
    )
    parser.add_argument("--host", default=env.get("SMTP_SINK_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=env.get("SMTP_SINK_PORT", "1025"))
    parser.add_argument(
        "--maildir",
        type=Path,
        default=env.get("SMTP_SINK_MAILDIR", ".run/mail"),
        help="where messages are stored (env SMTP_SINK_MAILDIR)",
    )
    parser.add_argument(
        "--http-port",
        type=_optional_port,
        default=env.get("SMTP_SINK_HTTP_PORT", "1080"),
        help='HTTP API port; "off" disables it (env SMTP_SINK_HTTP_PORT)',
    )
    parser.add_argument("--log-level", default=env.get("SMTP_SINK_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    sink = SmtpSink(
        host=args.host, port=args.port, maildir=args.maildir.resolve(), http_port=args.http_port
    )
    asyncio.run(_run_until_signalled(sink))


async def _run_until_signalled(sink: SmtpSink) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await sink.start()
    try:
        await stopping.wait()
    finally:
        await sink.stop()


if __name__ == "__main__":
    main()
