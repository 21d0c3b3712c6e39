"""COMMAND and RESULT frames: the documented layout and vector, and every way a frame that the
command service or the device did not sign, or that breaks the format, is refused."""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fleetward.commands.envelope import (
    COMMAND_CONTEXT,
    COMMAND_TYPE,
    MAX_COMMAND_BYTES,
    RESULT_CONTEXT,
    RESULT_TYPE,
    CommandEnvelope,
    CommandResult,
    EnvelopeRefused,
    ResultRefused,
    ResultVerdict,
    check_result_binding,
    envelope_digest,
    open_command,
    open_result,
    seal_command,
    seal_result,
    unverified_result_ids,
)
from fleetward.commands.signing import CommandSigner

# The vectors of docs/vehicle-protocol.md section 6: a change here is a protocol change.
COMMAND_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0x07]) * 32)
DEVICE_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0x08]) * 32)
VEHICLE = "veh_" + "a" * 26
JOB = "job_" + "b" * 26
DEVICE = "dev_" + "c" * 26
ISSUED = 1_795_683_600_000  # 2026-11-26T09:00:00Z
SIGNER = CommandSigner(COMMAND_KEY)
KEYS = SIGNER.verifying_keys()
ENVELOPE = CommandEnvelope(
    vehicle_id=VEHICLE,
    job_id=JOB,
    command="vehicle:climate",
    parameters={"cabin_celsius": 21.5},
    issued_at_ms=ISSUED,
    expires_at_ms=ISSUED + 30_000,
    counter=7,
    key_id=SIGNER.key_id,
)
COMMAND_HEX = (
    "0201001e7665685f6161616161616161616161616161616161616161616161616161001e6a6f625f"
    "6262626262626262626262626262626262626262626262626262000f76656869636c653a636c696d"
    "61746500167b22636162696e5f63656c73697573223a32312e357d000001a217154680000001a217"
    "15bbb000000000000000070014636d642d666538313263313266336162346365360040149d531591"
    "084fb687c969c3d23d38f9a94a67c26a63ef1230e3d442595718f19e28aefcfc3afab0a277a40ed2"
    "8ebfd912b41885646ce1abb1620f6f8cd34b05"
)
DIGEST_HEX = "4a1fd7f51f8962fec17430e8e15c138c2acaf54248a9f95993d732331cb77d55"
RESULT = CommandResult(
    job_id=JOB,
    vehicle_id=VEHICLE,
    device_id=DEVICE,
    counter=7,
    envelope_digest=bytes.fromhex(DIGEST_HEX),
    verdict=ResultVerdict.EXECUTED,
    reason="ok",
    device_time_ms=ISSUED + 250,
)
RESULT_HEX = (
    "0301001e6a6f625f6262626262626262626262626262626262626262626262626262001e7665685f"
    "6161616161616161616161616161616161616161616161616161001e6465765f6363636363636363"
    "63636363636363636363636363636363636300000000000000074a1fd7f51f8962fec17430e8e15c"
    "138c2acaf54248a9f95993d732331cb77d550000026f6b000001a21715477a00406e573c915cdf36"
    "ab2dd804d71bd7deb7076cf8c6d745798708d75dd54cb007684dcc0a390d9e172d9415d2e23c5595"
    "baba7e030dcddd793cdd22496349845c04"
)
FRAME = bytes.fromhex(COMMAND_HEX)
RESULT_FRAME = bytes.fromhex(RESULT_HEX)

# Byte ranges of the vector COMMAND frame (start, end): the layout table of section 6.
COMMAND_REGIONS = {
    "type": (0, 1),
    "version": (1, 2),
    "vehicle_id length": (2, 4),
    "vehicle_id": (4, 34),
    "job_id": (36, 66),
    "command": (68, 83),
    "parameters length": (83, 85),
    "parameters": (85, 107),
    "issued_at_ms": (107, 115),
    "expires_at_ms": (115, 123),
    "counter": (123, 131),
    "key_id": (133, 153),
    "signature length": (153, 155),
    "signature": (155, 219),
}
RESULT_REGIONS = {
    "type": (0, 1),
    "job_id": (4, 34),
    "vehicle_id": (36, 66),
    "device_id": (68, 98),
    "counter": (98, 106),
    "envelope_digest": (106, 138),
    "verdict": (138, 139),
    "reason": (141, 143),
    "device_time_ms": (143, 151),
    "signature": (153, 217),
}


