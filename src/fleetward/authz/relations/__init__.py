"""The facts one authorization request needs, read from the relationship store, and their
form as Cedar entities.

Only what the request touches is read: the principal, the requested resources, and the
principal's relations to them, with queries chosen by the kind of tenant the principal acts
in (a consumer's request never reads dealer cases). Windows are checked here as well as by
the policy: a relation that is revoked, expired, not yet started or closed is left out of the
entities altogether, and the reason it was left out is kept as a note that names a default
denial ("window-expired" rather than "no-relationship"). Nothing is cached between calls:
every batch reads the store, so a revocation takes effect on the next request.

Everything built here describes ONE principal: ``VehicleFacts.delegation`` is the
requesting user's delegation, not the vehicle's list of drivers. A batch therefore shares
one principal and one context (see :class:`RelationSource`).

Modules: :mod:`.facts` (the values), :mod:`.loading` and :mod:`.loader` (the queries),
:mod:`.cedar` (the Cedar JSON form).
"""

from fleetward.authz.relations.cedar import (
    NAMESPACE,
    action_uid,
    cedar_context,
    cedar_entities,
    entity_uid,
    epoch,
    principal_uid,
    resource_uid,
)
from fleetward.authz.relations.facts import (
    Grant,
    ObjectFacts,
    PrincipalFacts,
    Relations,
    RelationSource,
    RelationsRefused,
    VehicleFacts,
)
from fleetward.authz.relations.loading import SessionRelations, StoreRelations, load_relations

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
