"""The client IP recorded in audit events: the peer address, and forwarded headers only
from configured proxies, so a client cannot choose the address recorded for it."""

from __future__ import annotations

import pytest

from fleetward.api.middleware import client_ip

PROXY = "10.0.0.5"


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        # No proxy configured: the header is the client's word, ignored.
        ("203.0.113.9", "198.51.100.1", set(), "203.0.113.9"),
        # A trusted proxy: the right-most address it did not add itself.
        (PROXY, "198.51.100.1, 203.0.113.9", {PROXY}, "203.0.113.9"),
        # Proxies chained: skip every trusted hop from the right.
        (PROXY, "198.51.100.1, 10.0.0.6", {PROXY, "10.0.0.6"}, "198.51.100.1"),
        # A spoofed left-most entry never wins over what the proxy appended.
        (PROXY, "127.0.0.1, 192.0.2.4", {PROXY}, "192.0.2.4"),
        # Garbage in the header: keep the peer we saw.
        (PROXY, "not-an-ip", {PROXY}, PROXY),
        # Header from an untrusted peer that claims to be the proxy: ignored.
        ("192.0.2.77", PROXY, {PROXY}, "192.0.2.77"),
        # IPv6 peers are normalised.
        ("2001:db8:0::1", "", set(), "2001:db8::1"),
    ],
)
def test_client_ip(peer: str, forwarded: str, trusted: set[str], expected: str) -> None:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    assert client_ip({"client": (peer, 1234)}, headers, frozenset(trusted)) == expected


def test_no_peer_no_address() -> None:
    assert client_ip({}, {"x-forwarded-for": "198.51.100.1"}) is None
