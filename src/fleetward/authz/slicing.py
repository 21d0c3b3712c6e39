"""What the PDP works out once, at start, so that a decision asks the engine for as little
as possible, with the same answers.

* **Slices.** For each action, the policies whose action scope can match it (the action
  hierarchy is read from the schema). A policy whose action scope cannot match is never
  satisfied and never errors (Cedar evaluates the scope before the conditions and stops at the
  first false), so leaving it out changes no answer.
* **One pass.** In a slice every policy is a permit (ids unchanged). One evaluation therefore
  names every satisfied policy, permit and forbid alike; the PDP reads each id's effect from
  the annotations it keeps (:class:`fleetward.authz.pdp._Meta`) and decides as Cedar would
  (allow iff a permit and no forbid is satisfied; any error denies), and can tell "a forbid
  denied what a permit would allow" without a second evaluation.
* **The schema, once.** Requests are evaluated without the schema (request validation cost
  the engine ~50 us per request). The same guarantee, "a request that does not fit the
  schema is a deny", is kept by :func:`fits`: the (action, principal type, resource type)
  triples the schema admits are probed from the engine WITH the schema at start, and the
  context is checked field by field against the one shape :func:`admitted` proved the schema
  accepts for every action. Entities are still loaded with the schema on every request.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import cedarpy
from cedarpy import pst

from fleetward.authz.decision import RequestContext
from fleetward.authz.permissions import Permission
from fleetward.authz.relations.cedar import (
    NAMESPACE,
    PRINCIPAL_TYPES,
    RESOURCE_TYPES,
    cedar_context,
    entity_uid,
)

_ACTION: Final = NAMESPACE + "Action"
_LONG: Final = range(-(2**63), 2**63)
_REQUIRED: Final = frozenset({"now", "auth_age", "acr_level", "tenant", "scopes"})
_OPTIONAL: Final = frozenset({"region", "barred_regions", "command"})


def action_ancestors(schema: Any) -> dict[str, frozenset[str]]:
    """Every action id with itself and all its groups, as the schema declares them."""
    document = json.loads(str(cedarpy.Entities.from_json_str("[]", schema)))
    parents: dict[str, set[str]] = {
        e["uid"]["id"]: {p["id"] for p in e["parents"] if p["type"] == _ACTION}
        for e in document
        if e["uid"]["type"] == _ACTION
    }
    closed: dict[str, frozenset[str]] = {}
    for action in parents:
        seen: set[str] = {action}
        stack = [action]
        while stack:
            for parent in parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        closed[action] = frozenset(seen)
    return closed


def _may_match(constraint: object, ancestors: frozenset[str]) -> bool:
    if isinstance(constraint, pst.ActionEq):
        return not _is_action(constraint.entity) or constraint.entity.id in ancestors
    if isinstance(constraint, pst.ActionIn):
        entities = constraint.entities
        return any(not _is_action(e) or e.id in ancestors for e in entities)
    return True  # any action, or a form this code does not know: keeping is always safe


def _is_action(uid: pst.EntityUid) -> bool:
    return "::".join((*uid.type.namespace, uid.type.basename)) == _ACTION


def slices(tree: pst.PolicySet, ancestors: Mapping[str, frozenset[str]]) -> dict[Permission, Any]:
    """Per permission: the policies that may match it, every one a permit (see above)."""
    out: dict[Permission, Any] = {}
    for permission in Permission:
        mine = ancestors.get(permission.value, frozenset({permission.value}))
        kept = {
            policy_id: dataclasses.replace(policy, effect="permit")
            for policy_id, policy in tree.static_policies.items()
            if _may_match(policy.action, mine)
        }
        node = pst.PolicySet(templates={}, static_policies=kept, template_links=())
        out[permission] = cedarpy.PolicySet.from_pst(node)
    return out


def _sample_contexts(permission: Permission) -> list[dict[str, Any]]:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    plain = RequestContext(moment, "t", frozenset({permission.value}), "mfa", moment, "EU")
    command = dataclasses.replace(plain, command=permission, region=None)
    return [
        cedar_context(plain, permission, ("EU",)),
        cedar_context(command, permission, ()),
    ]


def admitted(schema: Any) -> tuple[frozenset[tuple[str, str, str]], list[str]]:
    """The (action, principal type, resource type) triples for which the schema accepts the
    requests this PDP builds (with and without the optional fields); and the permissions
    for which it accepts none (a start-up problem)."""
    nothing = cedarpy.PolicySet.from_str("")
    entities = cedarpy.Entities.from_json_str("[]", schema)
    triples: set[tuple[str, str, str]] = set()
    problems: list[str] = []
    for permission in Permission:
        contexts = _sample_contexts(permission)
        for principal in PRINCIPAL_TYPES:
            for resource in RESOURCE_TYPES.values():
                asks = [
                    {
                        "principal": entity_uid(principal, "probe"),
                        "action": entity_uid("Action", permission.value),
                        "resource": entity_uid(resource, "probe"),
                        "context": context,
                    }
                    for context in contexts
                ]
                results = cedarpy.is_authorized_batch(asks, nothing, entities, schema=schema)
                fit = [
                    r.decision is cedarpy.Decision.Deny and not r.diagnostics.errors
                    for r in results
                ]
                if all(fit):
                    triples.add((permission.value, NAMESPACE + principal, NAMESPACE + resource))
        if not any(t[0] == permission.value for t in triples):
            problems.append(
                f"{permission.value}: the schema admits no request the PDP builds "
                "(the context shape or the action's principal and resource types)"
            )
    return frozenset(triples), problems


def fits(request: Mapping[str, Any], applies_to: frozenset[tuple[str, str, str]]) -> bool:
    """Whether a request built by the PDP fits the schema (see the module docstring)."""
    try:
        triple = (
            request["action"]["id"],
            request["principal"]["type"],
            request["resource"]["type"],
        )
        context = request["context"]
        if triple not in applies_to or not isinstance(request["resource"]["id"], str):
            return False
        keys = context.keys()
        if not keys >= _REQUIRED or not keys <= _REQUIRED | _OPTIONAL:
            return False
        longs = (context["now"], context["auth_age"], context["acr_level"])
        return (
            all(type(v) is int and v in _LONG for v in longs)
            and type(context["tenant"]) is str
            and type(context.get("region", "")) is str
            and all(_is_action_uid(a) for a in context["scopes"])
            and all(type(r) is str for r in context.get("barred_regions", ()))
            and ("command" not in context or _is_action_uid(context["command"]))
        )
    except (KeyError, TypeError, AttributeError):
        return False


def _is_action_uid(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    uid = value.get("__entity", value)
    return (
        isinstance(uid, dict) and uid.get("type") == _ACTION and uid.get("id") in _PERMISSION_VALUES
    )


_PERMISSION_VALUES: Final = frozenset(p.value for p in Permission)


def unschematised(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context in the form the engine reads without a schema: entity references escaped
    (``{"__entity": ...}``); the values are the same."""
    out = dict(context)
    out["scopes"] = [{"__entity": a} for a in context["scopes"]]
    if "command" in context:
        out["command"] = {"__entity": context["command"]}
    return out


__all__ = ["action_ancestors", "admitted", "fits", "slices", "unschematised"]
