"""Tests for fleetward.core.vin: strict VIN parsing, regions, check digits and factories."""

from __future__ import annotations

import dataclasses
import random

import pytest

from fleetward.core.errors import FleetwardError, InvalidInput
from fleetward.core.vin import (
    ALPHABET,
    InvalidVin,
    Vin,
    VinFault,
    VinRegion,
    compute_check_digit,
    make_vin,
    parse_vin,
    random_vin,
)

CLASSIC_NA = "1M8GDM9AXKP042788"
# Same VIN with a wrong check digit (X -> 2); the body after the WMI is reused below.
CLASSIC_NA_BAD_DIGIT = "1M8GDM9A2KP042788"
# Same body and same wrong digit under a European WMI, where position 9 is free.
EUROPEAN_SAME_BODY = "WVW" + CLASSIC_NA_BAD_DIGIT[3:]
# A Chinese-WMI VIN with its correct check digit "8", and the same VIN with a wrong one.
CHINA_GOOD = "LVSHCAMB85E123456"
CHINA_BAD_DIGIT = "LVSHCAMB05E123456"

# ISO 3779 transliteration, written out independently of the module under test.
TRANSLITERATION = {
    **{d: int(d) for d in "0123456789"},
    "A": 1, "B": 2, "C": 3, "D": 4, "E": 5, "F": 6, "G": 7, "H": 8,
    "J": 1, "K": 2, "L": 3, "M": 4, "N": 5, "P": 7, "R": 9,
    "S": 2, "T": 3, "U": 4, "V": 5, "W": 6, "X": 7, "Y": 8, "Z": 9,
}  # fmt: skip


def _expect_fault(raw: object, fault: VinFault) -> InvalidVin:
    with pytest.raises(InvalidVin) as caught:
        parse_vin(raw)
    assert caught.value.fault is fault
    assert caught.value.reason == fault.value
    return caught.value


def _replace(vin: str, position: int, char: str) -> str:
    """``vin`` with the 1-based ``position`` replaced by ``char``."""
    return vin[: position - 1] + char + vin[position:]


# --- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        # Rule: the textbook North American VIN, check digit "X" (remainder 10).
        pytest.param(CLASSIC_NA, VinRegion.NORTH_AMERICA, id="classic-na-x"),
        # Rule: all ones is valid (check digit 1), a common edge case in validators.
        pytest.param("11111111111111111", VinRegion.NORTH_AMERICA, id="all-ones"),
        # Rule: real Honda VIN with a numeric check digit must be accepted.
        pytest.param("1HGCM82633A004352", VinRegion.NORTH_AMERICA, id="honda-na"),
        # Rule: real GM VIN from WMI "5" (still North America, check digit enforced).
        pytest.param("5GZCZ43D13S812715", VinRegion.NORTH_AMERICA, id="gm-na-5"),
        # Rule: real Acura VIN from Japan; valid digit, region Asia.
        pytest.param("JH4KA7561PC008269", VinRegion.ASIA, id="acura-jp"),
        # Rule: real Porsche VIN with a letter at position 9; Europe does not mandate a digit.
        pytest.param("WP0ZZZ99ZTS392124", VinRegion.EUROPE, id="porsche-eu-letter-pos9"),
        # Rule: same body as a rejected NA VIN is accepted under a European WMI.
        pytest.param(EUROPEAN_SAME_BODY, VinRegion.EUROPE, id="eu-skips-check-digit"),
        # Rule: Chinese VIN built with the correct digit (GB 16735) is accepted.
        pytest.param(CHINA_GOOD, VinRegion.CHINA, id="china"),
        # Rule: unassigned WMI "0" parses but maps to UNKNOWN, with no check digit enforced.
        pytest.param("0AAAAAAAZAAAAAAAA", VinRegion.UNKNOWN, id="unassigned-0"),
    ],
)
def test_parse_vin_accepts_valid_vins(raw: str, region: VinRegion) -> None:
    vin = parse_vin(raw)
    assert vin.value == raw
    assert str(vin) == raw
    assert vin.region is region


