"""Structured logging: every line, structlog's and stdlib's alike, through one processor chain.

structlog is configured as its performance guide prescribes: a level-filtering bound logger,
loggers cached on first use, JSON rendered to bytes by orjson and written by ``BytesLogger``.
Records of stdlib loggers (uvicorn, aio-pika, SQLAlchemy, asyncio) enter through a handler whose
``ProcessorFormatter`` runs the same processors and writes through the same ``BytesLogger``.
On the way every line is redacted (see docs/logging.md), and an exception is rendered as a plain
traceback without local variables, whatever the format.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import IO, Any, BinaryIO, cast
from uuid import UUID

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

REDACTED = "[redacted]"

# A key is secret when one of its words is one of these ("access_token", "card_number") ...
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "authorization",
        "cookie",
        "card",
        "pan",
        "cvv",
        "cvc",
        "apikey",
        "jwt",
        # What a client sent: a request body, or the input pydantic reports in its errors.
        "body",
        "input",
    }
)
# ... or when it contains one of these anywhere ("client_secret", "new_password", "api_key").
_SECRET_FRAGMENTS = ("password", "secret", "api_key", "private_key", "authorization")
# Words that look secret but are not.
_PUBLIC_KEYS = frozenset(
    {"token_type", "token_url", "event", "level", "logger", "timestamp", "exc_info", "stack_info"}
)
# Values the processors themselves add: never secret, not worth scanning on every line.
# The request and correlation ids are sane ids (servicekit.middleware), never a token.
# ProcessorFormatter's own keys (the record) are removed before rendering.
_UNSCANNED = frozenset(
    {
        *("level", "logger", "timestamp", "service", "trace_id", "request_id", "correlation_id"),
        *("_record", "_from_structlog"),
    }
)
_MAX_DEPTH = 8

# A secret inside free text: an exception's message, a stdlib record, ``error=str(exc)``.
_SECRET_IN_TEXT = re.compile(
    r"""
    (?P<input>input_value=)[^\n]*(?=,\ input_type=)          # pydantic: the input it refused
    | (?P<argument>query\ argument\ \$\d+:\ )                  # asyncpg: a parameter it refused
      (?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[^\s(]+)
    | (?P<row>Failing\ row\ contains\ )\([^\n]*\)                # PostgreSQL: a refused row
    | (?P<pgkey>Key\ \([^)\n]*\)=)\([^\n]*?\)(?=\ (?:already|is)\b)   # PostgreSQL: a key's value
    | (?P<scheme>\b(?:bearer|basic|digest)\ +)[A-Za-z0-9._~+/=-]+   # Authorization credentials
    | eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*        # a JWT anywhere
    | (?P<userinfo>://[^:/@\s]*:)[^@\s/]+(?=@)                     # scheme://user:password@
    | (?P<key>(?:password|passwd|secret|token|authorization|api_?key|cookie|jwt|cvv|card_?number)
        [a-z0-9_-]*["']?\s*[:=]\s*)                                  # password=…, "token": …
      (?:(?:bearer|basic|digest)\ +)?
      (?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[^\s,;&)}\]]+)
    """,
    re.IGNORECASE | re.VERBOSE,
)
# Cheap test first (most text holds none of these words): the full search costs ten times more.
_SECRET_HINTS = (
    "pass",
    "secret",
    "token",
    "authoriz",
    "apikey",
    "api_key",
    "cookie",
    "jwt",
    "cvv",
    "card",
    "input_value",
    "query argument",
    "failing row",
    "key (",
    "bearer",
    "basic",
    "digest",
    "eyj",
    "://",
)
# Values rendered as they are; anything else is turned into text and scanned.
_PLAIN = (int, float, bool, UUID, datetime, date, Decimal, Enum)

_HANDLER_MARK = "_servicekit_handler"


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Tell whether a log key names a value that must never be written out."""
    normalised = key.lower().replace("-", "_").replace(".", "_")
    if normalised in _PUBLIC_KEYS:
        return False
    if any(fragment in normalised for fragment in _SECRET_FRAGMENTS):
        return True
    return any(word in _SECRET_WORDS for word in normalised.split("_"))


def _hide(match: re.Match[str]) -> str:
    prefix = match.group("input") or match.group("scheme") or match.group("userinfo")
    prefix = prefix or match.group("argument") or match.group("row") or match.group("pgkey")
    prefix = prefix or match.group("key") or ""
    return prefix + REDACTED


def redact_text(text: str) -> str:
    """Replace the secrets found in free text (``password=…``, bearer tokens, JWTs…)."""
    # Short values repeat on every line (methods, paths, event names): remember them.
    return _redact_short(text) if len(text) <= 64 else _redact_text(text)


def _redact_text(text: str) -> str:
    lowered = text.lower()
    for hint in _SECRET_HINTS:
        if hint in lowered:
            return _SECRET_IN_TEXT.sub(_hide, text)
    return text


_redact_short = functools.lru_cache(maxsize=4096)(_redact_text)


