"""The Cedar form of a request's context and facts, as the policy reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleetward.authz.permissions import Permission
from fleetward.authz.relations.cedar import cedar_context, cedar_entities, seconds_since
from fleetward.identity.models import Role, TenantKind
from unit.authz.fakes import ALICE, ALICE_FACTS, context, owned_car, person, relations

NOW = datetime(2026, 12, 7, 9, 0, 0, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "seconds"),
    [
        (timedelta(0), 0),
        (timedelta(seconds=300), 300),
        (timedelta(seconds=300, microseconds=1), 301),
        (timedelta(seconds=299, microseconds=999_999), 300),
        (timedelta(microseconds=-300_000), 0),  # a sign-in a fraction of a second ahead
        (timedelta(seconds=-59, microseconds=-500_000), -59),
        (timedelta(seconds=-60), -60),
        (timedelta(days=3, seconds=1), 3 * 86_400 + 1),
    ],
)
def test_an_age_is_rounded_up_never_down(age: timedelta, seconds: int) -> None:
    assert seconds_since(NOW - age, NOW) == seconds


def _vehicle_attrs(asker_id: str, owner: str) -> dict[str, object]:
    asker = person(asker_id, ALICE_FACTS.tenant_id, TenantKind.CONSUMER, Role.CUSTOMER)
    entities = cedar_entities(relations(asker, owned_car(owner=owner)))
    (vehicle,) = [e for e in entities if e["uid"]["type"] == "Fleetward::Vehicle"]
    attrs: dict[str, object] = vehicle["attrs"]
    return attrs


def test_a_vehicle_names_its_owner_only_to_its_owner() -> None:
    assert _vehicle_attrs(ALICE.id, ALICE.id)["owner"] == {
        "type": "Fleetward::User",
        "id": ALICE.id,
    }
    # Anyone else (a driver, a former owner, a stranger) is not told whose it is.
    assert "owner" not in _vehicle_attrs("usr_bob", ALICE.id)


def test_an_unknown_region_and_no_barred_region_are_left_out() -> None:
    lock = Permission.VEHICLE_LOCK
    bare = cedar_context(context(), lock, ())
    assert "region" not in bare
    assert "barred_regions" not in bare
    full = cedar_context(context(region="EU"), lock, ("NA", "EU"))
    assert (full["region"], full["barred_regions"]) == ("EU", ["EU", "NA"])