def test_european_acceptance_is_not_an_accident_of_the_digit() -> None:
    # Threat: a test that passes only because the digit happens to be right for "WVW" too.
    assert compute_check_digit(EUROPEAN_SAME_BODY) != EUROPEAN_SAME_BODY[8]
    _expect_fault(CLASSIC_NA_BAD_DIGIT, VinFault.CHECK_DIGIT)
    assert parse_vin(EUROPEAN_SAME_BODY).check_digit_required is False


# --- rejected ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fault", "position"),
    [
        # Threat: typo or forged VIN addressing a different car; NA mandates the check digit.
        pytest.param(CLASSIC_NA_BAD_DIGIT, VinFault.CHECK_DIGIT, 9, id="na-wrong-digit"),
        # Rule: China mandates the check digit too (GB 16735).
        pytest.param(CHINA_BAD_DIGIT, VinFault.CHECK_DIGIT, 9, id="china-wrong-digit"),
        # Rule: a lower-case letter in place of the check digit "X" is lower case, not a digit.
        pytest.param(_replace(CLASSIC_NA, 9, "x"), VinFault.LOWERCASE, 9, id="lower-x-digit"),
        # Rule: never silently normalise case; two spellings must not address one car.
        pytest.param(CLASSIC_NA.lower(), VinFault.LOWERCASE, 2, id="all-lowercase"),
        # Rule: a single lower-case letter anywhere is rejected.
        pytest.param(_replace(CLASSIC_NA, 17, "a"), VinFault.LOWERCASE, 17, id="one-lower"),
        # Rule: leading whitespace is not trimmed.
        pytest.param(" " + CLASSIC_NA, VinFault.WHITESPACE, 1, id="leading-space"),
        # Rule: trailing newline (copy-paste, header/log injection) is not trimmed.
        pytest.param(CLASSIC_NA + "\n", VinFault.WHITESPACE, 18, id="trailing-newline"),
        # Rule: inner whitespace in an otherwise 17-character value.
        pytest.param(_replace(CLASSIC_NA, 10, " "), VinFault.WHITESPACE, 10, id="inner-space"),
        # Rule: tab counts as whitespace.
        pytest.param(_replace(CLASSIC_NA, 4, "\t"), VinFault.WHITESPACE, 4, id="tab"),
        # Threat: Unicode whitespace (NBSP) that looks like nothing in a UI.
        pytest.param(_replace(CLASSIC_NA, 5, "\u00a0"), VinFault.WHITESPACE, 5, id="nbsp"),
        # Threat: ideographic space from CJK input methods.
        pytest.param(_replace(CLASSIC_NA, 6, "\u3000"), VinFault.WHITESPACE, 6, id="ideo-space"),
        # Rule: 16 characters is too short.
        pytest.param(CLASSIC_NA[:16], VinFault.LENGTH, None, id="16-chars"),
        # Rule: 18 characters is too long.
        pytest.param(CLASSIC_NA + "1", VinFault.LENGTH, None, id="18-chars"),
        # Rule: empty string is a length fault, not a crash.
        pytest.param("", VinFault.LENGTH, None, id="empty"),
        # Rule: ISO 3779 forbids I (confusable with 1).
        pytest.param(_replace(CLASSIC_NA, 12, "I"), VinFault.FORBIDDEN_LETTER, 12, id="letter-I"),
        # Rule: ISO 3779 forbids O (confusable with 0).
        pytest.param(_replace(CLASSIC_NA, 13, "O"), VinFault.FORBIDDEN_LETTER, 13, id="letter-O"),
        # Rule: ISO 3779 forbids Q (confusable with 0).
        pytest.param(_replace(CLASSIC_NA, 14, "Q"), VinFault.FORBIDDEN_LETTER, 14, id="letter-Q"),
        # Threat: homoglyph spoofing with Cyrillic capital A (U+0410).
        pytest.param(
            _replace(CLASSIC_NA, 5, "\u0410"), VinFault.INVALID_CHARACTER, 5, id="cyrillic-A"
        ),
        # Threat: fullwidth digit one (U+FF11) that int()/isdigit() would accept.
        pytest.param(
            _replace(CLASSIC_NA, 1, "\uff11"), VinFault.INVALID_CHARACTER, 1, id="fullwidth-1"
        ),
        # Threat: Arabic-Indic digit (U+0661) that str.isdigit() accepts.
        pytest.param(
            _replace(CLASSIC_NA, 3, "\u0661"), VinFault.INVALID_CHARACTER, 3, id="arabic-digit"
        ),
        # Threat: NUL byte truncating the value in C libraries or databases.
        pytest.param(_replace(CLASSIC_NA, 8, "\x00"), VinFault.INVALID_CHARACTER, 8, id="nul"),
        # Threat: zero-width space, invisible and not str.isspace().
        pytest.param(
            _replace(CLASSIC_NA, 2, "\u200b"), VinFault.INVALID_CHARACTER, 2, id="zero-width"
        ),
        # Threat: Turkish dotless i is not ASCII lower case and must not slip through as "I".
        pytest.param(
            _replace(CLASSIC_NA, 7, "\u0131"), VinFault.INVALID_CHARACTER, 7, id="dotless-i"
        ),
        # Threat: SQL LIKE wildcard smuggled into a lookup key.
        pytest.param(_replace(CLASSIC_NA, 17, "%"), VinFault.INVALID_CHARACTER, 17, id="percent"),
        # Threat: punctuation used as a separator ("1M8-GDM...") must not be stripped.
        pytest.param(_replace(CLASSIC_NA, 4, "-"), VinFault.INVALID_CHARACTER, 4, id="hyphen"),
    ],
)
def test_parse_vin_rejects(raw: str, fault: VinFault, position: int | None) -> None:
    error = _expect_fault(raw, fault)
    assert error.position == position
    if position is not None:
        assert f"position {position}" in error.detail
        assert error.to_problem()["position"] == position


