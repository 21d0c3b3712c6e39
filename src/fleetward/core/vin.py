"""Vehicle Identification Numbers.

This module owns what a VIN is in Fleetward: the strict parser every boundary uses
(:func:`parse_vin`), the validated value type (:class:`Vin`), the ISO 3780 region of a
WMI, the ISO 3779 / 49 CFR 565 check digit, and the :class:`InvalidVin` problem with its
stable reason codes (:class:`VinFault`). It also builds valid VINs for demo data and tests
(:func:`make_vin`, :func:`random_vin`).

A VIN identifies the vehicle a command is sent to, so input is never normalised: a
lower-case, padded or look-alike VIN is rejected rather than "fixed", because a silent
fix-up can make two different inputs address the same car.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from fleetward.core.errors import InvalidInput

VIN_LENGTH: Final = 17

# Anything longer is rejected before it is scanned, so hostile input costs O(1).
MAX_INPUT_LENGTH: Final = 64

# ISO 3779 excludes I, O and Q because they are easily mistaken for 1 and 0.
FORBIDDEN_LETTERS: Final = frozenset("IOQ")

# Sorted so that random_vin draws the same VINs from the same seed on every platform.
ALPHABET: Final = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
_ALLOWED: Final = frozenset(ALPHABET)
_ASCII_LOWER: Final = frozenset("abcdefghijklmnopqrstuvwxyz")

_CHECK_DIGIT_INDEX: Final = 8  # position 9
_PLACEHOLDER_CHECK_DIGIT: Final = "0"  # weight 0, so it never affects the computed digit

_TRANSLITERATION: Final[dict[str, int]] = {
    **{digit: int(digit) for digit in "0123456789"},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS: Final = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


class VinFault(StrEnum):
    """Stable machine-readable reasons a VIN is rejected; clients may switch on them."""

    LENGTH = "length"
    LOWERCASE = "lowercase"
    WHITESPACE = "whitespace"
    FORBIDDEN_LETTER = "forbidden-letter"
    INVALID_CHARACTER = "invalid-character"
    CHECK_DIGIT = "check-digit"
    NOT_A_STRING = "not-a-string"


class InvalidVin(InvalidInput):
    """A VIN failed validation.

    ``detail`` names the problem and, where there is one, the 1-based position; it never
    quotes the input beyond a single character already known to be printable ASCII, so a
    hostile value cannot be reflected into responses or logs.
    """

    code = "invalid-vin"
    title = "Invalid VIN"

    def __init__(self, detail: str, *, reason: VinFault, position: int | None = None) -> None:
        super().__init__(
            detail,
            reason=reason.value,
            extra=None if position is None else {"position": position},
        )
        self.fault = reason
        self.position = position


class VinRegion(StrEnum):
    """Region of manufacture from the first WMI character (ISO 3780)."""

    NORTH_AMERICA = "north-america"
    CHINA = "china"
    EUROPE = "europe"
    ASIA = "asia"
    AFRICA = "africa"
    OCEANIA = "oceania"
    SOUTH_AMERICA = "south-america"
    UNKNOWN = "unknown"


# Regions whose registration rules make the position-9 check digit mandatory
# (49 CFR 565 for North America, GB 16735 for China). Elsewhere position 9 is free.
CHECK_DIGIT_REGIONS: Final = frozenset({VinRegion.NORTH_AMERICA, VinRegion.CHINA})


def region_of(first_char: str) -> VinRegion:
    """Region for a WMI's first character; ``UNKNOWN`` for unassigned codes such as ``0``."""
    if first_char == "L":
        # Inside the Asian J-R block, but China mandates the check digit, so it is kept apart.
        return VinRegion.CHINA
    if "A" <= first_char <= "H":
        return VinRegion.AFRICA
    if "J" <= first_char <= "R":
        return VinRegion.ASIA
    if "S" <= first_char <= "Z":
        return VinRegion.EUROPE
    if "1" <= first_char <= "5":
        return VinRegion.NORTH_AMERICA
    if first_char in ("6", "7"):
        return VinRegion.OCEANIA
    if first_char in ("8", "9"):
        return VinRegion.SOUTH_AMERICA
    return VinRegion.UNKNOWN


def _check_shape(raw: object) -> str:
    """Every rule except the check digit, in the documented order; returns an exact ``str``.

    The order matters to clients: the reported reason is the first rule broken.
    """
    if not isinstance(raw, str):
        raise InvalidVin(
            f"VIN must be a string, got {type(raw).__name__}", reason=VinFault.NOT_A_STRING
        )
    # A str subclass could override comparisons or hashing; work on a plain copy.
    value = str.__str__(raw)
    if len(value) > MAX_INPUT_LENGTH:
        raise InvalidVin(
            f"VIN must be exactly {VIN_LENGTH} characters, got {len(value)}",
            reason=VinFault.LENGTH,
        )
    for index, char in enumerate(value):
        if char.isspace():
            raise InvalidVin(
                f"VIN must not contain whitespace (found at position {index + 1})",
                reason=VinFault.WHITESPACE,
                position=index + 1,
            )
    if len(value) != VIN_LENGTH:
        raise InvalidVin(
            f"VIN must be exactly {VIN_LENGTH} characters, got {len(value)}",
            reason=VinFault.LENGTH,
        )
    for index, char in enumerate(value):
        if char in _ASCII_LOWER:
            raise InvalidVin(
                f"VIN must be upper case (lower-case letter at position {index + 1})",
                reason=VinFault.LOWERCASE,
                position=index + 1,
            )
    for index, char in enumerate(value):
        if char in FORBIDDEN_LETTERS:
            raise InvalidVin(
                f"VIN must not contain I, O or Q (found {char!r} at position {index + 1})",
                reason=VinFault.FORBIDDEN_LETTER,
                position=index + 1,
            )
    for index, char in enumerate(value):
        if char not in _ALLOWED:
            # The code point, not the character: look-alikes and control bytes stay visible
            # and cannot corrupt a log line.
            raise InvalidVin(
                f"VIN may only contain A-Z (except I, O, Q) and 0-9 "
                f"(found U+{ord(char):04X} at position {index + 1})",
                reason=VinFault.INVALID_CHARACTER,
                position=index + 1,
            )
    return value


