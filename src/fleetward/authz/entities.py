"""The names other modules import from here, kept stable: the code lives in
:mod:`fleetward.authz.relations` (facts, store queries, Cedar form)."""

from fleetward.authz.relations import (
    NAMESPACE,
    Grant,
    ObjectFacts,
    PrincipalFacts,
    Relations,
    RelationSource,
    RelationsRefused,
    SessionRelations,
    StoreRelations,
    VehicleFacts,
    action_uid,
    cedar_context,
    cedar_entities,
    entity_uid,
    epoch,
    load_relations,
    principal_uid,
    resource_uid,
)

__all__ = [
    "NAMESPACE",
    "Grant",
    "ObjectFacts",
    "PrincipalFacts",
    "RelationSource",
    "Relations",
    "RelationsRefused",
    "SessionRelations",
    "StoreRelations",
    "VehicleFacts",
    "action_uid",
    "cedar_context",
    "cedar_entities",
    "entity_uid",
    "epoch",
    "load_relations",
    "principal_uid",
    "resource_uid",
]