@pytest.mark.parametrize(
    "raw",
    [
        # Rule: None (missing JSON field) is not a VIN.
        pytest.param(None, id="none"),
        # Rule: a number (JSON 11111111111111111) is not coerced to a string.
        pytest.param(11111111111111111, id="int"),
        # Rule: bytes are not decoded implicitly.
        pytest.param(CLASSIC_NA.encode(), id="bytes"),
        # Rule: bytearray is not decoded implicitly.
        pytest.param(bytearray(CLASSIC_NA.encode()), id="bytearray"),
        # Rule: a list of characters is not joined.
        pytest.param(list(CLASSIC_NA), id="list"),
    ],
)
def test_parse_vin_rejects_non_strings(raw: object) -> None:
    error = _expect_fault(raw, VinFault.NOT_A_STRING)
    assert type(raw).__name__ in error.detail


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        # Rule order: whitespace is reported before lower case.
        pytest.param(" " + CLASSIC_NA.lower()[1:], VinFault.WHITESPACE, id="ws-before-lower"),
        # Rule order: whitespace is reported before length.
        pytest.param(" " + CLASSIC_NA, VinFault.WHITESPACE, id="ws-before-length"),
        # Rule order: length is reported before lower case.
        pytest.param(CLASSIC_NA.lower()[:16], VinFault.LENGTH, id="length-before-lower"),
        # Rule order: lower case before forbidden letter (lower-case "o" is LOWERCASE).
        pytest.param(_replace(CLASSIC_NA, 2, "o"), VinFault.LOWERCASE, id="lower-o"),
        # Rule order: lower case anywhere wins over a forbidden letter earlier.
        pytest.param(
            _replace(_replace(CLASSIC_NA, 2, "I"), 16, "a"), VinFault.LOWERCASE, id="lower-first"
        ),
        # Rule order: forbidden letter before invalid character, wherever each is.
        pytest.param(
            _replace(_replace(CLASSIC_NA, 2, "\u0410"), 16, "Q"),
            VinFault.FORBIDDEN_LETTER,
            id="forbidden-before-invalid",
        ),
        # Rule order: invalid character before check digit.
        pytest.param(
            _replace(CLASSIC_NA_BAD_DIGIT, 17, "*"),
            VinFault.INVALID_CHARACTER,
            id="invalid-before-digit",
        ),
    ],
)
def test_first_broken_rule_is_reported(raw: str, fault: VinFault) -> None:
    _expect_fault(raw, fault)


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        # Threat: resource exhaustion; a 10,000-character value is rejected as LENGTH.
        pytest.param("A" * 10_000, VinFault.LENGTH, id="10k-letters"),
        # Threat: huge whitespace input must hit the cap before the whitespace scan.
        pytest.param(" " * 10_000, VinFault.LENGTH, id="10k-spaces"),
        # Boundary: 65 characters is over the cap, even with whitespace inside.
        pytest.param(" " * 65, VinFault.LENGTH, id="65-spaces"),
        # Boundary: 64 characters is still scanned, so whitespace is reported.
        pytest.param(" " * 64, VinFault.WHITESPACE, id="64-spaces"),
    ],
)
def test_oversized_input_is_rejected_before_scanning(raw: str, fault: VinFault) -> None:
    error = _expect_fault(raw, fault)
    # Threat: reflecting a huge payload back into responses or logs.
    assert len(error.detail) < 120