def _check_digit_of(value: str) -> str:
    """Check digit of a VIN already known to have a valid shape."""
    total = sum(
        _TRANSLITERATION[char] * weight for char, weight in zip(value, _WEIGHTS, strict=True)
    )
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def compute_check_digit(vin: str) -> str:
    """The position-9 check digit ``vin`` should carry (``"0"``-``"9"`` or ``"X"``).

    ``vin`` must be 17 valid VIN characters; its own position 9 is ignored (weight 0), so a
    VIN with a wrong or placeholder check digit can be passed in.

    :raises InvalidVin: if ``vin`` is not shaped like a VIN.
    """
    return _check_digit_of(_check_shape(vin))


@dataclass(frozen=True, slots=True)
class Vin:
    """A validated VIN. Constructing one validates it, so an invalid ``Vin`` cannot exist."""

    value: str

    def __post_init__(self) -> None:
        value = _check_shape(self.value)
        region = region_of(value[0])
        if region in CHECK_DIGIT_REGIONS:
            expected = _check_digit_of(value)
            actual = value[_CHECK_DIGIT_INDEX]
            if actual != expected:
                raise InvalidVin(
                    f"VIN check digit at position {_CHECK_DIGIT_INDEX + 1} is {actual!r} "
                    f"but should be {expected!r}",
                    reason=VinFault.CHECK_DIGIT,
                    position=_CHECK_DIGIT_INDEX + 1,
                )
        # Frozen dataclass: store the plain-str copy in case a str subclass was passed.
        object.__setattr__(self, "value", value)

    def __str__(self) -> str:
        return self.value

    @property
    def wmi(self) -> str:
        """World Manufacturer Identifier, positions 1-3."""
        return self.value[0:3]

    @property
    def vds(self) -> str:
        """Vehicle Descriptor Section, positions 4-9 (including the check digit)."""
        return self.value[3:9]

    @property
    def vis(self) -> str:
        """Vehicle Identifier Section, positions 10-17."""
        return self.value[9:17]

    @property
    def region(self) -> VinRegion:
        return region_of(self.value[0])

    @property
    def check_digit_required(self) -> bool:
        return self.region in CHECK_DIGIT_REGIONS


def parse_vin(raw: object) -> Vin:
    """Validate untrusted input strictly and return a :class:`Vin`.

    Checks, first failure wins: not-a-string, whitespace, length, lower case, I/O/Q,
    other characters, then the check digit where the region mandates it. Input longer than
    64 characters is rejected with ``length`` before it is scanned.

    :raises InvalidVin: with ``reason`` set to a :class:`VinFault` value.
    """
    if not isinstance(raw, str):
        raise InvalidVin(
            f"VIN must be a string, got {type(raw).__name__}", reason=VinFault.NOT_A_STRING
        )
    return Vin(raw)


def _require_part(name: str, part: object, length: int) -> str:
    if not isinstance(part, str):
        raise InvalidVin(
            f"{name} must be a string, got {type(part).__name__}", reason=VinFault.NOT_A_STRING
        )
    if len(part) != length:
        raise InvalidVin(
            f"{name} must be exactly {length} characters, got {len(part)}",
            reason=VinFault.LENGTH,
        )
    return part


def make_vin(wmi: str, vds: str, vis: str) -> Vin:
    """Build a VIN from its parts with the correct check digit at position 9.

    ``vds`` is positions 4-8 only (5 characters). The check digit is always inserted, so the
    result is valid in every region, not just those that mandate it.

    :raises InvalidVin: if a part has the wrong length or a character a VIN may not contain.
    """
    body = (
        _require_part("WMI", wmi, 3)
        + _require_part("VDS", vds, 5)
        + _PLACEHOLDER_CHECK_DIGIT
        + _require_part("VIS", vis, 8)
    )
    check_digit = compute_check_digit(body)
    return parse_vin(body[:_CHECK_DIGIT_INDEX] + check_digit + body[_CHECK_DIGIT_INDEX + 1 :])


def random_vin(rng: random.Random, wmi: str = "1FW") -> Vin:
    """A random valid VIN under ``wmi``, deterministic for a seeded ``rng``.

    For demo data and test factories only: the serial part is not unique or realistic.
    """
    vds = "".join(rng.choice(ALPHABET) for _ in range(5))
    vis = "".join(rng.choice(ALPHABET) for _ in range(8))
    return make_vin(wmi, vds, vis)
