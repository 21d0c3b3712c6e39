"""Command envelopes: the signed COMMAND frame (platform -> vehicle) and the signed RESULT
frame (vehicle -> platform). ``docs/vehicle-protocol.md`` section 6 is the normative text.

Both frames use the handshake's framing (``type u8 | version u8``, then ``u16 length ||
bytes`` fields and fixed big-endian integers, nothing after the last field) and end with a
signature over a context label followed by every byte before the signature field::

    COMMAND  02 01 vehicle_id job_id command parameters issued_at_ms:u64 expires_at_ms:u64
                   counter:u64 key_id signature            (Ed25519, the command service)
    RESULT   03 01 job_id vehicle_id device_id counter:u64 envelope_digest:32 verdict:u8
                   reason device_time_ms:u64 signature     (the device key)

The signature is verified before any field is interpreted: the parser only finds the field
boundaries (and reads the key id to choose the key), so nothing an attacker wrote is trusted.
Parsing is exact: every length is checked, nothing may follow the signature, and a frame that
verifies has exactly one encoding, so ``envelope_digest`` names one envelope.

Timing (expiry), counters and the vehicle id are judged by the vehicle
(:mod:`fleetward.sim.command_guard` is the reference); :class:`EnvelopeRefused` carries
their reasons too so that every refusal has one vocabulary.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fleetward.core.ids import is_id
from fleetward.gateway.device_client import DevicePrivateKey, sign
from fleetward.gateway.frames import COMMAND_FIRST_BYTE, RESULT_FIRST_BYTE
from fleetward.gateway.handshake import verify_signature

if TYPE_CHECKING:
    from fleetward.commands.signing import CommandSigner

ParameterValue = bool | int | float | str
DevicePublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

COMMAND_TYPE: Final = COMMAND_FIRST_BYTE
RESULT_TYPE: Final = RESULT_FIRST_BYTE
VERSION: Final = 0x01
COMMAND_CONTEXT: Final = b"fleetward-command-v1\x00"
RESULT_CONTEXT: Final = b"fleetward-command-result-v1\x00"
MAX_COMMAND_BYTES: Final = 2048
MAX_RESULT_BYTES: Final = 512
MAX_PARAMETERS_BYTES: Final = 1024
MAX_COMMAND_NAME_BYTES: Final = 64
MAX_KEY_ID_BYTES: Final = 64
MAX_REASON_BYTES: Final = 64
DIGEST_BYTES: Final = 32
ED25519_SIGNATURE_BYTES: Final = 64
MAX_ECDSA_SIGNATURE_BYTES: Final = 72
# Counters live in a signed 64-bit column on the platform; 0 is never assigned.
MAX_COUNTER: Final = 2**63 - 1
_INT_RANGE: Final = range(-(2**63), 2**63)  # parameter integers are int64
_U64: Final = struct.Struct(">Q")
_U16: Final = struct.Struct(">H")


class EnvelopeRefused(Exception):
    """A COMMAND frame that must not be acted on. ``reason`` is a stable code:

    decided by :func:`open_command`: ``malformed``, ``unknown-key``, ``bad-signature``;
    decided by the vehicle after that: ``wrong-vehicle``, ``expired``, ``not-yet-valid``,
    ``replayed``, ``stale-counter``.
    """

    REASONS: Final = frozenset(
        {
            "malformed",
            "unknown-key",
            "bad-signature",
            "wrong-vehicle",
            "expired",
            "not-yet-valid",
            "replayed",
            "stale-counter",
        }
    )

    def __init__(self, reason: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(reason)
        self.reason = reason


class ResultRefused(Exception):
    """A RESULT frame the platform must not record: ``malformed``, ``bad-signature``, or
    ``mismatch`` (it verifies but answers another job, envelope or device)."""

    REASONS: Final = frozenset({"malformed", "bad-signature", "mismatch"})

    def __init__(self, reason: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        super().__init__(reason)
        self.reason = reason


class _Malformed(ValueError):
    """A frame or value that breaks the format (internal: callers see the refusal types)."""


@dataclass(frozen=True, slots=True)
class CommandEnvelope:
    """What the command service signs for one delivery of one job to one vehicle."""

    vehicle_id: str
    job_id: str
    command: str  # a vehicle:* permission value, e.g. "vehicle:unlock"
    parameters: Mapping[str, ParameterValue]
    issued_at_ms: int
    expires_at_ms: int
    counter: int  # per vehicle, assigned by the platform, strictly increasing
    key_id: str


class ResultVerdict(StrEnum):
    EXECUTED = "executed"
    REJECTED_BY_VEHICLE = "rejected_by_vehicle"
    FAILED = "failed"


_VERDICT_CODES: Final = {
    ResultVerdict.EXECUTED: 0x00,
    ResultVerdict.REJECTED_BY_VEHICLE: 0x01,
    ResultVerdict.FAILED: 0x02,
}
_VERDICTS_BY_CODE: Final = {code: verdict for verdict, code in _VERDICT_CODES.items()}


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a vehicle signs about one envelope it received."""

    job_id: str
    vehicle_id: str
    device_id: str
    counter: int  # the envelope's
    envelope_digest: bytes  # SHA-256 of the COMMAND frame as received
    verdict: ResultVerdict
    reason: str  # printable ASCII, 1..64: "ok", or why the vehicle refused or failed
    device_time_ms: int