def test_command_vector_is_the_documented_one() -> None:
    assert SIGNER.key_id == "cmd-fe812c12f3ab4ce6"
    assert SIGNER.public_key.public_bytes_raw().hex() == (
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
    )
    frame = seal_command(ENVELOPE, SIGNER)
    assert frame.hex() == COMMAND_HEX and len(frame) == 219
    assert envelope_digest(frame).hex() == DIGEST_HEX
    # The signature input is the label and every byte before the signature field.
    COMMAND_KEY.public_key().verify(frame[155:], COMMAND_CONTEXT + frame[:153])
    assert frame[85:107] == b'{"cabin_celsius":21.5}'
    assert open_command(frame, KEYS) == ENVELOPE


def test_result_vector_is_the_documented_one() -> None:
    assert DEVICE_KEY.public_key().public_bytes_raw().hex() == (
        "1398f62c6d1a457c51ba6a4b5f3dbd2f69fca93216218dc8997e416bd17d93ca"
    )
    frame = seal_result(RESULT, DEVICE_KEY)
    assert frame.hex() == RESULT_HEX and len(frame) == 217
    DEVICE_KEY.public_key().verify(frame[153:], RESULT_CONTEXT + frame[:151])
    assert open_result(frame, DEVICE_KEY.public_key()) == RESULT
    assert unverified_result_ids(frame) == (JOB, DEVICE)


def test_the_protocol_document_shows_these_vectors() -> None:
    # A TCU team implements from the document: its hex must be what the code produces.
    text = (Path(__file__).parents[3] / "docs" / "vehicle-protocol.md").read_text()
    section = text[text.index("### 6.10 Test vectors") :]
    blocks = re.findall(r"```\n([0-9a-f\n]+)```", section)
    assert [block.replace("\n", "") for block in blocks] == [COMMAND_HEX, RESULT_HEX]
    assert DIGEST_HEX in section and SIGNER.key_id in section


def test_multiplexing_bytes() -> None:
    # A session tells commands and results from telemetry (version byte 0x01) by byte 0.
    assert (FRAME[0], RESULT_FRAME[0]) == (COMMAND_TYPE, RESULT_TYPE) == (0x02, 0x03)


def _flip(frame: bytes, offset: int) -> bytes:
    return frame[:offset] + bytes([frame[offset] ^ 0x01]) + frame[offset + 1 :]


def _middle(region: tuple[int, int]) -> int:
    return (region[0] + region[1] - 1) // 2


def _signed(unsigned: bytes, key: ed25519.Ed25519PrivateKey = COMMAND_KEY) -> bytes:
    signature = key.sign(COMMAND_CONTEXT + unsigned)
    return unsigned + struct.pack(">H", len(signature)) + signature


def _raw_command(
    *,
    vehicle_id: bytes = VEHICLE.encode(),
    job_id: bytes = JOB.encode(),
    command: bytes = b"vehicle:unlock",
    parameters: bytes = b"{}",
    issued_at_ms: int = ISSUED,
    expires_at_ms: int = ISSUED + 30_000,
    counter: int = 1,
    key_id: bytes = SIGNER.key_id.encode(),
    key: ed25519.Ed25519PrivateKey = COMMAND_KEY,
) -> bytes:
    """A COMMAND frame built by hand and signed by ``key``: what a platform bug, or a
    compromised signer, could produce. Only the fields' types save the vehicle then."""

    def field(value: bytes) -> bytes:
        return struct.pack(">H", len(value)) + value

    unsigned = (
        bytes((COMMAND_TYPE, 1))
        + field(vehicle_id)
        + field(job_id)
        + field(command)
        + field(parameters)
        + struct.pack(">QQQ", issued_at_ms, expires_at_ms, counter)
        + field(key_id)
    )
    return _signed(unsigned, key)


