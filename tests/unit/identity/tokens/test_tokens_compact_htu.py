"""Strict JWS parsing and DPoP URL comparison: the shared building blocks."""

from __future__ import annotations

import pytest

from fleetward.identity.tokens.compact import (
    CompactError,
    b64url_decode,
    b64url_encode,
    loads_object,
    split_compact,
)
from fleetward.identity.tokens.htu import normalise_htu


@pytest.mark.parametrize(
    "segment",
    [
        "YQ==",  # padding: a second spelling of "a"
        "YR",  # non-zero trailing bits: also decodes to "a"
        "Y",  # impossible length
        "YQ+/",  # standard alphabet, not URL-safe
        "Y Q",  # whitespace, which lenient decoders skip
        "YQ\n",  # newline
    ],
)
def test_non_canonical_base64url_is_refused(segment: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(segment)


def test_base64url_round_trip() -> None:
    for data in (b"", b"a", b"ab", b"abc", bytes(range(256))):
        assert b64url_decode(b64url_encode(data)) == data


@pytest.mark.parametrize(
    "text",
    [
        b"null",  # top level must be an object
        b"[]",  # array
        b'"x"',  # string
        b'{"a":1,"a":2}',  # duplicate member: parsers disagree on which wins
        b'{"a":NaN}',  # not JSON
        b'{"a":Infinity}',  # not JSON
        b"\xef\xbb\xbf{}",  # BOM
        b'{"a":"\xff"}',  # invalid UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # recursion bomb
    ],
)
def test_strict_json_refuses(text: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)):
        loads_object(text)


def test_split_keeps_signature_unverified() -> None:
    header = b64url_encode(b'{"alg":"ES256"}')
    parsed = split_compact(f"{header}.e30.c2ln")
    assert parsed.unverified_header == {"alg": "ES256"}
    assert parsed.signing_input == f"{header}.e30".encode()
    assert parsed.signature() == b"sig"


def test_split_refuses_detached_payload() -> None:
    header = b64url_encode(b'{"alg":"ES256"}')
    with pytest.raises(CompactError) as caught:
        split_compact(f"{header}..c2ln")
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://API.Example.com/x", "https://api.example.com/x"),  # host case
        ("HTTPS://api.example.com/x", "https://api.example.com/x"),  # scheme case
        ("https://api.example.com:443/x", "https://api.example.com/x"),  # default port
        ("http://api.example.com:80/x", "http://api.example.com/x"),  # default port, http
        ("https://api.example.com", "https://api.example.com/"),  # empty path
        ("https://api.example.com/x?q=1#f", "https://api.example.com/x"),  # query, fragment
        ("https://api.example.com/%7Ex", "https://api.example.com/~x"),  # unreserved decoded
        ("https://api.example.com/a%2fb", "https://api.example.com/a%2Fb"),  # hex case only
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),  # IPv6 literal kept bracketed
    ],
)
def test_equivalent_urls_normalise_equal(a: str, b: str) -> None:
    assert normalise_htu(a) == normalise_htu(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://api.example.com/x", "http://api.example.com/x"),  # scheme downgrade
        ("https://api.example.com/x", "https://api.example.com:8443/x"),  # other port
        ("https://api.example.com/x", "https://api.example.com/X"),  # path is case-sensitive
        ("https://api.example.com/a/b", "https://api.example.com/a%2Fb"),  # encoded slash
        ("https://api.example.com/x", "https://api.example.com.attacker.net/x"),  # suffix host
    ],
)
def test_different_urls_stay_different(a: str, b: str) -> None:
    assert normalise_htu(a) != normalise_htu(b)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://api.example.com/x",  # not HTTP
        "javascript:alert(1)",  # not a URL we serve
        "https://user:pw@api.example.com/x",  # user info: host confusion
        "https:///x",  # no host
        "https://api.example.com:99999/x",  # port out of range
        "https://api.example.com/\u0445",  # non-ASCII look-alike
        "https://api.example.com/a b",  # whitespace
    ],
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each row names its own cause
        normalise_htu(url)
