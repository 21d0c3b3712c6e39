"""Each rule fires on its scenario and stays quiet on its look-alike normal traffic.

Table-driven: one case per scenario, a comment saying which threat (or which normal traffic)
it covers. Rules are fed plain events (kit.event); windows run on event time, so nothing here
depends on the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest

from fleetward.audit.events import EventName as E
from fleetward.detection.config import RulesConfig
from fleetward.detection.finding import Rule
from fleetward.detection.observed import Observed
from fleetward.detection.rules import RULE_IDS, build_rules
from unit.detection.kit import event, feed, minutes

CONFIG = RulesConfig()
DECISION = E.AUTHZ_DECISION_MADE.value
DEPRECATED_ROUTE = "mobile:vehicles:list_v0"


def rule(rule_id: str) -> Rule:
    (found,) = [r for r in build_rules(CONFIG, {DEPRECATED_ROUTE}) if r.id == rule_id]
    return found


def denied(
    vehicle: str, reason: str = "no-relationship", **kw: object
) -> Callable[[int], Observed]:
    return lambda i: event(
        DECISION, after=minutes(i), object_id=vehicle, decision="denied", reason=reason, **kw
    )


def many(n: int, make: Callable[[int], Observed]) -> list[Observed]:
    return [make(i) for i in range(n)]


class Case(NamedTuple):
    rule: str
    events: Callable[[], list[Observed]]
    alerts: int  # distinct dedup keys expected (0: quiet)


CASES: dict[str, Case] = {
    # BOLA across tenants: one request for another tenant's car is already an alert.
    "cross-tenant: one tenant-mismatch": Case(
        "cross-tenant-access", lambda: [denied("veh_globex", "tenant-mismatch")(0)], 1
    ),
    # A token used in a tenant it was not issued for.
    "cross-tenant: token for another tenant": Case(
        "cross-tenant-access", lambda: many(3, denied("veh_x", "token-tenant-mismatch")), 1
    ),
    # Normal: a customer refused a command for missing step-up is not cross-tenant.
    "cross-tenant: step-up denial is quiet": Case(
        "cross-tenant-access", lambda: many(5, denied("veh_1", "step-up-required")), 0
    ),
    # Normal: allowed reads in one's own tenant.
    "cross-tenant: allowed reads are quiet": Case(
        "cross-tenant-access",
        lambda: many(20, lambda i: event(DECISION, after=minutes(i), reason="owner")),
        0,
    ),
    # VIN walk: five different vehicles refused as not-theirs within ten minutes.
    "enumeration: five distinct vehicles": Case(
        "vin-enumeration",
        lambda: [denied(f"veh_{i}")(i) for i in range(5)],
        1,
    ),
    # VIN walk through ids that do not exist at all.
    "enumeration: unknown vehicles": Case(
        "vin-enumeration",
        lambda: [denied(f"veh_{i}", "unknown-resource")(i) for i in range(6)],
        1,
    ),
    # A support agent walking case ids not assigned to them.
    "enumeration: five distinct support cases": Case(
        "vin-enumeration",
        lambda: [denied(f"sup_{i}", object_type="support_case")(i) for i in range(5)],
        1,
    ),
    # Each kind is counted on its own: three vehicles and two cases are no walk of either.
    "enumeration: vehicles and cases apart": Case(
        "vin-enumeration",
        lambda: (
            [denied(f"veh_{i}")(i) for i in range(3)]
            + [denied(f"sup_{i}", object_type="support_case")(i) for i in range(2)]
        ),
        0,
    ),
    # Other kinds of objects are not walked this way (a fleet group refused is quiet here).
    "enumeration: other kinds are quiet": Case(
        "vin-enumeration",
        lambda: [denied(f"grp_{i}", object_type="fleet_group")(i) for i in range(6)],
        0,
    ),
    # Normal: one stale bookmark refused again and again is one vehicle, not a walk.
    "enumeration: same vehicle repeatedly is quiet": Case(
        "vin-enumeration", lambda: many(30, denied("veh_sold")), 0
    ),
    # Normal: the same walk spread over hours stays under the window.
    "enumeration: slow spread over hours is quiet": Case(
        "vin-enumeration",
        lambda: [denied(f"veh_{i}")(i * 30) for i in range(10)],
        0,
    ),
    # The abuse limits' own verdict: consumed as it is.
    "enumeration: abuse suspected then stopped": Case(
        "vin-enumeration",
        lambda: [
            event(E.ENUMERATION_SUSPECTED.value, object_type="actor", object_id="usr_mallory"),
            event(E.ENUMERATION_STOPPED.value, object_type="actor", object_id="usr_mallory"),
        ],
        1,
    ),
    # A refresh token replayed from another network.
    "new infrastructure: new /24 for a family": Case(
        "token-new-infrastructure",
        lambda: [
            event(DECISION, token_family="fam_1", source_ip="198.51.100.7", client_id="app"),
            event(DECISION, token_family="fam_1", source_ip="198.51.100.9", client_id="app"),
            event(DECISION, token_family="fam_1", source_ip="203.0.113.5", client_id="app"),
        ],
        1,
    ),
    # A family moving to another client id.
    "new infrastructure: another client for a family": Case(
        "token-new-infrastructure",
        lambda: [
            event(DECISION, token_family="fam_2", source_ip="2001:db8:1::1", client_id="app"),
            event(DECISION, token_family="fam_2", source_ip="2001:db8:1:ff::2", client_id="evil"),
        ],
        1,
    ),
    # Normal: a phone moving within its /48 and a first sighting of another family.
    "new infrastructure: same range and first sightings are quiet": Case(
        "token-new-infrastructure",
        lambda: [
            event(DECISION, token_family="fam_3", source_ip="2001:db8:2::1", client_id="app"),
            event(DECISION, token_family="fam_3", source_ip="2001:db8:2:9::1", client_id="app"),
            event(DECISION, token_family="fam_4", source_ip="192.0.2.1", client_id="app"),
            event(DECISION, token_family=None, source_ip="192.0.2.99", client_id="app"),
        ],
        0,
    ),
    # One bulk unlock, whatever its size.
    "bulk: a bulk unlock": Case(
        "bulk-command",
        lambda: [
            event(
                E.BULK_COMMAND_REQUESTED.value,
                object_type="bulk_command",
                object_id="blk_1",
                details={"command": "vehicle:unlock", "vehicles": 2},
            )
        ],
        1,
    ),
    # A bulk command on a large part of the fleet.
    "bulk: a large bulk lock": Case(
        "bulk-command",
        lambda: [
            event(
                E.BULK_COMMAND_REQUESTED.value,
                object_type="bulk_command",
                object_id="blk_2",
                details={"command": "vehicle:lock", "vehicles": 250},
            )
        ],
        1,
    ),
    # Normal: a fleet operator locking three vans at night.
    "bulk: a small bulk lock is quiet": Case(
        "bulk-command",
        lambda: [
            event(
                E.BULK_COMMAND_REQUESTED.value,
                object_type="bulk_command",
                details={"command": "vehicle:lock", "vehicles": 3},
            )
        ],
        0,
    ),
    # Hostile details never crash a rule: skipped.
    "bulk: malformed details are skipped": Case(
        "bulk-command",
        lambda: [
            event(E.BULK_COMMAND_REQUESTED.value, details={"command": None, "vehicles": "9999"})
        ],
        0,
    ),
    # A taken-over account selling cars away.
    "ownership: three transfers by one user in a day": Case(
        "ownership-churn",
        lambda: [
            event(E.OWNERSHIP_TRANSFER_STARTED.value, after=minutes(60 * i), object_id=f"veh_{i}")
            for i in range(3)
        ],
        1,
    ),
    # One vehicle passed from hand to hand.
    "ownership: one vehicle transferred twice": Case(
        "ownership-churn",
        lambda: [
            event(E.OWNERSHIP_TRANSFERRED.value, actor=f"usr_{i}", object_id="veh_hot")
            for i in range(2)
        ],
        1,
    ),
    # Normal: a private sale (started by the seller, completed by the buyer).
    "ownership: one sale is quiet": Case(
        "ownership-churn",
        lambda: [
            event(E.OWNERSHIP_TRANSFER_STARTED.value, actor="usr_seller"),
            event(E.OWNERSHIP_TRANSFERRED.value, actor="usr_buyer", after=minutes(30)),
        ],
        0,
    ),
    # A stolen session trying commands it is refused.
    "command denials: five rejected": Case(
        "repeated-command-denials",
        lambda: [
            event(
                E.COMMAND_REJECTED.value,
                after=minutes(i),
                decision="denied",
                reason="step-up-required",
            )
            for i in range(5)
        ],
        1,
    ),
    # Normal: jobs the service expired before they were authorized are no one's denial.
    "command denials: expiries are quiet": Case(
        "repeated-command-denials",
        lambda: [
            event(
                E.COMMAND_REJECTED.value,
                actor="command-service",
                actor_type="system",
                decision="denied",
                reason="expired",
            )
            for _ in range(10)
        ],
        0,
    ),
    # Normal: two refusals (a forgotten step-up, retried) stay under the threshold.
    "command denials: two are quiet": Case(
        "repeated-command-denials",
        lambda: [
            event(E.COMMAND_REJECTED.value, decision="denied", reason="step-up-required"),
            event(E.COMMAND_REJECTED.value, decision="denied", reason="step-up-required"),
        ],
        0,
    ),
    # A new service account, and new keys for another one: each reviewed.
    "privilege: registration and key replacement": Case(
        "service-account-privilege-change",
        lambda: [
            event(
                E.OAUTH_CLIENT_REGISTERED.value,
                object_type="oauth_client",
                object_id="new-workload",
                details={"client_type": "workload", "surfaces": ["fleet"]},
            ),
            event(
                E.OAUTH_CLIENT_KEYS_REPLACED.value,
                object_type="oauth_client",
                object_id="insureco-app",
            ),
        ],
        2,
    ),
    # Normal: tokens issued to an existing client are not a privilege change.
    "privilege: token issuance is quiet": Case(
        "service-account-privilege-change",
        lambda: [event(E.OAUTH_TOKEN_ISSUED.value, object_type="access_token")],
        0,
    ),
    # An integration (or a prober) still on the deprecated version; one request counts once.
    "deprecated: a request to a deprecated route": Case(
        "deprecated-api-use",
        lambda: [
            event(DECISION, endpoint=DEPRECATED_ROUTE, client_id="old-app", request_id="r1"),
            event(E.COMMAND_REQUESTED.value, endpoint=DEPRECATED_ROUTE, request_id="r1"),
        ],
        1,
    ),
    # Normal: the current version.
    "deprecated: current routes are quiet": Case(
        "deprecated-api-use",
        lambda: [event(DECISION, endpoint="mobile:vehicles:list", client_id="app")],
        0,
    ),
    # A delivered command the vehicle never answered.
    "no acknowledgment: outcome unknown": Case(
        "command-no-acknowledgment",
        lambda: [
            event(
                E.COMMAND_OUTCOME_UNKNOWN.value,
                actor="command-service",
                actor_type="system",
                reason="no-answer",
                details={"command": "vehicle:unlock"},
            )
        ],
        1,
    ),
    # Normal: a confirmed command.
    "no acknowledgment: confirmed is quiet": Case(
        "command-no-acknowledgment",
        lambda: [event(E.COMMAND_CONFIRMED.value, actor_type="system", actor="command-service")],
        0,
    ),
    # A flooding or cloned TCU, quarantined by the pipeline.
    "telemetry: a device quarantined": Case(
        "telemetry-volume",
        lambda: [
            event(
                E.DEVICE_QUARANTINED.value,
                actor_type="system",
                actor="telemetry",
                object_type="device",
                object_id="dev_1",
                reason="quota_exceeded",
            )
        ],
        1,
    ),
    # Normal: a device session opening and closing.
    "telemetry: sessions are quiet": Case(
        "telemetry-volume",
        lambda: [event(E.DEVICE_SESSION_OPENED.value, object_type="device", object_id="dev_1")],
        0,
    ),
    # Credential stuffing: a password list tried once per account through the mobile app,
    # each failure from another network (below every per-account and per-network limit).
    "stuffing: fifty accounts through one app": Case(
        "credential-stuffing",
        lambda: [failed_login(f"acct_{i}", "fleetward-mobile", after=i) for i in range(50)],
        1,
    ),
    # ... and through the login page with no client named.
    "stuffing: fifty accounts without a client": Case(
        "credential-stuffing",
        lambda: [failed_login(f"acct_{i}", None, after=i) for i in range(50)],
        1,
    ),
    # Normal: one person mistyping many times, and people of several apps mistyping.
    "stuffing: one account's typos are quiet": Case(
        "credential-stuffing",
        lambda: [failed_login("acct_1", "fleetward-mobile", after=i) for i in range(60)],
        0,
    ),
    "stuffing: failures spread over apps are quiet": Case(
        "credential-stuffing",
        lambda: [failed_login(f"acct_{i}", f"app-{i % 5}", after=i) for i in range(60)],
        0,
    ),
    # Normal: fifty typos through one app spread over a day (the window is an hour).
    "stuffing: failures spread over a day are quiet": Case(
        "credential-stuffing",
        lambda: [failed_login(f"acct_{i}", "fleetward-mobile", after=30 * i) for i in range(50)],
        0,
    ),
}


def failed_login(account: str, client: str | None, *, after: int) -> Observed:
    details = {"factor": "password", "network": f"198.51.100.{after % 250}"}
    if client is not None:
        details["client"] = client
    return event(
        E.LOGIN_FAILED.value,
        after=minutes(after),
        actor="login",
        actor_type="system",
        object_type="account",
        object_id=account,
        decision="denied",
        reason="bad_credentials",
        details=details,
    )


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_rule(case: Case) -> None:
    found = feed(rule(case.rule), case.events())
    assert len({f.dedup_key for f in found}) == case.alerts, [f.summary for f in found]
    for finding in found:
        assert finding.rule == case.rule
        assert finding.evidence, "every event-driven finding names its evidence"
        assert len(finding.dedup_key) <= 128 and len(finding.summary) <= 256


def test_every_rule_has_a_case_both_ways() -> None:
    fires = {c.rule for c in CASES.values() if c.alerts}
    quiet = {c.rule for c in CASES.values() if not c.alerts}
    assert fires == quiet == set(RULE_IDS)


def test_evidence_and_count_of_an_enumeration() -> None:
    walk = [denied(f"veh_{i}")(i) for i in range(7)]
    found = feed(rule("vin-enumeration"), walk)
    # Fires at the fifth distinct vehicle and on each one after: three findings, one alert.
    assert len(found) == 3 and len({f.dedup_key for f in found}) == 1
    assert found[0].evidence == tuple(e.id for e in walk[:5])
    assert found[-1].evidence[-1] == walk[-1].id
    assert found[0].subject_type == "user" and found[0].subject_id == "usr_mallory"


def test_a_new_day_is_a_new_alert() -> None:
    walk = [denied(f"veh_{i}")(i) for i in range(5)]
    tomorrow = [denied(f"veh_{i}")(24 * 60 + i) for i in range(5)]
    found = feed(rule("vin-enumeration"), walk + tomorrow)
    assert len({f.dedup_key for f in found}) == 2


def test_disabled_rules_are_not_built() -> None:
    from dataclasses import replace

    from fleetward.detection.config import EnumerationConfig

    config = replace(CONFIG, enumeration=EnumerationConfig(enabled=False))
    assert "vin-enumeration" not in {r.id for r in build_rules(config)}


def test_refusals_padded_on_one_vehicle_do_not_hide_a_walk() -> None:
    # A walker pads each new guess with many refusals on one vehicle, so that no stretch of
    # its newest refusals (the window keeps a bounded number per actor) holds five distinct
    # vehicles: the distinct vehicles of the window still count.
    events: list[Observed] = []
    for i in range(6):
        events.append(denied(f"veh_walk_{i}")(i))
        events.extend(denied("veh_pad")(i) for _ in range(400))
    found = feed(rule("vin-enumeration"), events)
    assert found, "a walk over six vehicles in ten minutes was not found"
    assert "veh_walk_0" in {e.object_id for e in events if e.id in found[0].evidence}


def test_a_request_id_another_caller_used_does_not_hide_a_deprecated_call() -> None:
    # Request ids are the platform's own, but should two requests ever share one, one
    # caller's id seen before must not make another caller's request on a deprecated route
    # count as already seen.
    def call(actor: str, client: str) -> Observed:
        return event(
            DECISION,
            actor=actor,
            endpoint=DEPRECATED_ROUTE,
            client_id=client,
            request_id="req-chosen-by-caller",
        )

    found = feed(rule("deprecated-api-use"), [call("usr_a", "cli_a"), call("usr_b", "cli_b")])
    assert {f.subject_id for f in found} == {"cli_a", "cli_b"}
