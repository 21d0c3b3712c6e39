"""The request hash behind a single command's Idempotency-Key: two asks hash alike only when
every field a retry must repeat is the same (the same key with another body is a 409)."""

from __future__ import annotations

from fleetward.commands.families import COMMANDS
from fleetward.commands.service import request_hash

LOCK = COMMANDS["lock"]


def test_a_parameter_named_ttl_never_stands_for_the_ttl() -> None:
    # Threat: a different body served as the replay of an earlier one. The ttl was merged
    # into the parameters dict before hashing, so a parameter named "ttl" and the ttl field
    # shared one slot: the field overwrote the parameter (or, merged the other way round, the
    # parameter stood for the field). No command has a "ttl" parameter today (unknown
    # parameters are refused before the hash); the hash must not depend on that.
    pairs = [
        (({"ttl": 60}, None), ({}, 60)),
        (({"ttl": 60}, None), ({}, None)),
        (({"ttl": 5}, 60), ({}, 60)),
        (({"ttl": 60}, 60), ({}, 60)),
    ]
    for (params_a, ttl_a), (params_b, ttl_b) in pairs:
        assert request_hash("veh_a", LOCK, params_a, ttl_seconds=ttl_a) != request_hash(
            "veh_a", LOCK, params_b, ttl_seconds=ttl_b
        ), (params_a, ttl_a, params_b, ttl_b)


def test_asks_hash_alike_only_when_every_field_is_the_same() -> None:
    base = ("veh_a", LOCK, {}, None)
    others = [
        ("veh_b", LOCK, {}, None),
        ("veh_a", COMMANDS["unlock"], {}, None),
        ("veh_a", LOCK, {"charging": True}, None),
        ("veh_a", LOCK, {}, 60),
        ("veh_a", LOCK, {}, 61),
        ("veh_a", LOCK, {"ttl": 60.0}, None),
        ("veh_a", LOCK, {"vehicle": "veh_a"}, None),
        # Adjacent fields cannot trade characters (each is framed by its length).
        ("veh_alock", LOCK, {}, None),
    ]
    digests = [
        request_hash(vehicle, spec, parameters, ttl_seconds=ttl)
        for vehicle, spec, parameters, ttl in [base, *others]
    ]
    assert len(set(digests)) == len(digests)
    # The same ask again (a network retry; parameters in any order) hashes alike.
    assert request_hash("veh_a", LOCK, {}, ttl_seconds=None) == digests[0]
    assert request_hash("veh_a", LOCK, {"a": 1.0, "b": True}, ttl_seconds=30) == request_hash(
        "veh_a", LOCK, {"b": True, "a": 1.0}, ttl_seconds=30
    )