def test_a_hand_built_frame_matches_the_sealed_one() -> None:
    # The builder below is only trustworthy if it produces what seal_command produces.
    sealed = seal_command(
        CommandEnvelope(
            VEHICLE, JOB, "vehicle:unlock", {}, ISSUED, ISSUED + 30_000, 1, SIGNER.key_id
        ),
        SIGNER,
    )
    assert _raw_command() == sealed


OTHER_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0x09]) * 32)
OTHER_SIGNER = CommandSigner(OTHER_KEY)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        # Wrong type: a RESULT (or a handshake RESPONSE) shown to the vehicle as a command.
        pytest.param(_flip(FRAME, 0), "malformed", id="type"),
        # Another protocol version must not be parsed with this one's rules.
        pytest.param(_flip(FRAME, 1), "malformed", id="version"),
        # Length prefixes moved: the field boundaries no longer hold.
        pytest.param(_flip(FRAME, 3), "malformed", id="vehicle_id length"),
        pytest.param(_flip(FRAME, 84), "malformed", id="parameters length"),
        # Signature length not 64: only a pure Ed25519 signature is accepted.
        pytest.param(_flip(FRAME, 154), "malformed", id="signature length"),
        # Redirect a command to another car (BOLA on the wire).
        pytest.param(
            _flip(FRAME, _middle(COMMAND_REGIONS["vehicle_id"])), "bad-signature", id="vehicle_id"
        ),
        # Bind the vehicle's answer to another job.
        pytest.param(
            _flip(FRAME, _middle(COMMAND_REGIONS["job_id"])), "bad-signature", id="job_id"
        ),
        # Turn a climate command into another command.
        pytest.param(
            _flip(FRAME, _middle(COMMAND_REGIONS["command"])), "bad-signature", id="command"
        ),
        # Change a parameter (21.5 -> 20.5 degrees, or worse for another command).
        pytest.param(
            _flip(FRAME, _middle(COMMAND_REGIONS["parameters"])), "bad-signature", id="parameters"
        ),
        # Move the validity window back to make an old envelope live again.
        pytest.param(
            _flip(FRAME, COMMAND_REGIONS["issued_at_ms"][1] - 1), "bad-signature", id="issued_at_ms"
        ),
        # Extend the deadline of a captured envelope.
        pytest.param(
            _flip(FRAME, COMMAND_REGIONS["expires_at_ms"][1] - 1),
            "bad-signature",
            id="expires_at_ms",
        ),
        # Give a captured envelope a fresh counter to pass the replay window.
        pytest.param(
            _flip(FRAME, COMMAND_REGIONS["counter"][1] - 1), "bad-signature", id="counter"
        ),
        # Name a key the vehicle does not trust.
        pytest.param(_flip(FRAME, _middle(COMMAND_REGIONS["key_id"])), "unknown-key", id="key_id"),
        # A forged signature.
        pytest.param(
            _flip(FRAME, _middle(COMMAND_REGIONS["signature"])), "bad-signature", id="signature"
        ),
        # An attacker's own key, claiming the platform key's id.
        pytest.param(_raw_command(key=OTHER_KEY), "bad-signature", id="other key, platform id"),
        # An attacker's own key under its own id: not in the vehicle's trusted set.
        pytest.param(
            _raw_command(key=OTHER_KEY, key_id=OTHER_SIGNER.key_id.encode()),
            "unknown-key",
            id="untrusted key",
        ),
        # A key id that is not printable ASCII (terminal or log injection).
        pytest.param(_raw_command(key_id=b"cmd-\n"), "malformed", id="key_id control char"),
        # Anything glued after the signature (parser differential between implementations).
        pytest.param(FRAME + b"\x00", "malformed", id="trailing byte"),
        # A memory-exhaustion or parser-stress attempt.
        pytest.param(FRAME + bytes(MAX_COMMAND_BYTES), "malformed", id="oversize"),
        # Nothing, or only a header.
        pytest.param(b"", "malformed", id="empty"),
        pytest.param(b"\x02\x01", "malformed", id="header only"),
        # A telemetry frame (first byte 0x01) misrouted to the command path.
        pytest.param(b"\x01" + FRAME[1:], "malformed", id="telemetry byte"),
        # A signed RESULT offered as a COMMAND (reflection).
        pytest.param(RESULT_FRAME, "malformed", id="result as command"),
    ],
)
def test_refused_command_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeRefused) as refused:
        open_command(frame, KEYS)
    assert refused.value.reason == reason


