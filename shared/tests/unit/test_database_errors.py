"""Which database errors mean "unavailable" (503) rather than a bug (500)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from servicekit.runtime import _is_connection_failure


def wrapped(cause: BaseException) -> DBAPIError:
    orig = Exception("driver error")
    orig.__cause__ = cause
    return DBAPIError("SELECT 1", {}, orig)


class TestConnectionFailures:
    def test_server_full_or_restarting_is_unavailable(self) -> None:
        assert _is_connection_failure(wrapped(asyncpg.TooManyConnectionsError("full")))
        assert _is_connection_failure(wrapped(asyncpg.CannotConnectNowError("starting up")))
        assert _is_connection_failure(wrapped(ConnectionRefusedError()))
        assert _is_connection_failure(OperationalError("SELECT 1", {}, Exception("gone")))
        assert _is_connection_failure(OSError("unreachable"))

    def test_data_errors_are_bugs_not_outages(self) -> None:
        assert not _is_connection_failure(IntegrityError("INSERT", {}, Exception("dup")))
        assert not _is_connection_failure(wrapped(ValueError("bad value")))
