"""Who a blast radius reached it through: the principals, clients, tokens, token families and
source addresses of its records, each in the order first met, none cut without saying so
(a cut list is counted whole in the store)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert

from fleetward.audit import investigate as investigate_module
from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.investigate import BlastQuery, Principal, Subject, blast_radius
from fleetward.audit.models import AuditRecord
from fleetward.platform import Platform

# (actor type, actor id, client, token, family, address), in the order they happen.
RECORDS = [
    (ActorType.USER, "usr_a", "cli_x", "jti_1", "fam_1", "192.0.2.1"),
    (ActorType.USER, "usr_b", "cli_x", "jti_2", "fam_1", "192.0.2.2"),
    (ActorType.SYSTEM, "dispatcher", None, None, None, None),
    (ActorType.USER, "usr_a", "cli_y", "jti_3", "fam_2", "192.0.2.1"),
    (ActorType.USER, "usr_b", "cli_x", "jti_2", "fam_1", "192.0.2.2"),
]


async def _records(platform: Platform) -> None:
    rows: list[dict[str, Any]] = [
        {
            "id": f"evt_summary_{i}",
            "occurred_at": platform.clock.now(),
            "name": EventName.AUTHZ_DECISION_MADE.value,
            "actor_type": kind,
            "actor_id": actor,
            "object_type": "vehicle",
            "object_id": f"veh_summary_{i}",
            "action": "vehicle:read_status",
            "decision": Decision.ALLOWED,
            "details": {},
            "client_id": client,
            "token_id": token,
            "token_family": family,
            "source_ip": address,
            "vehicle_id": f"veh_summary_{i}",
        }
        for i, (kind, actor, client, token, family, address) in enumerate(RECORDS)
    ]
    async with platform.unit_of_work() as uow:
        await uow.session.execute(insert(AuditRecord), rows)
        await uow.commit()


async def test_every_principal_token_and_address_in_the_order_first_met(
    platform: Platform,
) -> None:
    await _records(platform)
    async with platform.unit_of_work() as uow:
        result = await blast_radius(
            uow.session, BlastQuery(Subject.WINDOW, since=platform.clock.now()), summaries=True
        )
    assert result.principals.values == [
        Principal("user", "usr_a"),
        Principal("user", "usr_b"),
        Principal("system", "dispatcher"),
    ]
    assert result.clients.values == ["cli_x", "cli_y"]
    assert result.tokens.values == ["jti_1", "jti_2", "jti_3"]
    assert result.token_families.values == ["fam_1", "fam_2"]
    assert result.source_ips.values == ["192.0.2.1", "192.0.2.2"]
    assert result.truncated is False
    document = result.to_json()
    assert document["principals"][2] == {"type": "system", "id": "dispatcher"}
    assert document["lists"]["tokens"] == {
        "total": 3,
        "listed": 3,
        "truncated": False,
        "next_cursor": None,
    }


@pytest.mark.parametrize("cap", [1, 2])
async def test_a_cut_summary_says_so_with_its_total(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    # A cap of 1 fills every list (the pass ends early); of 2, clients and families stay
    # whole and the others are cut.
    monkeypatch.setattr(investigate_module, "_SUMMARY_LISTED", cap)
    await _records(platform)
    async with platform.unit_of_work() as uow:
        result = await blast_radius(
            uow.session, BlastQuery(Subject.WINDOW, since=platform.clock.now()), summaries=True
        )
    assert result.truncated is True
    lists = result.to_json()["lists"]
    totals = {name: (lists[name]["listed"], lists[name]["total"]) for name in lists}
    assert totals == {
        "vehicles": (5, 5),
        "commands": (0, 0),
        "principals": (cap, 3),
        "clients": (cap, 2),
        "tokens": (cap, 3),
        "token_families": (cap, 2),
        "source_ips": (cap, 2),
    }
    summaries = [name for name in lists if name not in ("vehicles", "commands")]
    assert {name for name in summaries if lists[name]["truncated"]} == (
        set(summaries) if cap == 1 else {"principals", "tokens"}
    )
    assert result.tokens.values == ["jti_1", "jti_2"][:cap]
    assert (
        result.principals.values == [Principal("user", "usr_a"), Principal("user", "usr_b")][:cap]
    )
    assert f"tokens cut: {cap} listed of 3" in result.to_table()


async def test_a_sweep_lists_who_acted_only_when_asked(platform: Platform) -> None:
    # A window (like a client or a partner) is a sweep of tens of thousands of records, where
    # the summaries cost 2-4x the rest of the query: listed only when asked, and an answer
    # without them says so (None, never an empty list: "nobody acted" would be a claim).
    await _records(platform)
    window = BlastQuery(Subject.WINDOW, since=platform.clock.now())
    async with platform.unit_of_work() as uow:
        swept = await blast_radius(uow.session, window)
        token = await blast_radius(uow.session, BlastQuery(Subject.TOKEN, "jti_1"))
        declined = await blast_radius(
            uow.session, BlastQuery(Subject.TOKEN, "jti_1"), summaries=False
        )
    document = swept.to_json()
    assert document["summarised"] is False
    assert document["principals"] is None and document["source_ips"] is None
    assert document["lists"]["principals"] is None
    assert document["counts"]["events"] == len(RECORDS)
    assert "who acted: not listed" in swept.to_table()
    # An incident's subject lists them unless declined.
    assert token.to_json()["summarised"] is True
    assert token.principals.values == [Principal("user", "usr_a")]
    assert declined.to_json()["tokens"] is None
