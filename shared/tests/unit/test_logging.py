"""Logs are one JSON object per line, carry the request context, and never carry secrets."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace

from servicekit.logging import (
    REDACTED,
    bind_context,
    captured_lines,
    clear_context,
    configure_logging,
    current_correlation_id,
    current_request_id,
    get_logger,
    is_secret_key,
    redact_text,
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
        [error] = line["exception"]
        assert (error["exc_type"], error["exc_value"]) == ("ValueError", "broken")
        assert error["frames"][-1]["name"] == "test_exceptions_are_rendered_in_the_line"

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


class TestTraceId:
    def test_a_line_under_a_span_carries_its_trace_id(self, stream: io.StringIO) -> None:
        parent = trace.NonRecordingSpan(
            trace.SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False)
        )
        with trace.use_span(parent):
            get_logger("http").info("http.request", path="/x")
        get_logger("http").info("http.request", path="/y")

        inside, outside = lines_of(stream)
        assert inside["trace_id"] == f"{0xABC:032x}"
        assert "trace_id" not in outside


# Loggers cached on first use (structlog's performance advice) still follow a reconfiguration.
module_logger = get_logger("orders.module")


class TestCachedLoggers:
    def test_a_logger_used_before_follows_a_new_stream_and_format(self) -> None:
        first, second = io.StringIO(), io.StringIO()
        try:
            configure_logging(service="orders", stream=first)
            module_logger.info("first")
            configure_logging(service="users", json=False, stream=second)
            module_logger.info("second")
        finally:
            reset_logging()

        assert [line["event"] for line in lines_of(first)] == ["first"]
        assert "second" in second.getvalue()
        assert not second.getvalue().startswith("{")


PASSWORD = "correct horse battery staple 1f3a"


def _fail_holding_a_password() -> None:
    password = PASSWORD  # a local of the failing frame, as in a login handler
    body = {"email": "a@example.com", "password": password}
    raise RuntimeError(f"could not store the session of {body['email']}")


def _fail_validating_a_password() -> None:
    from pydantic import TypeAdapter

    TypeAdapter(int).validate_python(PASSWORD)


@pytest.fixture(params=[True, False], ids=["json", "console"])
def any_format(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    output = io.StringIO()
    configure_logging(service="auth", json=request.param, level="DEBUG", stream=output)
    yield output
    clear_context()
    reset_logging()


class TestExceptionsCarryNoSecrets:
    """A traceback names files, lines and functions; never the values of local variables."""

    def test_a_traceback_has_no_local_variables(self, any_format: io.StringIO) -> None:
        try:
            _fail_holding_a_password()
        except RuntimeError:
            get_logger("auth").exception("http.unhandled_error")

        text = any_format.getvalue()
        assert "could not store the session of a@example.com" in text
        assert "_fail_holding_a_password" in text
        assert PASSWORD not in text
        assert "password" not in text.replace("_fail_holding_a_password", "")

    def test_an_exception_message_carrying_the_input_is_redacted(
        self, any_format: io.StringIO
    ) -> None:
        try:
            _fail_validating_a_password()
        except ValueError as exc:
            get_logger("auth").error("http.unhandled_error", exc_info=exc)
            get_logger("auth").warning("auth.failed", error=str(exc))

        text = any_format.getvalue()
        assert "int_parsing" in text
        assert "input_value=[redacted]" in text
        assert PASSWORD not in text
        assert PASSWORD[:20] not in text

    def test_a_stdlib_record_with_an_exception_is_rendered_the_same_way(
        self, any_format: io.StringIO
    ) -> None:
        try:
            _fail_holding_a_password()
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")

        text = any_format.getvalue()
        assert "Exception in ASGI application" in text
        assert "could not store the session" in text
        assert PASSWORD not in text

    def test_an_object_logged_as_a_value_is_scanned_as_text(self, any_format: io.StringIO) -> None:
        class Credentials:
            def __repr__(self) -> str:
                return f"Credentials(email='a@example.com', password='{PASSWORD}')"

            __str__ = __repr__

        get_logger().info("login.attempt", credentials=Credentials(), attempts=(Credentials(),))

        assert PASSWORD not in any_format.getvalue()
        assert "a@example.com" in any_format.getvalue()


class TestSecretsInText:
    @pytest.mark.parametrize(
        ("text", "secret"),
        [
            ("1 validation error\n  [type=x, input_value='s3cr3t', input_type=str]", "s3cr3t"),
            ("input_value={'password': 'pw, input_type=x'}, input_type=dict]", "pw"),
            ("headers: Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
            ("basic dXNlcjpwYXNz rejected", "dXNlcjpwYXNz"),
            ("got eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
            ("connect to amqp://guest:hunter2@rabbit:5672/ failed", "hunter2"),
            ("Credentials(email='a@b.c', password='p w')", "p w"),
            ('{"refresh_token": "r-123", "x": 1}', "r-123"),
            ("client_secret=abc&grant_type=password", "abc"),
            ("new_password = hunter22", "hunter22"),
            # Database drivers quote the values they refused or that collided.
            (
                "invalid input for query argument $1: 'long pass phrase' ('str' object cannot be"
                " interpreted as an integer)",
                "long pass phrase",
            ),
            ("DETAIL:  Failing row contains (7, a@b.c, $argon2id$v=19$abc).", "$argon2id$"),
            ("DETAIL:  Key (email)=(ada@example.com) already exists.", "ada@example.com"),
        ],
    )
    def test_the_secret_is_replaced(self, text: str, secret: str) -> None:
        redacted = redact_text(text)

        assert secret not in redacted
        assert REDACTED in redacted

    @pytest.mark.parametrize(
        "text",
        [
            "GET /orders/5b0c4f7e-1f3a-4bdb-9d43-2a7d0c1f1f61",
            "Started server process [42]",
            "order o-1 confirmed: total=7.25 USD",
            "Connection lost to amqp://rabbit:5672/",
        ],
    )
    def test_ordinary_text_is_left_alone(self, text: str) -> None:
        assert redact_text(text) == text