# --------------------------------------------------------------------------- codec


def _field(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise _Malformed("a field is at most 65535 bytes")
    return _U16.pack(len(value)) + value


class _Reader:
    """Reads a frame front to back; every overrun is :class:`_Malformed`."""

    __slots__ = ("_data", "position")

    def __init__(self, data: bytes, kind: int, limit: int) -> None:
        if len(data) > limit:
            raise _Malformed("frame too large")
        if len(data) < 2 or data[0] != kind or data[1] != VERSION:
            raise _Malformed("unexpected type or version")
        self._data = data
        self.position = 2

    def take(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self._data):
            raise _Malformed("truncated")
        value = self._data[self.position : end]
        self.position = end
        return value

    def field(self, low: int, high: int) -> bytes:
        (length,) = _U16.unpack(self.take(2))
        if not low <= length <= high:
            raise _Malformed("field length out of bounds")
        return self.take(length)

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def u8(self) -> int:
        return self.take(1)[0]

    def end(self) -> None:
        if self.position != len(self._data):
            raise _Malformed("trailing bytes")


def _text(value: bytes, limit: int) -> str:
    """Printable ASCII (0x20..0x7E), 1..limit bytes."""
    if not 1 <= len(value) <= limit or any(b < 0x20 or b > 0x7E for b in value):
        raise _Malformed("not 1..limit bytes of printable ASCII")
    return value.decode("ascii")


def _ascii(value: str, limit: int) -> bytes:
    """A str that must be printable ASCII, 1..limit bytes, as bytes (the sealing side)."""
    if not isinstance(value, str) or not value.isascii():
        raise _Malformed("not printable ASCII")
    encoded = value.encode("ascii")
    _text(encoded, limit)
    return encoded


def _identifier(value: str, prefix: str) -> str:
    if not is_id(value, prefix):
        raise _Malformed(f"not a {prefix} id")
    return value


def _counter(value: int) -> int:
    if not 1 <= value <= MAX_COUNTER:
        raise _Malformed("counter out of range")
    return value


def _check_value(value: object) -> ParameterValue:
    """One parameter value: bool, int64, finite float or UTF-8-encodable string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value not in _INT_RANGE:
            raise _Malformed("parameter integer outside int64")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):  # "1e400" parses as inf
            raise _Malformed("parameter float not finite")
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON, not text
            raise _Malformed("parameter string not UTF-8") from None
        return value
    raise _Malformed("parameter value is not bool, int, float or string")


def canonical_parameters(parameters: Mapping[str, ParameterValue]) -> bytes:
    """The parameters as the platform signs them: a flat JSON object, sorted keys, no
    whitespace, UTF-8, at most ``MAX_PARAMETERS_BYTES``."""
    flat: dict[str, ParameterValue] = {}
    for key, value in parameters.items():
        if not isinstance(key, str):
            raise _Malformed("parameter names are strings")
        _check_value(key)
        flat[key] = _check_value(value)
    encoded = json.dumps(
        flat, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    if len(encoded) > MAX_PARAMETERS_BYTES:
        raise _Malformed("parameters too large")
    return encoded


def _reject_constant(name: str) -> object:
    raise _Malformed(f"JSON constant {name} is not a number")


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Malformed("duplicate parameter name")
    return result


def _parse_parameters(raw: bytes) -> Mapping[str, ParameterValue]:
    """Typed, not re-canonicalised: the device accepts exactly the bytes the platform signed,
    but only a flat object of the four value types (no null, array or nested object)."""
    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_pairs, parse_constant=_reject_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Malformed("parameters are not a JSON object") from None
    if not isinstance(value, dict):
        raise _Malformed("parameters are not a JSON object")
    parameters: dict[str, ParameterValue] = {}
    for key, item in value.items():
        _check_value(key)
        parameters[key] = _check_value(item)
    return MappingProxyType(parameters)


def envelope_digest(frame: bytes) -> bytes:
    """SHA-256 of a whole COMMAND frame: what a RESULT binds to."""
    return hashlib.sha256(frame).digest()


# --------------------------------------------------------------------------- COMMAND


def _unsigned_command(envelope: CommandEnvelope) -> bytes:
    _identifier(envelope.vehicle_id, "veh")
    _identifier(envelope.job_id, "job")
    command = _ascii(envelope.command, MAX_COMMAND_NAME_BYTES)
    key_id = _ascii(envelope.key_id, MAX_KEY_ID_BYTES)
    _counter(envelope.counter)
    if not 0 <= envelope.issued_at_ms < envelope.expires_at_ms < 2**64:
        raise _Malformed("issued_at_ms must be before expires_at_ms")
    return b"".join(
        (
            bytes((COMMAND_TYPE, VERSION)),
            _field(envelope.vehicle_id.encode("ascii")),
            _field(envelope.job_id.encode("ascii")),
            _field(command),
            _field(canonical_parameters(envelope.parameters)),
            _U64.pack(envelope.issued_at_ms),
            _U64.pack(envelope.expires_at_ms),
            _U64.pack(envelope.counter),
            _field(key_id),
        )
    )


def seal_command(envelope: CommandEnvelope, signer: CommandSigner) -> bytes:
    """The COMMAND frame for ``envelope`` (platform side). ValueError if any field is out of
    the format (a bug in the caller: nothing is signed)."""
    if envelope.key_id != signer.key_id:
        raise ValueError("the envelope names another signing key")
    unsigned = _unsigned_command(envelope)
    frame = unsigned + _field(signer.sign(COMMAND_CONTEXT + unsigned))
    if len(frame) > MAX_COMMAND_BYTES:
        raise _Malformed("command frame too large")
    return frame


def open_command(frame: bytes, keys: Mapping[str, ed25519.Ed25519PublicKey]) -> CommandEnvelope:
    """Verify a COMMAND frame (vehicle side) and return its envelope.

    Order: size, type and version, field boundaries, key id -> trusted key, signature; only
    then are the fields interpreted. Raises :class:`EnvelopeRefused` (``malformed``,
    ``unknown-key``, ``bad-signature``). Expiry, counter and vehicle are the caller's checks.
    """
    try:
        reader = _Reader(frame, COMMAND_TYPE, MAX_COMMAND_BYTES)
        vehicle_id = reader.field(1, 64)
        job_id = reader.field(1, 64)
        command = reader.field(1, MAX_COMMAND_NAME_BYTES)
        parameters = reader.field(2, MAX_PARAMETERS_BYTES)
        issued_at_ms, expires_at_ms, counter = reader.u64(), reader.u64(), reader.u64()
        key_id = _text(reader.field(1, MAX_KEY_ID_BYTES), MAX_KEY_ID_BYTES)
        signed_end = reader.position
        signature = reader.field(ED25519_SIGNATURE_BYTES, ED25519_SIGNATURE_BYTES)
        reader.end()
    except _Malformed:
        raise EnvelopeRefused("malformed") from None
    key = keys.get(key_id)
    if key is None:
        raise EnvelopeRefused("unknown-key")
    try:
        key.verify(signature, COMMAND_CONTEXT + frame[:signed_end])
    except InvalidSignature:
        raise EnvelopeRefused("bad-signature") from None
    # Authenticated from here on: the platform wrote these bytes. A signed frame that still
    # breaks the format is a platform bug, refused all the same.
    try:
        if not issued_at_ms < expires_at_ms:
            raise _Malformed("issued_at_ms must be before expires_at_ms")
        return CommandEnvelope(
            vehicle_id=_identifier(_text(vehicle_id, 64), "veh"),
            job_id=_identifier(_text(job_id, 64), "job"),
            command=_text(command, MAX_COMMAND_NAME_BYTES),
            parameters=_parse_parameters(parameters),
            issued_at_ms=issued_at_ms,
            expires_at_ms=expires_at_ms,
            counter=_counter(counter),
            key_id=key_id,
        )
    except _Malformed:
        raise EnvelopeRefused("malformed") from None


# --------------------------------------------------------------------------- RESULT


def _unsigned_result(result: CommandResult) -> bytes:
    _identifier(result.job_id, "job")
    _identifier(result.vehicle_id, "veh")
    _identifier(result.device_id, "dev")
    _counter(result.counter)
    if len(result.envelope_digest) != DIGEST_BYTES:
        raise _Malformed("an envelope digest is 32 bytes")
    reason = _ascii(result.reason, MAX_REASON_BYTES)
    if not 0 <= result.device_time_ms < 2**64:
        raise _Malformed("device time out of range")
    return b"".join(
        (
            bytes((RESULT_TYPE, VERSION)),
            _field(result.job_id.encode("ascii")),
            _field(result.vehicle_id.encode("ascii")),
            _field(result.device_id.encode("ascii")),
            _U64.pack(result.counter),
            result.envelope_digest,
            bytes((_VERDICT_CODES[ResultVerdict(result.verdict)],)),
            _field(reason),
            _U64.pack(result.device_time_ms),
        )
    )


def seal_result(result: CommandResult, device_key: DevicePrivateKey) -> bytes:
    """The RESULT frame for ``result``, signed with the device key (vehicle side)."""
    unsigned = _unsigned_result(result)
    return unsigned + _field(sign(device_key, RESULT_CONTEXT + unsigned))


@dataclass(frozen=True, slots=True)
class _ResultFields:
    job_id: bytes
    vehicle_id: bytes
    device_id: bytes
    counter: int
    digest: bytes
    verdict: int
    reason: bytes
    device_time_ms: int
    signed_end: int
    signature: bytes


def _split_result(frame: bytes) -> _ResultFields:
    reader = _Reader(frame, RESULT_TYPE, MAX_RESULT_BYTES)
    job_id = reader.field(1, 64)
    vehicle_id = reader.field(1, 64)
    device_id = reader.field(1, 64)
    counter = reader.u64()
    digest = reader.take(DIGEST_BYTES)
    verdict = reader.u8()
    reason = reader.field(1, MAX_REASON_BYTES)
    device_time_ms = reader.u64()
    signed_end = reader.position
    signature = reader.field(1, MAX_ECDSA_SIGNATURE_BYTES)
    reader.end()
    return _ResultFields(
        job_id,
        vehicle_id,
        device_id,
        counter,
        digest,
        verdict,
        reason,
        device_time_ms,
        signed_end,
        signature,
    )


def unverified_result_ids(frame: bytes) -> tuple[str, str] | None:
    """``(job_id, device_id)`` as a RESULT frame claims them, NOT verified: only for finding
    the job and the device key to verify it with (:func:`open_result`). None if the frame is
    not even well-formed."""
    try:
        fields = _split_result(frame)
        return (
            _identifier(_text(fields.job_id, 64), "job"),
            _identifier(_text(fields.device_id, 64), "dev"),
        )
    except _Malformed:
        return None


def _verify_device_signature(key: DevicePublicKey, signature: bytes, data: bytes) -> None:
    """The handshake's check (the same device key proves the session): raises
    InvalidSignature, or ValueError for a key no device may hold."""
    p256 = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    if not (p256 or isinstance(key, ed25519.Ed25519PublicKey)):
        raise ValueError("device keys are P-256 or Ed25519")
    if not verify_signature(key, signature, data):
        raise InvalidSignature


def open_result(frame: bytes, device_public_key: DevicePublicKey) -> CommandResult:
    """Verify a RESULT frame with the key of the device that should have sent it (platform
    side). Raises :class:`ResultRefused` (``malformed``, ``bad-signature``). The caller then
    checks that it answers the envelope it delivered (:func:`check_result_binding`)."""
    try:
        fields = _split_result(frame)
    except _Malformed:
        raise ResultRefused("malformed") from None
    try:
        _verify_device_signature(
            device_public_key, fields.signature, RESULT_CONTEXT + frame[: fields.signed_end]
        )
    except InvalidSignature:
        raise ResultRefused("bad-signature") from None
    try:
        verdict = _VERDICTS_BY_CODE.get(fields.verdict)
        if verdict is None:
            raise _Malformed("unknown verdict")
        return CommandResult(
            job_id=_identifier(_text(fields.job_id, 64), "job"),
            vehicle_id=_identifier(_text(fields.vehicle_id, 64), "veh"),
            device_id=_identifier(_text(fields.device_id, 64), "dev"),
            counter=_counter(fields.counter),
            envelope_digest=fields.digest,
            verdict=verdict,
            reason=_text(fields.reason, MAX_REASON_BYTES),
            device_time_ms=fields.device_time_ms,
        )
    except _Malformed:
        raise ResultRefused("malformed") from None


def check_result_binding(
    result: CommandResult,
    *,
    job_id: str,
    vehicle_id: str,
    device_id: str,
    counter: int,
    digest: bytes,
) -> None:
    """Raise ``ResultRefused("mismatch")`` unless a verified ``result`` answers exactly the
    envelope delivered for ``job_id`` (its vehicle, counter and digest) and comes from the
    device the platform verified it with. Without this, one device's signed answer about one
    job could be recorded against another job or vehicle."""
    claimed = (result.job_id, result.vehicle_id, result.device_id, result.counter)
    if claimed != (job_id, vehicle_id, device_id, counter) or not hmac.compare_digest(
        result.envelope_digest, digest
    ):
        raise ResultRefused("mismatch")
