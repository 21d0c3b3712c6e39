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
    DRIVER_INVITED = "vehicle:driver:invited"
    DRIVER_INVITATION_ACCEPTED = "vehicle:driver:invitation_accepted"
    DRIVER_INVITATION_REVOKED = "vehicle:driver:invitation_revoked"
    OWNERSHIP_TRANSFER_STARTED = "vehicle:ownership:transfer_started"
    OWNERSHIP_TRANSFER_CANCELLED = "vehicle:ownership:transfer_cancelled"
    OWNERSHIP_TRANSFER_REFUSED = "vehicle:ownership:transfer_refused"
    # A pending transfer past its deadline, closed as expired (nobody acted: no cancellation).
    OWNERSHIP_TRANSFER_EXPIRED = "vehicle:ownership:transfer_expired"
    APPOINTMENT_BOOKED = "vehicle:appointment:booked"
    APPOINTMENT_CANCELLED = "vehicle:appointment:cancelled"
    APPOINTMENT_CONFIRMED = "vehicle:appointment:confirmed"
    OTA_CAMPAIGN_CREATED = "ota:campaign:created"
    OTA_CAMPAIGN_STATUS_CHANGED = "ota:campaign:status_changed"
    # Every authorization decision (authz/).
    AUTHZ_DECISION_MADE = "authz:decision:made"
    # Interactive login (identity/login): reasons are stable codes, never a secret.
    LOGIN_SUCCEEDED = "user:login:succeeded"
    LOGIN_FAILED = "user:login:failed"
    LOGIN_LOCKED_OUT = "user:login:locked_out"
    LOGIN_SPRAYING_DETECTED = "user:login:spraying_detected"
    LOGIN_ENDED = "user:login:ended"
    MFA_ENROLLED = "user:mfa:enrolled"
    RECOVERY_CODE_USED = "user:recovery_code:used"
    RECOVERY_CODES_REGENERATED = "user:recovery_code:regenerated"
    # The OAuth authorization server (identity/oauth).
    OAUTH_CLIENT_REGISTERED = "oauth:client:registered"
    OAUTH_CLIENT_KEYS_REPLACED = "oauth:client:keys_replaced"
    OAUTH_CONSENT_GRANTED = "oauth:consent:granted"
    OAUTH_CONSENT_DENIED = "oauth:consent:denied"
    OAUTH_CODE_ISSUED = "oauth:code:issued"
    OAUTH_CODE_REUSED = "oauth:code:reused"
    OAUTH_TOKEN_ISSUED = "oauth:token:issued"  # noqa: S105 - an event name
    OAUTH_TOKEN_REFUSED = "oauth:token:refused"  # noqa: S105 - an event name
    OAUTH_REFRESH_TOKEN_REUSED = "oauth:refresh_token:reused"  # noqa: S105 - an event name
    OAUTH_DEVICE_APPROVED = "oauth:device:approved"
    OAUTH_DEVICE_DENIED = "oauth:device:denied"
    OAUTH_TOKENS_REVOKED = "oauth:tokens:revoked"
    # Device identity and the vehicle gateway (devices/, gateway/).
    DEVICE_ENROLMENT_CREATED = "device:enrolment:created"
    DEVICE_ENROLMENT_REFUSED = "device:enrolment:refused"
    DEVICE_PROVISIONED = "device:identity:provisioned"
    DEVICE_ROTATION_STARTED = "device:rotation:started"
    DEVICE_ROTATION_COMPLETED = "device:rotation:completed"
    DEVICE_SUSPENDED = "device:identity:suspended"
    DEVICE_RESUMED = "device:identity:resumed"
    DEVICE_REVOKED = "device:identity:revoked"
    DEVICE_DECOMMISSIONED = "device:identity:decommissioned"
    DEVICE_REENROLMENT_STARTED = "device:identity:reenrolment_started"
    DEVICE_TCU_REPLACED = "device:tcu:replaced"
    DEVICE_QUARANTINED = "device:identity:quarantined"
    DEVICE_CLONE_DETECTED = "device:clone:detected"
    DEVICE_OPERATION_ALLOWED = "device:operation:allowed"
    DEVICE_OPERATION_DENIED = "device:operation:denied"
    DEVICE_HANDSHAKE_FAILED = "device:handshake:failed"
    # Refused handshakes a network sent beyond what the gateway records one by one, per window.
    DEVICE_HANDSHAKES_UNRECORDED = "device:handshake:unrecorded"
    DEVICE_SESSION_OPENED = "device:session:opened"
    DEVICE_SESSION_SUPERSEDED = "device:session:superseded"
    DEVICE_SESSION_CLOSED = "device:session:closed"
    # A device refused for opening sessions too often (gateway/churn.py): once per breach.
    DEVICE_SESSION_CHURN = "device:session:churn"
    # Remote commands (commands/): one event per job transition, named by the state entered.
    COMMAND_REQUESTED = "vehicle:command:requested"
    COMMAND_AUTHORIZED = "vehicle:command:authorized"
    COMMAND_REJECTED = "vehicle:command:rejected"
    COMMAND_QUEUED = "vehicle:command:queued"
    COMMAND_DELIVERED = "vehicle:command:delivered"
    COMMAND_EXECUTED = "vehicle:command:executed"
    COMMAND_FAILED = "vehicle:command:failed"
    COMMAND_REJECTED_BY_VEHICLE = "vehicle:command:rejected_by_vehicle"
    COMMAND_CONFIRMED = "vehicle:command:confirmed"
    COMMAND_EXPIRED = "vehicle:command:expired"
    COMMAND_OUTCOME_UNKNOWN = "vehicle:command:outcome_unknown"
    COMMAND_CANCELLED = "vehicle:command:cancelled"
    # A signed answer the platform refused (bad signature, unknown job, another vehicle's).
    COMMAND_RESULT_REFUSED = "vehicle:command:result_refused"
    BULK_COMMAND_REQUESTED = "fleet:bulk_command:requested"
    BULK_COMMAND_APPROVED = "fleet:bulk_command:approved"
    # An approval refused by the four-eyes rule (the requester's own); the bulk keeps waiting.
    BULK_COMMAND_APPROVAL_REFUSED = "fleet:bulk_command:approval_refused"
    BULK_COMMAND_REJECTED = "fleet:bulk_command:rejected"
    BULK_COMMAND_DISPATCHED = "fleet:bulk_command:dispatched"
    # Abuse limits (abuse/): a refusal for quota, an enumeration pattern, a raised quota used.
    QUOTA_EXCEEDED = "abuse:quota:exceeded"
    QUOTA_STORE_DOWN = "abuse:quota:store_down"
    RAISED_QUOTA_USED = "abuse:raised_quota:used"
    ENUMERATION_SUSPECTED = "abuse:enumeration:suspected"
    ENUMERATION_STOPPED = "abuse:enumeration:stopped"
    # Detection and investigation (detection/, audit/).
    ALERT_RAISED = "audit:alert:raised"
    ALERT_ACKNOWLEDGED = "audit:alert:acknowledged"
    INVESTIGATION_RUN = "audit:investigation:run"
    AUDIT_EXPORTED = "audit:log:exported"


class ActorType(StrEnum):
    USER = "user"
    WORKLOAD = "workload"
    DEVICE = "device"
    PARTNER = "partner"
    SYSTEM = "system"


class Decision(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