def test_every_truncation_is_malformed() -> None:
    # A frame cut anywhere (lost bytes, or a cut meant to shift the fields) never parses.
    for cut in range(len(FRAME)):
        with pytest.raises(EnvelopeRefused) as refused:
            open_command(FRAME[:cut], KEYS)
        assert refused.value.reason == "malformed", cut


def test_every_single_bit_flip_is_refused() -> None:
    # No bit of the frame can change without the vehicle refusing it.
    for offset in range(len(FRAME)):
        for bit in range(8):
            changed = FRAME[:offset] + bytes([FRAME[offset] ^ 1 << bit]) + FRAME[offset + 1 :]
            with pytest.raises(EnvelopeRefused):
                open_command(changed, KEYS)


@pytest.mark.parametrize(
    ("parameters", "why"),
    [
        (b'{"a":{"b":1}}', "a nested object: no structure the executor does not expect"),
        (b'{"a":[1,2]}', "an array"),
        (b'{"a":null}', "null: a missing value must be absent, not null"),
        (b"null", "not an object at all"),
        (b"[]", "an array at top level"),
        (b'"x"', "a string at top level"),
        (b"12", "a number at top level"),
        (b'{"a":1,"a":2}', "a duplicate name: two parsers could pick different values"),
        (b'{"a":NaN}', "NaN is not JSON and compares unequal to itself"),
        (b'{"a":-Infinity}', "Infinity is not JSON"),
        (b'{"a":1e400}', "a number that overflows to infinity"),
        (b'{"a":9223372036854775808}', "an integer beyond int64"),
        (b'{"a":"\\ud800"}', "a lone surrogate: valid JSON, not text"),
        (b'{"a":"\xff"}', "invalid UTF-8"),
        (b'\xef\xbb\xbf{"a":1}', "a byte-order mark"),
        (b"[" * 1000, "deep nesting: parser recursion"),
        (b'{"a":1', "truncated JSON"),
        (b"{}{}", "two values"),
    ],
)
def test_hostile_parameters_are_refused_even_when_signed(parameters: bytes, why: str) -> None:
    with pytest.raises(EnvelopeRefused) as refused:
        open_command(_raw_command(parameters=parameters), KEYS)
    assert refused.value.reason == "malformed", why


def test_signed_parameters_are_taken_as_signed() -> None:
    # Canonical form is the platform's promise, not re-checked: the vehicle verifies the
    # bytes it received and only requires a flat object of the four types.
    envelope = open_command(
        _raw_command(parameters=b'{ "z": "\xc3\xa9", "a": 1, "b": 2.0, "c": false }'), KEYS
    )
    assert dict(envelope.parameters) == {"z": "é", "a": 1, "b": 2.0, "c": False}
    assert type(envelope.parameters["b"]) is float and type(envelope.parameters["a"]) is int
    with pytest.raises(TypeError):
        envelope.parameters["a"] = 2  # type: ignore[index]  # read-only once verified


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"counter": 0}, "counter 0 is never assigned"),
        ({"counter": 2**63}, "beyond the platform's counter column"),
        ({"expires_at_ms": ISSUED}, "an envelope that is never valid"),
        ({"expires_at_ms": ISSUED - 1}, "a deadline before issue"),
        ({"vehicle_id": b"WVWZZZ1JZXW000001"}, "a VIN is not a vehicle id"),
        ({"vehicle_id": b"veh_" + b"A" * 26}, "not an id's alphabet"),
        ({"job_id": b"cmd_" + b"b" * 26}, "another kind of id where a job id belongs"),
        ({"command": b"vehicle:unlock\x00"}, "a NUL in the command name"),
    ],
)
def test_signed_but_malformed_fields_are_refused(overrides: dict[str, object], why: str) -> None:
    frame = _raw_command(**overrides)  # type: ignore[arg-type]
    with pytest.raises(EnvelopeRefused) as refused:
        open_command(frame, KEYS)
    assert refused.value.reason == "malformed", why


