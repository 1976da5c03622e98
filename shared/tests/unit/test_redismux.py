"""Encoding commands and reading Redis URLs for the multiplexed connection."""

from __future__ import annotations

import pytest

from servicekit.redismux import _parse_url, encode_command


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert encode_command(("MGET", b"a\r\nb", "é")) == (
        b"*3\r\n$4\r\nMGET\r\n$4\r\na\r\nb\r\n$2\r\n\xc3\xa9\r\n"
    )
    assert encode_command(("SET", "k", 5, "PX", 1.5)) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$2\r\nPX\r\n$3\r\n1.5\r\n"
    )


@pytest.mark.parametrize("bad", [None, True, ["list"]])
def test_values_redis_cannot_hold_are_refused(bad: object) -> None:
    with pytest.raises(TypeError):
        encode_command(("SET", "k", bad))  # type: ignore[arg-type]


def test_a_plain_url_needs_no_handshake() -> None:
    target = _parse_url("redis://cache.internal:6380/0")
    assert (target.host, target.port, target.path, target.ssl) == (
        "cache.internal",
        6380,
        None,
        None,
    )
    assert target.handshake == []


def test_credentials_and_database_become_the_handshake() -> None:
    target = _parse_url("redis://app:s%40cret@127.0.0.1/3")
    assert target.handshake == [("AUTH", "app", "s@cret"), ("SELECT", 3)]
    assert _parse_url("redis://:only-password@h").handshake == [("AUTH", "only-password")]
    assert _parse_url("redis://h?db=2").handshake == [("SELECT", 2)]


def test_tls_and_unix_sockets() -> None:
    assert _parse_url("rediss://h").ssl is not None
    unix = _parse_url("unix:///run/redis.sock?db=4")
    assert unix.path == "/run/redis.sock"
    assert unix.handshake == [("SELECT", 4)]


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        _parse_url("http://h:6379")
