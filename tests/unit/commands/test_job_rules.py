"""The command table, the state machine, preconditions and the chain's reading of PDP
reasons: table-driven, one comment per case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleetward.authz.decision import Decision, Reason
from fleetward.commands.chain import Chain, Link
from fleetward.commands.families import (
    BY_PERMISSION,
    CABLE,
    COMMANDS,
    LOCKED,
    SPEED,
    BadParameters,
    Needs,
    validate_parameters,
)
from fleetward.commands.models import JobState
from fleetward.commands.preconditions import Outcome, judge
from fleetward.commands.service import pdp_links
from fleetward.commands.states import FINAL, IN_FLIGHT, RANK, TRANSITIONS, IllegalTransition, check

S = JobState
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
AGE = timedelta(seconds=120)


def test_every_command_family_is_in_the_table_once() -> None:
    # One table: every vehicle:* command permission has exactly one command.
    assert len(BY_PERMISSION) == len(COMMANDS)
    assert {s.permission.value for s in COMMANDS.values()} == {
        "vehicle:lock",
        "vehicle:unlock",
        "vehicle:remote_start",
        "vehicle:climate",
        "vehicle:horn_lights",
        "vehicle:charging_control",
        "vehicle:diagnostics_run",
        "vehicle:immobilize",
    }


def test_security_relevant_commands_are_exclusive_and_short_lived() -> None:
    # Doors, engine and immobilizer: one in flight per vehicle; an unlock lives seconds.
    exclusive = {name for name, spec in COMMANDS.items() if spec.exclusive}
    assert exclusive == {"lock", "unlock", "remote_start", "immobilize"}
    assert COMMANDS["unlock"].lifetime <= timedelta(seconds=30)
    assert COMMANDS["charging_control"].lifetime > COMMANDS["unlock"].lifetime


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        # Defaults are the server's: an immobilize without a value engages it.
        ("immobilize", {}, {"immobilized": True}),
        ("climate", {"cabin_celsius": 21}, {"cabin_celsius": 21.0}),
        ("charging_control", {"charging": False}, {"charging": False}),
        ("lock", {}, {}),
    ],
)
def test_parameters_accepted(name: str, given: dict[str, Any], expected: dict[str, Any]) -> None:
    assert validate_parameters(COMMANDS[name], given) == expected


@pytest.mark.parametrize(
    ("name", "given", "field"),
    [
        ("lock", {"force": True}, "force"),  # an unknown parameter is not ignored
        ("climate", {}, "cabin_celsius"),  # required
        ("climate", {"cabin_celsius": 99}, "cabin_celsius"),  # out of range
        ("climate", {"cabin_celsius": float("nan")}, "cabin_celsius"),  # NaN compares false
        ("climate", {"cabin_celsius": True}, "cabin_celsius"),  # a bool is not a number
        ("climate", {"cabin_celsius": "21"}, "cabin_celsius"),  # nor is a string
        ("charging_control", {"charging": 1}, "charging"),  # 1 is not true
        ("charging_control", {}, "charging"),  # no default for charging
    ],
)
def test_parameters_refused(name: str, given: dict[str, Any], field: str) -> None:
    with pytest.raises(BadParameters) as refused:
        validate_parameters(COMMANDS[name], given)
    assert refused.value.field == field


def test_effects_follow_parameters() -> None:
    # Confirmation reads the signal the command changes, with the value it asked for.
    assert COMMANDS["unlock"].expected({}) == (LOCKED, False)
    assert COMMANDS["lock"].expected({}) == (LOCKED, True)
    charging = COMMANDS["charging_control"]
    assert charging.expected({"charging": False})[1] is False  # type: ignore[index]
    assert COMMANDS["horn_lights"].expected({}) is None  # nothing reported shows it
    # Starting a charge needs the cable; stopping it does not.
    assert charging.needs_for({"charging": True}) is Needs.PLUGGED_IN
    assert charging.needs_for({"charging": False}) is None


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        (S.QUEUED, S.EXECUTED),  # a result for a job that was never delivered
        (S.DELIVERED, S.EXPIRED),  # a delivered job's outcome is unknown, never "expired"
        (S.REJECTED, S.QUEUED),  # a rejection is final
        (S.CONFIRMED, S.EXECUTED),  # nothing after confirmed
        (S.EXECUTED, S.FAILED),  # a vehicle's verdict is not rewritten
        (S.CANCELLED, S.DELIVERED),  # a cancelled job never goes out
        (S.REQUESTED, S.QUEUED),  # no queue without authorization
    ],
)
def test_illegal_transitions_raise(current: JobState, wanted: JobState) -> None:
    with pytest.raises(IllegalTransition):
        check(current, wanted)


def test_the_machine_is_ranked_and_final_states_hold_no_slot() -> None:
    # Every transition goes up in rank (transitions at one instant sort correctly); final
    # states are not in flight (they release the vehicle's security slot).
    for state, nexts in TRANSITIONS.items():
        assert all(RANK[n] > RANK[state] for n in nexts)
    assert not FINAL & IN_FLIGHT
    assert {
        S.REJECTED,
        S.CANCELLED,
        S.EXPIRED,
        S.FAILED,
        S.REJECTED_BY_VEHICLE,
        S.CONFIRMED,
    } == FINAL


@pytest.mark.parametrize(
    ("needs", "signals", "age", "outcome", "detail"),
    [
        (Needs.PARKED, {SPEED: 0.0}, 5, Outcome.MET, "stationary"),
        (Needs.PARKED, {SPEED: 3.0}, 5, Outcome.NOT_MET, "moving"),
        # Older than the limit: never trusted, the vehicle decides.
        (Needs.PARKED, {SPEED: 0.0}, 500, Outcome.DEFERRED, "state-stale"),
        (Needs.PARKED, {}, 5, Outcome.DEFERRED, "speed not reported"),
        (Needs.PARKED, {SPEED: True}, 5, Outcome.DEFERRED, "speed not reported"),
        (Needs.WALKING_SPEED, {SPEED: 6.0}, 5, Outcome.MET, "at or below walking speed"),
        (Needs.WALKING_SPEED, {SPEED: 6.5}, 5, Outcome.NOT_MET, "above-walking-speed"),
        (Needs.PLUGGED_IN, {CABLE: True}, 5, Outcome.MET, "plugged-in"),
        (Needs.PLUGGED_IN, {CABLE: False}, 5, Outcome.NOT_MET, "not-plugged-in"),
        (Needs.PLUGGED_IN, {SPEED: 0.0}, 5, Outcome.DEFERRED, "cable state not reported"),
    ],
)
def test_preconditions(
    needs: Needs, signals: dict[str, Any], age: int, outcome: Outcome, detail: str
) -> None:
    checked = judge(needs, (NOW - timedelta(seconds=age), signals), NOW, AGE)
    assert (checked.outcome, checked.detail) == (outcome, detail)


def test_no_state_at_all_is_deferred() -> None:
    assert judge(Needs.PARKED, None, NOW, AGE).outcome is Outcome.DEFERRED


@pytest.mark.parametrize(
    ("reason", "link"),
    [
        (Reason.STEP_UP_REQUIRED, Link.STEP_UP),
        (Reason.REGION_BARRED, Link.REGION),
        (Reason.SEPARATION_OF_DUTIES, Link.ROLE),
        (Reason.SCOPE, Link.PERMISSION),
        # Seen but not delegated: the relationship exists, the command is not in it.
        (Reason.NO_RELATIONSHIP, Link.PERMISSION),
        (Reason.WINDOW_EXPIRED, Link.RELATIONSHIP),
        (Reason.PRINCIPAL_DISABLED, Link.USER),
        # A PDP that could not decide still names a link: fail closed, never allowed.
        (Reason.PDP_TIMEOUT, Link.PERMISSION),
    ],
)
def test_a_denial_names_its_link(reason: Reason, link: Link) -> None:
    chain = Chain()
    pdp_links(chain, Decision.deny(reason, "v1"))
    assert not chain.held
    assert chain.failed is link and chain.reason == reason.value
    assert chain.links[-1] == {"link": link.value, "ok": False, "detail": reason.value}
