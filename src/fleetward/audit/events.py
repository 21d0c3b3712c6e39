"""The closed vocabulary of audit event names (``object:subject:verb``)."""

from __future__ import annotations

from enum import StrEnum


class EventName(StrEnum):
    TENANT_CREATED = "tenant:created"
    USER_CREATED = "user:created"
    MEMBERSHIP_GRANTED = "user:membership:granted"
    MEMBERSHIP_ENDED = "user:membership:ended"
    VEHICLE_REGISTERED = "vehicle:registered"
    OWNERSHIP_STARTED = "vehicle:ownership:started"
    OWNERSHIP_TRANSFERRED = "vehicle:ownership:transferred"
    DRIVER_DELEGATED = "vehicle:driver:delegated"
    DRIVER_REVOKED = "vehicle:driver:revoked"
    FLEET_VEHICLE_ADDED = "fleet:vehicle:added"
    FLEET_VEHICLE_REMOVED = "fleet:vehicle:removed"
    FLEET_GROUP_CREATED = "fleet:group:created"
    FLEET_GROUP_VEHICLE_ADDED = "fleet:group:vehicle_added"
    FLEET_GROUP_VEHICLE_REMOVED = "fleet:group:vehicle_removed"
    FLEET_OPERATOR_ASSIGNED = "fleet:operator:assigned"
    FLEET_OPERATOR_UNASSIGNED = "fleet:operator:unassigned"
    DEALER_CASE_OPENED = "dealer:case:opened"
    DEALER_CASE_CLOSED = "dealer:case:closed"
    DEALER_TECHNICIAN_ASSIGNED = "dealer:technician:assigned"
    SUPPORT_CASE_OPENED = "support:case:opened"
    SUPPORT_CASE_CLOSED = "support:case:closed"
    PARTNER_CONSENT_GRANTED = "partner:consent:granted"
    PARTNER_CONSENT_REVOKED = "partner:consent:revoked"


class ActorType(StrEnum):
    USER = "user"
    WORKLOAD = "workload"
    DEVICE = "device"
    PARTNER = "partner"
    SYSTEM = "system"


class Decision(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