def _envelope(**changes: object) -> CommandEnvelope:
    fields: dict[str, object] = {
        "vehicle_id": VEHICLE,
        "job_id": JOB,
        "command": "vehicle:unlock",
        "parameters": {},
        "issued_at_ms": ISSUED,
        "expires_at_ms": ISSUED + 30_000,
        "counter": 1,
        "key_id": SIGNER.key_id,
    } | changes
    return CommandEnvelope(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"key_id": OTHER_SIGNER.key_id},
        {"vehicle_id": "ALICE-1"},
        {"job_id": "job_1"},
        {"command": "vehicle:ünlock"},
        {"command": ""},
        {"parameters": {"a": {"b": 1}}},
        {"parameters": {"a": None}},
        {"parameters": {"a": float("nan")}},
        {"parameters": {"a": 2**63}},
        {"parameters": {"a": "x" * 1100}},
        {"counter": 0},
        {"expires_at_ms": ISSUED},
    ],
)
def test_the_platform_never_seals_an_envelope_out_of_format(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: nothing was signed
        seal_command(_envelope(**changes), SIGNER)


def test_sealed_parameters_are_canonical() -> None:
    frame = seal_command(_envelope(parameters={"b": 1, "a": "é", "c": True, "d": 0.5}), SIGNER)
    assert b'{"a":"\xc3\xa9","b":1,"c":true,"d":0.5}' in frame


# --------------------------------------------------------------------------- results


def _result_signed(unsigned: bytes, key: ed25519.Ed25519PrivateKey = DEVICE_KEY) -> bytes:
    signature = key.sign(RESULT_CONTEXT + unsigned)
    return unsigned + struct.pack(">H", len(signature)) + signature


def _resigned(change: Callable[[bytes], bytes]) -> bytes:
    """The vector result with its unsigned part changed, signed again by the device."""
    return _result_signed(change(RESULT_FRAME[:151]))


ANOTHER_DEVICE = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0x0A]) * 32)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        # Executed -> rejected (or back): a gateway rewriting what the car did.
        pytest.param(
            _flip(RESULT_FRAME, RESULT_REGIONS["verdict"][0]), "bad-signature", id="verdict"
        ),
        # Move the answer to another job.
        pytest.param(
            _flip(RESULT_FRAME, _middle(RESULT_REGIONS["job_id"])), "bad-signature", id="job_id"
        ),
        # Claim the answer came from another vehicle or device.
        pytest.param(
            _flip(RESULT_FRAME, _middle(RESULT_REGIONS["vehicle_id"])),
            "bad-signature",
            id="vehicle_id",
        ),
        pytest.param(
            _flip(RESULT_FRAME, _middle(RESULT_REGIONS["device_id"])),
            "bad-signature",
            id="device_id",
        ),
        # Bind the answer to another envelope.
        pytest.param(
            _flip(RESULT_FRAME, RESULT_REGIONS["counter"][1] - 1), "bad-signature", id="counter"
        ),
        pytest.param(
            _flip(RESULT_FRAME, _middle(RESULT_REGIONS["envelope_digest"])),
            "bad-signature",
            id="envelope_digest",
        ),
        # Rewrite why the vehicle refused.
        pytest.param(
            _flip(RESULT_FRAME, RESULT_REGIONS["reason"][0]), "bad-signature", id="reason"
        ),
        pytest.param(
            _flip(RESULT_FRAME, RESULT_REGIONS["device_time_ms"][1] - 1),
            "bad-signature",
            id="device_time_ms",
        ),
        pytest.param(
            _flip(RESULT_FRAME, _middle(RESULT_REGIONS["signature"])),
            "bad-signature",
            id="signature",
        ),
        # Another device (a cloned or compromised TCU) answering for this one.
        pytest.param(
            _result_signed(RESULT_FRAME[:151], ANOTHER_DEVICE), "bad-signature", id="other device"
        ),
        # The command key's signature on a result: wrong key and wrong context.
        pytest.param(
            _result_signed(RESULT_FRAME[:151], COMMAND_KEY), "bad-signature", id="command key"
        ),
        # A verdict code the platform does not know, even if the device signed it.
        pytest.param(
            _resigned(lambda u: u[:138] + b"\x07" + u[139:]), "malformed", id="unknown verdict"
        ),
        # A reason with a control character (log injection), even if signed.
        pytest.param(
            _resigned(lambda u: u[:141] + b"o\n" + u[143:]), "malformed", id="reason control char"
        ),
        pytest.param(RESULT_FRAME + b"\x00", "malformed", id="trailing byte"),
        pytest.param(RESULT_FRAME[:-1], "malformed", id="truncated"),
        pytest.param(RESULT_FRAME + bytes(512), "malformed", id="oversize"),
        # A COMMAND reflected back as a result.
        pytest.param(FRAME, "malformed", id="command as result"),
        pytest.param(b"", "malformed", id="empty"),
    ],
)
def test_refused_result_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(ResultRefused) as refused:
        open_result(frame, DEVICE_KEY.public_key())
    assert refused.value.reason == reason