@pytest.mark.parametrize(
    "raw",
    [
        # Threat: log/header injection via CR/LF reflected in the error detail.
        pytest.param(CLASSIC_NA[:10] + "\r\nX-Evil: 1", id="crlf"),
        # Threat: homoglyph echoed back, making the error itself misleading.
        pytest.param(_replace(CLASSIC_NA, 5, "\u0410"), id="cyrillic"),
        # Threat: NUL byte reaching log sinks.
        pytest.param(_replace(CLASSIC_NA, 8, "\x00"), id="nul"),
        # Threat: markup reflected into an HTML error page.
        pytest.param("<script>alert(1)", id="markup"),
        # Threat: the rejected VIN body itself is not reflected.
        pytest.param(CLASSIC_NA_BAD_DIGIT, id="bad-digit"),
    ],
)
def test_detail_never_echoes_the_input(raw: str) -> None:
    with pytest.raises(InvalidVin) as caught:
        parse_vin(raw)
    detail = caught.value.detail
    assert raw not in detail
    assert detail.isascii()
    assert detail.isprintable()


def test_parse_vin_rejects_an_already_parsed_vin() -> None:
    # Rule: a Vin object is not raw text; callers pass str(vin) or use the Vin directly.
    _expect_fault(parse_vin(CLASSIC_NA), VinFault.NOT_A_STRING)


