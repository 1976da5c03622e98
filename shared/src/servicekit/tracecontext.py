"""W3C trace context carried across HTTP, the outbox and AMQP.

A minimal propagator: the trace id follows a request into the events it causes, and every hop
gets a fresh span id. OpenTelemetry, when configured, reads and writes the same header.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

current_traceparent: ContextVar[str | None] = ContextVar("current_traceparent", default=None)


def parse(value: str | None) -> tuple[str, str, str] | None:
    """Split a valid ``traceparent`` into (trace id, parent span id, flags), else None."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if not match or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), match.group(3)


def child_of(parent: str | None) -> str:
    """A traceparent for a new span: same trace as ``parent`` (if valid), fresh span id."""
    parsed = parse(parent)
    trace_id = parsed[0] if parsed else secrets.token_hex(16)
    flags = parsed[2] if parsed else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def trace_id_of(value: str | None) -> str | None:
    """The trace id of a traceparent, or None."""
    parsed = parse(value)
    return parsed[0] if parsed else None
