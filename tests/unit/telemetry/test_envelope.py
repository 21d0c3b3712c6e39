"""The frame and reply formats, against a device side written from the format document."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from pathlib import Path

import pytest

from fleetward.telemetry import envelope
from fleetward.telemetry.envelope import MacCache, SessionMacs, open_reply, seal
from fleetward.telemetry.errors import Rejected, Status
from unit.telemetry.kit import FRAME_LABEL, HEADER, new_session, raw_frame

KEY = bytes(range(32))


def test_the_reference_sealer_matches_the_document() -> None:
    # seal() is what the simulator and TCU teams copy: it must match the documented layout.
    documented = raw_frame(
        KEY, b'{"signals":{}}', counter=7, sequence=9, device_time_ms=123, flags=1
    )
    sealed = seal(
        KEY,
        b'{"signals":{}}',
        counter=7,
        sequence=9,
        device_time_ms=123,
        store_and_forward=True,
    )
    assert sealed == documented
    assert (FRAME_LABEL, HEADER.format, HEADER.size) == (
        envelope.FRAME_LABEL,
        envelope.HEADER.format,
        26,
    )


def test_open_returns_the_authenticated_fields() -> None:
    frame = seal(KEY, b"{}", counter=3, sequence=2**63 - 1, device_time_ms=5)
    verified = SessionMacs(KEY).open(frame)
    assert verified == envelope.VerifiedFrame(3, 2**63 - 1, 5, False, b"{}")


def test_reply_round_trip_and_tamper() -> None:
    macs = SessionMacs(KEY)
    reply = macs.reply(
        Status.QUOTA_EXCEEDED, counter=4, sequence=5, server_time_ms=6, retry_after_ms=7
    )
    assert len(reply) == envelope.REPLY_BYTES == 62
    opened = open_reply(KEY, reply)
    assert (opened.status, opened.counter, opened.sequence) == (Status.QUOTA_EXCEEDED, 4, 5)
    assert (opened.server_time_ms, opened.retry_after_ms) == (6, 7)
    # A forged ack would make the device drop data it still holds.
    forged = bytearray(reply)
    forged[1] = Status.ACCEPTED
    with pytest.raises(ValueError, match="tag"):
        open_reply(KEY, bytes(forged))
    with pytest.raises(ValueError, match="tag"):
        open_reply(bytes(32), reply)
    with pytest.raises(ValueError, match="not a reply"):
        open_reply(KEY, reply[:-1])


def test_a_frame_never_verifies_as_a_reply() -> None:
    frame = seal(KEY, b"{  }", counter=1, sequence=1, device_time_ms=1)
    assert len(frame) == envelope.REPLY_BYTES
    with pytest.raises(ValueError, match="tag"):
        open_reply(KEY, frame)


@pytest.mark.parametrize("key", [b"", b"k" * 16, b"k" * 31, b"k" * 33, "k" * 32, bytearray(32)])
def test_session_keys_are_exactly_32_bytes(key: object) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SessionMacs(key)  # type: ignore[arg-type]


def test_one_session_id_cannot_change_its_key() -> None:
    cache = MacCache()
    session = new_session("dev_a", "veh_a", "ten_a")
    assert cache.get(session) is cache.get(session)
    other_key = new_session("dev_a", "veh_a", "ten_a").session_key
    with pytest.raises(ValueError, match="reused"):
        cache.get(dataclasses.replace(session, session_key=other_key))
    cache.forget(session.session_id)
    assert session.session_id not in cache


def test_a_rejection_never_carries_a_stored_status() -> None:
    with pytest.raises(ValueError, match="stored status"):
        Rejected(Status.ACCEPTED, "x")
    assert {s for s in Status if s.stored} == {Status.ACCEPTED, Status.DUPLICATE}
    assert Status.STORE_UNAVAILABLE.slug == "store-unavailable"


# The vectors published in docs/telemetry-format.md, section 6.
DOC = Path(__file__).parents[3] / "docs" / "telemetry-format.md"
VECTOR_PAYLOAD = (
    b'{"signals":{"Vehicle.Speed":52.5,"Vehicle.Cabin.Door.Row1.DriverSide.IsLocked":true}}'
)
VECTOR_HEADER = "01000000000000000001000000000000002a000001a217154680"
VECTOR_TAG = "e681ccecaa530351420cffe1822f1c11fe2bdafd8f9703fc01855d9e9ad5621c"
VECTOR_ACK = (
    "01000000000000000001000000000000002a000001a2171546f800000000190b21e149530e798883"
    "a5e5be2f1d06ae28b62ef1d47a99624b9b5beb0e119c"
)
VECTOR_QUOTA = (
    "01300000000000000002000000000000002b000001a21715470200000352461fe6597e7245ada540"
    "f287c377dc92b6780cce242e2e8f5e3cb0479e0fd00f"
)


def test_published_test_vectors() -> None:
    frame = raw_frame(KEY, VECTOR_PAYLOAD, counter=1, sequence=42, device_time_ms=1795683600000)
    assert frame[:26].hex() == VECTOR_HEADER
    assert frame[-32:].hex() == VECTOR_TAG
    macs = SessionMacs(KEY)
    assert macs.open(frame).sequence == 42
    ack = macs.reply(Status.ACCEPTED, counter=1, sequence=42, server_time_ms=1795683600120)
    assert ack.hex() == VECTOR_ACK
    quota = macs.reply(
        Status.QUOTA_EXCEEDED,
        counter=2,
        sequence=43,
        server_time_ms=1795683600130,
        retry_after_ms=850,
    )
    assert quota.hex() == VECTOR_QUOTA
    text = DOC.read_text()
    for published in (VECTOR_PAYLOAD.decode(), VECTOR_HEADER, VECTOR_TAG, VECTOR_ACK, VECTOR_QUOTA):
        assert published in text


def test_the_document_lists_every_status_and_signal() -> None:
    from fleetward.telemetry.signals import CATALOGUE

    text = DOC.read_text()
    for status in Status:
        assert f"| 0x{status.value:02x} | `{status.slug}` |" in text
    for path in CATALOGUE:
        assert f"| `{path}` |" in text


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 300, 8192])
def test_the_tag_is_standard_hmac_sha256(size: int) -> None:
    key = bytes(range(100, 132))
    data = bytes(n % 251 for n in range(size))
    expected = hmac.new(key, envelope.FRAME_LABEL + data, hashlib.sha256).digest()
    assert envelope._LabelledHmac(key, envelope.FRAME_LABEL).tag(data) == expected