def test_str_subclass_is_stored_as_plain_str() -> None:
    # Threat: a str subclass with custom equality/hash smuggled into a Vin used as a key.
    class Sneaky(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    vin = parse_vin(Sneaky(CLASSIC_NA))
    assert type(vin.value) is str
    assert vin.value != "something else"


def test_constructing_vin_directly_validates() -> None:
    # Rule: Vin(...) cannot bypass parse_vin, so an invalid Vin can never exist.
    with pytest.raises(InvalidVin) as caught:
        Vin(CLASSIC_NA.lower())
    assert caught.value.fault is VinFault.LOWERCASE


# --- the Vin value ----------------------------------------------------------------------


def test_vin_sections_cover_positions() -> None:
    # Rule: WMI is 1-3, VDS is 4-9 (with the check digit), VIS is 10-17.
    vin = parse_vin(CLASSIC_NA)
    assert vin.wmi == "1M8"
    assert vin.vds == "GDM9AX"
    assert vin.vis == "KP042788"
    assert vin.wmi + vin.vds + vin.vis == CLASSIC_NA


def test_vin_is_immutable_value() -> None:
    # Rule: a parsed VIN cannot be mutated after validation, and compares by value.
    vin = parse_vin(CLASSIC_NA)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vin.value = "11111111111111111"  # type: ignore[misc]
    assert vin == parse_vin(CLASSIC_NA)
    assert hash(vin) == hash(parse_vin(CLASSIC_NA))
    assert vin != parse_vin("11111111111111111")


@pytest.mark.parametrize(
    ("first", "region"),
    [
        # ISO 3780: A-H Africa (both ends of the range).
        pytest.param("A", VinRegion.AFRICA, id="A"),
        pytest.param("H", VinRegion.AFRICA, id="H"),
        # ISO 3780: J-R Asia (both ends, and around the carved-out L).
        pytest.param("J", VinRegion.ASIA, id="J"),
        pytest.param("K", VinRegion.ASIA, id="K"),
        pytest.param("M", VinRegion.ASIA, id="M"),
        pytest.param("R", VinRegion.ASIA, id="R"),
        # L is China, kept apart because it mandates the check digit.
        pytest.param("L", VinRegion.CHINA, id="L"),
        # ISO 3780: S-Z Europe (both ends; W is Germany).
        pytest.param("S", VinRegion.EUROPE, id="S"),
        pytest.param("W", VinRegion.EUROPE, id="W"),
        pytest.param("Z", VinRegion.EUROPE, id="Z"),
        # ISO 3780: 1-5 North America (both ends).
        pytest.param("1", VinRegion.NORTH_AMERICA, id="1"),
        pytest.param("5", VinRegion.NORTH_AMERICA, id="5"),
        # ISO 3780: 6-7 Oceania.
        pytest.param("6", VinRegion.OCEANIA, id="6"),
        pytest.param("7", VinRegion.OCEANIA, id="7"),
        # ISO 3780: 8-9 South America.
        pytest.param("8", VinRegion.SOUTH_AMERICA, id="8"),
        pytest.param("9", VinRegion.SOUTH_AMERICA, id="9"),
        # 0 is unassigned.
        pytest.param("0", VinRegion.UNKNOWN, id="0"),
    ],
)
def test_region_from_first_wmi_character(first: str, region: VinRegion) -> None:
    vin = make_vin(first + "AB", "CDEFG", "12345678")
    assert vin.region is region
    assert vin.check_digit_required is (region in (VinRegion.NORTH_AMERICA, VinRegion.CHINA))


def test_every_allowed_first_character_has_an_assigned_region_except_zero() -> None:
    # Rule: only "0" is unassigned; a gap in the ranges would silently skip the check digit.
    regions = {c: make_vin(c + "AB", "CDEFG", "12345678").region for c in ALPHABET}
    unknown = [c for c, region in regions.items() if region is VinRegion.UNKNOWN]
    assert unknown == ["0"]


# --- check digit ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vin", "digit"),
    [
        # Known real-world values: remainder 10 maps to "X".
        pytest.param(CLASSIC_NA, "X", id="classic-x"),
        pytest.param("11111111111111111", "1", id="all-ones"),
        pytest.param("1HGCM82633A004352", "3", id="honda"),
        pytest.param("5GZCZ43D13S812715", "1", id="gm"),
        pytest.param("JH4KA7561PC008269", "1", id="acura"),
        # Position 9 is ignored (weight 0): a wrong or letter digit gives the same answer.
        pytest.param(CLASSIC_NA_BAD_DIGIT, "X", id="ignores-own-digit"),
        pytest.param(_replace(CLASSIC_NA, 9, "Z"), "X", id="ignores-letter-digit"),
    ],
)
def test_compute_check_digit_known_values(vin: str, digit: str) -> None:
    assert compute_check_digit(vin) == digit


