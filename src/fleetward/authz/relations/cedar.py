"""The Cedar (JSON) form of a batch's facts and of a request.

Entity references inside attributes and the context are written in the implicit form
({"type", "id"}), which the schema resolves: loading them costs a fraction of the
"__entity" escape. Tenants are plain id strings for the same reason."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from fleetward.authz.decision import (
    PrincipalKind,
    PrincipalRef,
    RequestContext,
    ResourceKind,
    ResourceRef,
)
from fleetward.authz.permissions import Permission
from fleetward.authz.relations.facts import Grant, ObjectFacts, Relations

NAMESPACE: Final = "Fleetward::"

RESOURCE_TYPES: Final = {
    ResourceKind.VEHICLE: "Vehicle",
    ResourceKind.ACCOUNT: "Account",
    ResourceKind.TENANT: "Tenant",
    ResourceKind.FLEET_GROUP: "FleetGroup",
    ResourceKind.DEALER_CASE: "DealerCase",
    ResourceKind.SUPPORT_CASE: "SupportCase",
    ResourceKind.CLIENT_REGISTRATION: "ClientRegistration",
    ResourceKind.PLATFORM: "Platform",
}

PRINCIPAL_TYPES: Final = ("User", "Client")


def entity_uid(type_name: str, entity_id: str) -> dict[str, str]:
    return {"type": NAMESPACE + type_name, "id": entity_id}


def principal_uid(ref: PrincipalRef) -> dict[str, str]:
    return entity_uid("User" if ref.kind is PrincipalKind.USER else "Client", ref.id)


def resource_uid(ref: ResourceRef) -> dict[str, str]:
    return entity_uid(RESOURCE_TYPES[ref.kind], ref.id)


def action_uid(permission: Permission) -> dict[str, str]:
    return entity_uid("Action", permission.value)


def epoch(moment: datetime) -> int:
    """Whole seconds, rounded down: at a window's end the policy denies no later than the
    code that built the entities does."""
    return math.floor(moment.timestamp())


def seconds_since(then: datetime, now: datetime) -> int:
    """Whole seconds from ``then`` to ``now``, rounded up (negative when ``then`` is later):
    an age compared with a maximum is never shorter than the real one."""
    elapsed = now - then
    return elapsed.days * 86_400 + elapsed.seconds + (1 if elapsed.microseconds else 0)


def _uids(type_name: str, ids: Iterable[str]) -> list[dict[str, str]]:
    return [entity_uid(type_name, i) for i in sorted(ids)]


def _grant(attrs: dict[str, Any], prefix: str, holder: Any, grant: Grant) -> None:
    """A delegation (``driver``) or consent (``partner``) as four flat attributes."""
    attrs[prefix] = holder
    attrs[prefix + "_actions"] = [action_uid(p) for p in sorted(grant.permissions)]
    attrs[prefix + "_from"] = epoch(grant.valid_from)
    attrs[prefix + "_until"] = epoch(grant.valid_until)


def cedar_entities(relations: Relations) -> list[dict[str, Any]]:
    """The Cedar entity list (JSON form) of a batch: the principal, the resources and the
    groups and cases that link them."""
    p = relations.principal
    out: dict[tuple[str, str], dict[str, Any]] = {}

    def put(type_name: str, entity_id: str, attrs: dict[str, Any], parents: Any = ()) -> None:
        out[(type_name, entity_id)] = {
            "uid": entity_uid(type_name, entity_id),
            "attrs": attrs,
            "parents": list(parents),
        }

    if p.ref.kind is PrincipalKind.USER:
        user: dict[str, Any] = {
            "tenant": p.tenant_id,
            "tenant_kind": p.tenant_kind.value,
            "roles": sorted(r.value for r in p.roles),
        }
        # Left out when empty (optional in the schema: the policies ask `has` first).
        if p.operator_groups:
            user["operator_groups"] = _uids("FleetGroup", p.operator_groups)
        if p.dealer_cases:
            user["dealer_cases"] = _uids("DealerCase", p.dealer_cases)
        if p.support_cases:
            user["support_cases"] = _uids("SupportCase", p.support_cases)
        put("User", p.ref.id, user)
    else:
        kind = p.client_type.value if p.client_type is not None else ""
        put("Client", p.ref.id, {"tenant": p.tenant_id, "kind": kind})
    for group_id in p.operator_groups:
        put("FleetGroup", group_id, {"tenant": p.tenant_id})
    for case_id in p.dealer_cases:
        put("DealerCase", case_id, {"tenant": p.tenant_id})
    for case_id in p.support_cases:
        put("SupportCase", case_id, {})

    # A user's own ownership only: no policy asks whose a vehicle is other than "the
    # asker's?", and each reference costs the engine ~9 us to load (docs/decisions.md).
    asker = p.ref.id if p.ref.kind is PrincipalKind.USER else None
    for v in relations.vehicles.values():
        attrs: dict[str, Any] = {"tenant": v.tenant_id, "region": v.region}
        if v.owner_id is not None and v.owner_id == asker:
            attrs["owner"] = entity_uid("User", v.owner_id)
        if v.fleet_id is not None:
            attrs["fleet"] = v.fleet_id
        if v.delegation is not None:
            _grant(attrs, "driver", entity_uid("User", v.delegation.holder_id), v.delegation)
        if v.consent is not None:
            _grant(attrs, "partner", v.consent.holder_id, v.consent)
        parents = [
            *_uids("FleetGroup", v.groups),
            *_uids("DealerCase", v.dealer_cases),
            *_uids("SupportCase", v.support_cases),
        ]
        put("Vehicle", v.id, attrs, parents)

    for ref, facts in relations.objects.items():
        type_name = RESOURCE_TYPES[ref.kind]
        if (type_name, ref.id) in out:
            continue  # already there as the principal's group or case
        put(type_name, ref.id, *_object_entity(facts))
    return list(out.values())


def _object_entity(facts: ObjectFacts) -> tuple[dict[str, Any], list[dict[str, str]]]:
    kind = facts.ref.kind
    if kind is ResourceKind.TENANT:
        tenant_kind = facts.tenant_kind.value if facts.tenant_kind else ""
        return {"tenant": facts.ref.id, "kind": tenant_kind}, []
    if kind in (ResourceKind.FLEET_GROUP, ResourceKind.DEALER_CASE):
        return {"tenant": facts.tenant_id or ""}, []
    if kind is ResourceKind.ACCOUNT:
        return {}, _uids("SupportCase", facts.support_cases)
    return {}, []


def cedar_context(
    context: RequestContext, action: Permission, barred_regions: Iterable[str]
) -> dict[str, Any]:
    """The Cedar context of one request. ``scopes`` holds the token's scopes among the
    request's action and command only (the policy checks exactly those; the full list would
    only cost loading time). ``barred_regions``: where the action is barred. The request's
    region and the barred regions are left out when there are none (optional in the schema,
    asked with ``has``): each value costs the engine ~1-2 us to load."""
    asked = {action} if context.command is None else {action, context.command}
    out: dict[str, Any] = {
        "now": epoch(context.now),
        "auth_age": seconds_since(context.auth_time, context.now),
        "acr_level": context.acr_level,
        "tenant": context.tenant_id,
        "scopes": [action_uid(p) for p in sorted(asked) if p.value in context.scopes],
    }
    if context.region:
        out["region"] = context.region
    if barred_regions:
        out["barred_regions"] = sorted(barred_regions)
    if context.command is not None:
        out["command"] = action_uid(context.command)
    return out


__all__ = [
    "NAMESPACE",
    "PRINCIPAL_TYPES",
    "RESOURCE_TYPES",
    "action_uid",
    "cedar_context",
    "cedar_entities",
    "entity_uid",
    "epoch",
    "principal_uid",
    "resource_uid",
    "seconds_since",
]