def _redact(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return redact_text(str(value))
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and is_secret_key(key)
            else _redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    # An object's str() may carry its fields (a pydantic model, an exception): scan it too.
    return redact_text(str(value))


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Hide secrets: the values of secret-looking keys, and secrets found inside any text."""
    for key, value in event_dict.items():
        if key in _UNSCANNED:
            continue
        kind = type(value)
        if is_secret_key(key):
            event_dict[key] = REDACTED
        elif kind is str:
            event_dict[key] = redact_text(value)
        elif kind is not int and kind is not float and value is not None:
            event_dict[key] = _redact(value, 0)
    return event_dict


class _AddService:
    def __init__(self, service: str) -> None:
        self.service = service

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", self.service)
        return event_dict


def _add_trace_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event_dict.setdefault("trace_id", format(span.trace_id, "032x"))
    return event_dict


def _add_logger_name(logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name:
        event_dict["logger"] = name
    return event_dict


_taps: list[list[dict[str, Any]]] = []


def _tap(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    for lines in _taps:
        lines.append({k: v for k, v in event_dict.items() if not k.startswith("_")})
    return event_dict


@contextlib.contextmanager
def captured_lines() -> Iterator[list[dict[str, Any]]]:
    """Every line logged meanwhile (structlog and stdlib), as the fields about to be rendered.

    For tests that assert what a line says (its event, level, ids) whatever the output format.
    """
    lines: list[dict[str, Any]] = []
    _taps.append(lines)
    try:
        yield lines
    finally:
        _taps.remove(lines)


# The last steps of a chain: they get the rendered line, not an event dict.
def _encode(_logger: WrappedLogger, _method: str, line: Any) -> bytes:
    return str(line).encode()


def _decode(_logger: WrappedLogger, _method: str, line: Any) -> str:
    return bytes(line).decode()


def _chain(*, service: str, json: bool, foreign: bool) -> list[Processor]:
    """The processors of every line, up to and including the renderer (bytes for structlog)."""
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_trace_id,
        structlog.stdlib.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _AddService(service),
    ]
    if foreign:  # structlog's own loggers format positional arguments themselves
        processors.append(structlog.stdlib.PositionalArgumentsFormatter())
    processors.append(structlog.processors.StackInfoRenderer())
    if json:
        # A list of {exc_type, exc_value, frames: [{filename, lineno, name}]}: no locals.
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        processors.append(structlog.processors.ExceptionRenderer(transformer))
    else:
        # Plain text, rendered before redaction so the redaction sees it; ConsoleRenderer
        # prints a rendered "exception" as it is (no Rich, no locals).
        processors.append(structlog.processors.format_exc_info)
    processors += [redact_secrets, _tap]
    if json:
        processors.append(
            structlog.processors.JSONRenderer(
                serializer=orjson.dumps, option=orjson.OPT_NON_STR_KEYS
            )
        )
    else:
        processors += [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
            _encode,
        ]
    return processors


class _Output:
    """The file structlog's BytesLogger writes to: the configured stream, never raising.

    A stdlib handler reports a failed write and carries on; a log line must not turn a request
    into a 500 either. Loggers are cached, so this object stays and its stream is swapped.
    """

    def __init__(self) -> None:
        self.stream: IO[bytes] | IO[str] | None = None

    def write(self, line: bytes) -> None:
        stream = self.stream if self.stream is not None else sys.stdout.buffer
        try:
            stream.write(line.decode() if isinstance(stream, io.TextIOBase) else line)  # type: ignore[arg-type]
        except Exception as exc:
            with contextlib.suppress(Exception):
                print(f"--- log line not written ({exc!r})", file=sys.__stderr__)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            (self.stream if self.stream is not None else sys.stdout.buffer).flush()


_output = _Output()
# Cached loggers keep this very list: configure_logging changes it in place.
_processors: list[Processor] = []


class _StdlibHandler(logging.Handler):
    """Writes stdlib records, rendered by a ProcessorFormatter, through structlog's logger."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._logger = structlog.BytesLogger(cast(BinaryIO, _output))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._logger.msg(self.format(record).encode())
        except Exception:
            self.handleError(record)


def configure_logging(
    *,
    service: str,
    json: bool = True,
    level: str = "INFO",
    stream: IO[bytes] | IO[str] | None = None,
) -> None:
    """Route structlog and stdlib logging (uvicorn included) to one formatted stream.

    ``stream`` defaults to standard output. Loggers are cached on first use; calling this again
    changes the format, service and stream of every logger, and the level of loggers not used
    yet (structlog bakes the level into a logger when it is first used).
    """
    _output.stream = stream
    _processors[:] = _chain(service=service, json=json, foreign=False)
    foreign = _chain(service=service, json=json, foreign=True)
    renderer = foreign.pop()
    if json:
        rendering: list[Processor] = [renderer, _decode]
    else:  # the console chain ends in _encode; a stdlib formatter returns text
        rendering = [foreign.pop()]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    handler = _StdlibHandler(formatter)
    setattr(handler, _HANDLER_MARK, True)

    _remove_handlers()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())

    # Uvicorn's own logging config gives its loggers private handlers; send them through ours.
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # The services log each request themselves (with route, status, duration and ids).
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False

    structlog.configure(
        processors=_processors,
        context_class=dict,
        logger_factory=structlog.BytesLoggerFactory(cast(BinaryIO, _output)),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


def reset_logging() -> None:
    """Undo configure_logging: remove its handler, write to standard output again."""
    _remove_handlers()
    _output.stream = None
    structlog.reset_defaults()


def _remove_handlers() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """Return a structlog logger whose lines say ``"logger": name``."""
    logger: FilteringBoundLogger = (
        structlog.get_logger(name) if name is not None else structlog.get_logger()
    )
    return logger


def bind_context(**values: Any) -> None:
    """Bind values to every log line of the current task (request, message)."""
    structlog.contextvars.bind_contextvars(**values)


def clear_context() -> None:
    """Forget everything bound with bind_context in the current task."""
    structlog.contextvars.clear_contextvars()


def _context_str(key: str) -> str | None:
    value = structlog.contextvars.get_contextvars().get(key)
    return value if isinstance(value, str) else None


def current_request_id() -> str | None:
    """Return the request id bound to the current context, if any."""
    return _context_str("request_id")


def current_correlation_id() -> str | None:
    """Return the correlation id bound to the current context, if any."""
    return _context_str("correlation_id")