@pytest.mark.parametrize("letter", sorted(set(ALPHABET)))
def test_transliteration_of_every_character(letter: str) -> None:
    # Rule: each character's ISO 3779 value; a typo in one letter would corrupt ~1/33 VINs.
    # Placing it at position 8 (weight 10) isolates its value: digit = 10*v mod 11.
    remainder = (10 * TRANSLITERATION[letter]) % 11
    expected = "X" if remainder == 10 else str(remainder)
    assert compute_check_digit("0000000" + letter + "000000000") == expected


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        # Rule: compute_check_digit does not guess at malformed input.
        pytest.param(CLASSIC_NA[:16], VinFault.LENGTH, id="short"),
        pytest.param(CLASSIC_NA.lower(), VinFault.LOWERCASE, id="lower"),
        pytest.param(_replace(CLASSIC_NA, 3, "O"), VinFault.FORBIDDEN_LETTER, id="O"),
        pytest.param(_replace(CLASSIC_NA, 3, "\u0410"), VinFault.INVALID_CHARACTER, id="cyr"),
    ],
)
def test_compute_check_digit_rejects_malformed(raw: str, fault: VinFault) -> None:
    with pytest.raises(InvalidVin) as caught:
        compute_check_digit(raw)
    assert caught.value.fault is fault


# --- factories --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wmi", "vds", "vis", "expected"),
    [
        # Rule: rebuilding a known VIN from its parts restores its real check digit.
        pytest.param("1M8", "GDM9A", "KP042788", CLASSIC_NA, id="classic"),
        pytest.param("1HG", "CM826", "3A004352", "1HGCM82633A004352", id="honda"),
        # Rule: the digit is inserted for Europe too, so the VIN is valid in every region.
        pytest.param("WP0", "ZZZ99", "TS392124", "WP0ZZZ998TS392124", id="europe"),
    ],
)
def test_make_vin_inserts_check_digit(wmi: str, vds: str, vis: str, expected: str) -> None:
    vin = make_vin(wmi, vds, vis)
    assert vin.value == expected
    assert vin.value[8] == compute_check_digit(vin.value)


@pytest.mark.parametrize(
    ("wmi", "vds", "vis", "fault"),
    [
        # Rule: WMI must be exactly 3 characters.
        pytest.param("1M", "GDM9A", "KP042788", VinFault.LENGTH, id="short-wmi"),
        # Rule: VDS here excludes the check digit; passing 6 characters is a caller error.
        pytest.param("1M8", "GDM9AX", "KP042788", VinFault.LENGTH, id="vds-with-digit"),
        # Rule: VIS must be exactly 8 characters.
        pytest.param("1M8", "GDM9A", "KP04278", VinFault.LENGTH, id="short-vis"),
        # Threat: misaligned parts that still add up to 16 would shift the check digit.
        pytest.param("1M8G", "DM9A", "KP042788", VinFault.LENGTH, id="misaligned"),
        # Rule: parts are not normalised either.
        pytest.param("1m8", "GDM9A", "KP042788", VinFault.LOWERCASE, id="lower-wmi"),
        # Rule: forbidden letters in a part are rejected, not replaced.
        pytest.param("1M8", "GDMOA", "KP042788", VinFault.FORBIDDEN_LETTER, id="O-in-vds"),
        # Threat: look-alike characters in a part.
        pytest.param("1M8", "GDM9A", "KP04278\uff18", VinFault.INVALID_CHARACTER, id="fullwidth"),
        # Rule: whitespace inside a part of the right length is still whitespace.
        pytest.param(" M8", "GDM9A", "KP042788", VinFault.WHITESPACE, id="space-wmi"),
        # Rule: non-string parts are rejected, not str()-ed.
        pytest.param(123, "GDM9A", "KP042788", VinFault.NOT_A_STRING, id="int-wmi"),
    ],
)
def test_make_vin_rejects_bad_parts(wmi: str, vds: str, vis: str, fault: VinFault) -> None:
    with pytest.raises(InvalidVin) as caught:
        make_vin(wmi, vds, vis)
    assert caught.value.fault is fault
    if fault is VinFault.LENGTH:
        # The caller is told which part is wrong, not just that the total is.
        assert caught.value.detail.split()[0] in ("WMI", "VDS", "VIS")


