"""Logs are one JSON object per line, carry the request context, and never carry secrets."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from opentelemetry import trace

from servicekit.logging import (
    REDACTED,
    HotLine,
    bind_context,
    captured_lines,
    clear_context,
    configure_logging,
    current_correlation_id,
    current_request_id,
    get_logger,
    is_secret_key,
    reset_logging,
)

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    output = io.StringIO()
    configure_logging(service="orders", json=True, level="INFO", stream=output)
    yield output
    clear_context()
    reset_logging()


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestJsonOutput:
    def test_structlog_line_is_json_with_the_standard_fields(self, stream: io.StringIO) -> None:
        get_logger("orders.service").info("order.created", order_id="o-1")

        [line] = lines_of(stream)
        assert line["event"] == "order.created"
        assert line["level"] == "info"
        assert line["service"] == "orders"
        assert line["order_id"] == "o-1"
        assert ISO_UTC.fullmatch(line["timestamp"])

    def test_stdlib_logging_goes_through_the_same_format(self, stream: io.StringIO) -> None:
        logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)

        [line] = lines_of(stream)
        assert line["event"] == "Started server process [42]"
        assert line["level"] == "warning"
        assert line["service"] == "orders"
        assert ISO_UTC.fullmatch(line["timestamp"])

    def test_bound_context_appears_on_every_line_until_cleared(self, stream: io.StringIO) -> None:
        bind_context(request_id="req-1", correlation_id="corr-1", trace_id="t-1")
        get_logger().info("first")
        logging.getLogger("sqlalchemy").warning("second")
        clear_context()
        get_logger().info("third")

        first, second, third = lines_of(stream)
        for line in (first, second):
            assert (line["request_id"], line["correlation_id"], line["trace_id"]) == (
                "req-1",
                "corr-1",
                "t-1",
            )
        assert "request_id" not in third

    def test_lines_below_the_level_are_dropped(self) -> None:
        output = io.StringIO()
        configure_logging(service="orders", level="WARNING", stream=output)
        try:
            get_logger().info("quiet")
            logging.getLogger("x").info("quiet too")
            get_logger().warning("loud")
        finally:
            reset_logging()

        assert [line["event"] for line in lines_of(output)] == ["loud"]

    def test_exceptions_are_rendered_in_the_line(self, stream: io.StringIO) -> None:
        try:
            raise ValueError("broken")
        except ValueError:
            get_logger().exception("handler.failed")

        [line] = lines_of(stream)
        assert "ValueError: broken" in line["exception"]

    def test_configuring_twice_writes_each_line_once(self) -> None:
        first, second = io.StringIO(), io.StringIO()
        configure_logging(service="orders", stream=first)
        configure_logging(service="payments-gateway", stream=second)
        try:
            get_logger().info("once")
        finally:
            reset_logging()

        assert first.getvalue() == ""
        [line] = lines_of(second)
        assert line["service"] == "payments-gateway"

    def test_captured_lines_see_structlog_and_stdlib_lines(self, stream: io.StringIO) -> None:
        with captured_lines() as lines:
            bind_context(request_id="req-9")
            get_logger("orders.service").warning("order.late", order_id="o-9", password="p")
            logging.getLogger("aio_pika").info("reconnected")
        get_logger().info("after")

        assert [(line["event"], line["level"]) for line in lines] == [
            ("order.late", "warning"),
            ("reconnected", "info"),
        ]
        assert lines[0]["request_id"] == "req-9"
        assert lines[0]["password"] == REDACTED
        assert lines[0]["logger"] == "orders.service"

    def test_console_renderer_writes_plain_text(self) -> None:
        output = io.StringIO()
        configure_logging(service="orders", json=False, stream=output)
        try:
            get_logger().info("order.created", order_id="o-1")
        finally:
            reset_logging()

        text = output.getvalue()
        assert "order.created" in text
        assert "order_id=o-1" in text
        assert not text.startswith("{")


class TestRedaction:
    def test_secret_values_never_reach_the_output(self, stream: io.StringIO) -> None:
        get_logger().info(
            "login.attempt",
            email="a@example.com",
            password="hunter2hunter2",
            access_token="eyJ.a.b",
            refresh_token="r-123",
            payment_token="tok_visa",
            card_number="4242424242424242",
            headers={"Authorization": "Bearer eyJ.a.b", "Accept": "application/json"},
            token_type="bearer",
        )

        output = stream.getvalue()
        for secret in ("hunter2hunter2", "eyJ.a.b", "r-123", "tok_visa", "4242424242424242"):
            assert secret not in output
        [line] = lines_of(stream)
        assert line["password"] == REDACTED
        assert line["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
        assert line["email"] == "a@example.com"
        assert line["token_type"] == "bearer"

    def test_stdlib_extra_secrets_are_redacted_too(self, stream: io.StringIO) -> None:
        bind_context(client_secret="s3cr3t")
        logging.getLogger("lib").info("calling out")

        assert "s3cr3t" not in stream.getvalue()

    @pytest.mark.parametrize(
        "key",
        ["password", "new_password", "Authorization", "client_secret", "api_key", "card", "cvv"],
    )
    def test_secret_looking_keys(self, key: str) -> None:
        assert is_secret_key(key)

    @pytest.mark.parametrize(
        "key", ["email", "order_id", "token_type", "company", "expires_in", "request_id"]
    )
    def test_ordinary_keys(self, key: str) -> None:
        assert not is_secret_key(key)


class TestContextHelpers:
    def test_current_ids_read_the_bound_context(self) -> None:
        assert current_request_id() is None
        bind_context(request_id="req-9", correlation_id="corr-9")
        try:
            assert current_request_id() == "req-9"
            assert current_correlation_id() == "corr-9"
        finally:
            clear_context()
        assert current_correlation_id() is None


class TestBrokenStream:
    def test_a_closed_stream_never_makes_logging_raise(self) -> None:
        output = io.StringIO()
        configure_logging(service="orders", stream=output)
        output.close()
        try:
            get_logger("orders.service").info("order.created")  # would raise ValueError
            logging.getLogger("lib").warning("stdlib too")
        finally:
            reset_logging()


class TestHotLine:
    """The per-request line written without structlog reads exactly like a structlog line."""

    CONTEXT: ClassVar[dict[str, str]] = {"request_id": "r" * 32, "correlation_id": "c" * 32}
    FIELDS: ClassVar[dict[str, Any]] = {"method": "GET", "path": "/x", "status": 200, "ms": 1.25}

    def test_it_writes_what_structlog_writes_for_the_same_event(self, stream: io.StringIO) -> None:
        parent = trace.NonRecordingSpan(
            trace.SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False)
        )
        with trace.use_span(parent):
            bind_context(**self.CONTEXT)
            get_logger("http").info("http.request", **self.FIELDS)
            clear_context()
            HotLine("http", "http.request").write(self.CONTEXT, **self.FIELDS)

        via_structlog, hot = lines_of(stream)
        assert ISO_UTC.fullmatch(hot.pop("timestamp"))
        via_structlog.pop("timestamp")
        assert hot == via_structlog
        assert hot["trace_id"] == f"{0xABC:032x}"
        # Fields first, as structlog orders them; the context's own order is not defined.
        assert list(hot)[:5] == [*self.FIELDS, "event"]

    def test_without_a_span_there_is_no_trace_id(self, stream: io.StringIO) -> None:
        HotLine("http", "http.request").write(self.CONTEXT, **self.FIELDS)

        [line] = lines_of(stream)
        assert "trace_id" not in line
        assert line["request_id"] == "r" * 32

    def test_captured_lines_see_it(self, stream: io.StringIO) -> None:
        with captured_lines() as lines:
            bind_context(**self.CONTEXT)
            HotLine("http", "http.request").write(self.CONTEXT, **self.FIELDS)

        [line] = [line for line in lines if line["event"] == "http.request"]
        assert line["path"] == "/x"
        assert line["request_id"] == "r" * 32
        assert lines_of(stream)[0]["path"] == "/x"

    def test_a_secret_looking_field_is_still_redacted(self, stream: io.StringIO) -> None:
        HotLine("http", "http.request").write(self.CONTEXT, path="/x", api_key="k-123")

        [line] = lines_of(stream)
        assert line["api_key"] == REDACTED
        assert "k-123" not in stream.getvalue()

    def test_it_follows_the_configured_level_and_format(self) -> None:
        quiet, console = io.StringIO(), io.StringIO()
        try:
            configure_logging(service="users", json=True, level="WARNING", stream=quiet)
            HotLine("http", "http.request").write(self.CONTEXT, **self.FIELDS)
            configure_logging(service="users", json=False, level="INFO", stream=console)
            HotLine("http", "http.request").write(self.CONTEXT, **self.FIELDS)
        finally:
            reset_logging()

        assert quiet.getvalue() == ""
        assert "http.request" in console.getvalue()
        assert not console.getvalue().lstrip().startswith("{")
