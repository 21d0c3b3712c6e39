"""The request hash behind a bulk command's Idempotency-Key: two asks hash alike only when
every field a retry must repeat is the same (the same key with another body is a 409)."""

from __future__ import annotations

import dataclasses

from fleetward.commands.bulk import BulkAsk, bulk_hash
from fleetward.commands.families import COMMANDS

BASE = BulkAsk(
    spec=COMMANDS["lock"],
    parameters={},
    vehicle_ids=("veh_a", "veh_b"),
    group_id=None,
    idempotency_key="k-1",
    ttl_seconds=None,
)


def test_asks_hash_alike_only_when_every_field_is_the_same() -> None:
    # Threat: a different body served as the replay of an earlier one. Vehicle ids are any
    # printable text (LooseId), commas included: joined with commas, one vehicle "veh_a,veh_b"
    # was the same body as the two vehicles "veh_a" and "veh_b".
    others = [
        dataclasses.replace(BASE, vehicle_ids=("veh_a,veh_b",)),
        dataclasses.replace(BASE, vehicle_ids=("veh_a,", "veh_b")),
        dataclasses.replace(BASE, vehicle_ids=("veh_a", ",veh_b")),
        dataclasses.replace(BASE, vehicle_ids=("veh_a", "veh_b", "")),
        dataclasses.replace(BASE, vehicle_ids=("veh_b", "veh_a")),
        dataclasses.replace(BASE, vehicle_ids=("veh_a",)),
        # Every other field of the ask is part of the body too.
        dataclasses.replace(BASE, spec=COMMANDS["unlock"]),
        dataclasses.replace(BASE, ttl_seconds=60),
        dataclasses.replace(BASE, group_id="grp_1"),
        dataclasses.replace(BASE, group_id=""),
        dataclasses.replace(BASE, vehicle_ids=("veh_a",), group_id="veh_b"),
        dataclasses.replace(BASE, parameters={"ttl": 60}),
        dataclasses.replace(BASE, parameters={"group": "grp_1"}),
    ]
    digests = [bulk_hash(ask) for ask in [BASE, *others]]
    assert len(set(digests)) == len(digests)
    # The same ask again (a network retry, with its key or another) hashes alike.
    assert bulk_hash(dataclasses.replace(BASE, idempotency_key="k-2")) == digests[0]