def test_every_result_truncation_is_malformed() -> None:
    for cut in range(len(RESULT_FRAME)):
        with pytest.raises(ResultRefused) as refused:
            open_result(RESULT_FRAME[:cut], DEVICE_KEY.public_key())
        assert refused.value.reason == "malformed", cut
        assert unverified_result_ids(RESULT_FRAME[:cut]) is None


def test_p256_devices_sign_results_with_ecdsa() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    frame = seal_result(RESULT, key)
    assert open_result(frame, key.public_key()) == RESULT
    # Verified with another P-256 key, or the Ed25519 key: refused.
    with pytest.raises(ResultRefused, match="bad-signature"):
        open_result(frame, ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(ResultRefused, match="bad-signature"):
        open_result(RESULT_FRAME, key.public_key())
    with pytest.raises(ResultRefused, match="bad-signature"):
        open_result(frame, DEVICE_KEY.public_key())
    # Device keys are P-256 only: another curve is the caller's bug.
    with pytest.raises(ValueError, match="P-256"):
        open_result(frame, ec.generate_private_key(ec.SECP384R1()).public_key())


def test_unverified_ids_are_only_claims() -> None:
    # The platform reads them to find the key; a forged frame still names what it likes.
    forged = _result_signed(RESULT_FRAME[:151], ANOTHER_DEVICE)
    assert unverified_result_ids(forged) == (JOB, DEVICE)
    with pytest.raises(ResultRefused):
        open_result(forged, DEVICE_KEY.public_key())


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"job_id": "job_" + "z" * 26}, "an answer about another job"),
        ({"vehicle_id": "veh_" + "z" * 26}, "the job was for another vehicle"),
        ({"device_id": "dev_" + "z" * 26}, "verified with another device's key than claimed"),
        ({"counter": 8}, "an answer to another delivery of the job"),
        ({"digest": hashlib.sha256(b"other").digest()}, "an answer to another envelope"),
    ],
)
def test_a_verified_result_must_answer_the_delivered_envelope(
    changes: dict[str, object], why: str
) -> None:
    expected: dict[str, object] = {
        "job_id": JOB,
        "vehicle_id": VEHICLE,
        "device_id": DEVICE,
        "counter": 7,
        "digest": bytes.fromhex(DIGEST_HEX),
    }
    result = open_result(RESULT_FRAME, DEVICE_KEY.public_key())
    check_result_binding(result, **expected)  # type: ignore[arg-type]
    with pytest.raises(ResultRefused) as refused:
        check_result_binding(result, **(expected | changes))  # type: ignore[arg-type]
    assert refused.value.reason == "mismatch", why


def test_refusal_reasons_are_a_closed_vocabulary() -> None:
    with pytest.raises(ValueError, match="unknown refusal reason"):
        EnvelopeRefused("nope")
    with pytest.raises(ValueError, match="unknown refusal reason"):
        ResultRefused("expired")


def test_results_out_of_format_are_never_signed() -> None:
    for bad in (
        replace(RESULT, reason=""),
        replace(RESULT, reason="x" * 65),
        replace(RESULT, reason="naïve"),
        replace(RESULT, envelope_digest=b"short"),
        replace(RESULT, device_id="veh_" + "a" * 26),
        replace(RESULT, counter=0),
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: nothing was signed
            seal_result(bad, DEVICE_KEY)