@pytest.mark.parametrize(
    "wmi",
    [
        # Default WMI: North America, so every VIN has its check digit enforced.
        pytest.param(None, id="default"),
        # China also enforces the digit.
        pytest.param("LVS", id="china"),
        # Europe: still generated with a valid digit.
        pytest.param("WVW", id="europe"),
    ],
)
def test_random_vin_always_parses(wmi: str | None) -> None:
    # Rule: factories never produce a VIN the parser would reject (stand-in for hypothesis).
    rng = random.Random(20240517)
    seen: set[str] = set()
    per_position: list[set[str]] = [set() for _ in range(17)]
    for _ in range(500):
        vin = random_vin(rng) if wmi is None else random_vin(rng, wmi)
        assert parse_vin(vin.value) == vin
        assert vin.wmi == (wmi or "1FW")
        assert set(vin.value) <= set(ALPHABET)
        assert vin.value[8] == compute_check_digit(vin.value)
        seen.add(vin.value)
        for index, char in enumerate(vin.value):
            per_position[index].add(char)
    # A broken generator (e.g. a constant body) would produce almost no distinct values.
    assert len(seen) > 490
    # Every free position (4-8, 10-17) must vary; a fixed VDS or VIS is not random data.
    for index in [*range(3, 8), *range(9, 17)]:
        assert len(per_position[index]) > 20, f"position {index + 1} barely varies"


def test_random_vin_is_deterministic_per_seed() -> None:
    # Rule: seeded demo data and test fixtures are reproducible.
    first = [random_vin(random.Random(7)) for _ in range(3)]
    again = [random_vin(random.Random(7)) for _ in range(3)]
    other = random_vin(random.Random(8))
    assert first == again
    assert other != first[0]


def test_random_vin_rejects_bad_wmi() -> None:
    # Rule: a caller-supplied WMI is validated like any other input.
    with pytest.raises(InvalidVin) as caught:
        random_vin(random.Random(1), wmi="1fw")
    assert caught.value.fault is VinFault.LOWERCASE


# --- the problem ------------------------------------------------------------------------


def test_invalid_vin_problem_shape() -> None:
    # Rule: clients get RFC 9457 problem JSON with a stable type, status and reason.
    with pytest.raises(InvalidVin) as caught:
        parse_vin(CLASSIC_NA_BAD_DIGIT)
    error = caught.value
    assert isinstance(error, InvalidInput)
    assert isinstance(error, FleetwardError)
    assert error.status == 422
    assert error.code == "invalid-vin"
    assert error.title == "Invalid VIN"
    problem = error.to_problem(instance="/vehicles")
    assert problem["type"] == "urn:fleetward:problem:invalid-vin"
    assert problem["status"] == 422
    assert problem["title"] == "Invalid VIN"
    assert problem["reason"] == "check-digit"
    assert problem["position"] == 9
    assert problem["instance"] == "/vehicles"
    assert "'X'" in str(problem["detail"])


def test_invalid_vin_without_position_has_no_position_field() -> None:
    # Rule: "position" is only present when it means something.
    with pytest.raises(InvalidVin) as caught:
        parse_vin(None)
    problem = caught.value.to_problem()
    assert problem["reason"] == "not-a-string"
    assert "position" not in problem


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        # Rule: reason codes are a public contract; renaming one breaks clients.
        pytest.param(VinFault.LENGTH, "length", id="length"),
        pytest.param(VinFault.LOWERCASE, "lowercase", id="lowercase"),
        pytest.param(VinFault.WHITESPACE, "whitespace", id="whitespace"),
        pytest.param(VinFault.FORBIDDEN_LETTER, "forbidden-letter", id="forbidden-letter"),
        pytest.param(VinFault.INVALID_CHARACTER, "invalid-character", id="invalid-character"),
        pytest.param(VinFault.CHECK_DIGIT, "check-digit", id="check-digit"),
        pytest.param(VinFault.NOT_A_STRING, "not-a-string", id="not-a-string"),
    ],
)
def test_fault_codes_are_stable(fault: VinFault, code: str) -> None:
    assert fault.value == code
    assert len(VinFault) == 7
