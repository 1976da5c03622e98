"""Which address a login is counted against."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from auth_service.dependencies import resolve_client_address

GATEWAY = [ip_network("127.0.0.1"), ip_network("::1")]


class TestResolveClientAddress:
    @pytest.mark.parametrize(
        ("peer", "real_ip", "forwarded_for", "expected"),
        [
            # Direct clients cannot claim another address.
            ("198.51.100.9", "203.0.113.7", "203.0.113.7", "198.51.100.9"),
            # The gateway's word is taken.
            ("127.0.0.1", "203.0.113.7", None, "203.0.113.7"),
            ("::1", None, "203.0.113.7", "203.0.113.7"),
            # A client-sent X-Forwarded-For entry in front of the gateway's is not trusted.
            ("127.0.0.1", None, "10.9.9.9, 203.0.113.7", "203.0.113.7"),
            ("127.0.0.1", None, "203.0.113.7, 127.0.0.1", "203.0.113.7"),
            # Garbage from the proxy: fall back to the proxy itself.
            ("127.0.0.1", "not-an-ip", "also-not", "127.0.0.1"),
            (None, None, None, "unknown"),
        ],
    )
    def test_resolution(
        self, peer: str | None, real_ip: str | None, forwarded_for: str | None, expected: str
    ) -> None:
        assert (
            resolve_client_address(
                peer, real_ip=real_ip, forwarded_for=forwarded_for, trusted=GATEWAY
            )
            == expected
        )

    def test_a_trusted_network_range(self) -> None:
        trusted = [ip_network("10.0.0.0/8")]
        assert (
            resolve_client_address(
                "10.1.2.3", real_ip="203.0.113.7", forwarded_for=None, trusted=trusted
            )
            == "203.0.113.7"
        )
