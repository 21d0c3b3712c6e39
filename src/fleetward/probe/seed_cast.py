"""Who and what the probe world holds on each side: the tenants, and one person per role and
relationship state of the demo spec (plus the fixtures the spares and write bodies need)."""

from __future__ import annotations

from typing import Final

from fleetward.identity.models import Role, TenantKind

# (role, state, tenant key, platform role) of every person the demo spec probes.
PEOPLE: Final = (
    ("owner", "active", "consumer", Role.CUSTOMER),
    ("driver", "active", "consumer", Role.CUSTOMER),
    ("driver", "expired", "consumer", Role.CUSTOMER),
    ("driver", "revoked", "consumer", Role.CUSTOMER),
    ("former_owner", "transferred", "consumer", Role.CUSTOMER),
    ("fleet_admin", "active", "fleet", Role.FLEET_ADMIN),
    ("fleet_operator", "assigned", "fleet", Role.FLEET_OPERATOR),
    ("fleet_operator", "reassigned", "fleet", Role.FLEET_OPERATOR),
    ("dealer_technician", "case-open", "dealer", Role.DEALER_TECHNICIAN),
    # Of another dealer, whose only case on the vehicle is closed.
    ("dealer_technician", "case-closed", "dealer-closed", Role.DEALER_TECHNICIAN),
    ("support_agent", "case-assigned", "ops", Role.SUPPORT_AGENT),
    ("support_agent", "case-closed", "ops", Role.SUPPORT_AGENT),
    ("support_agent", "none", "ops", Role.SUPPORT_AGENT),
    ("platform_admin", "active", "ops", Role.PLATFORM_ADMIN),
    ("engineer", "active", "ops", Role.ENGINEER),
)
# Fixture people who are not probed: they make the spares and the write bodies work.
FIXTURES: Final = (
    ("spare-driver", "consumer", Role.CUSTOMER),
    ("free-operator", "fleet", Role.FLEET_OPERATOR),
    ("spare-operator", "fleet", Role.FLEET_OPERATOR),
)
TENANT_KINDS: Final = {
    "consumer": TenantKind.CONSUMER,
    "fleet": TenantKind.FLEET,
    "dealer": TenantKind.DEALER,
    "dealer-closed": TenantKind.DEALER,
    # The fleet books its appointments here: no probed technician works for it.
    "dealer-fleet": TenantKind.DEALER,
    "ops": TenantKind.OPERATOR,
    "partner-consented": TenantKind.PARTNER,
    "partner-consent-revoked": TenantKind.PARTNER,
    "partner-none": TenantKind.PARTNER,
    "partner-grant": TenantKind.PARTNER,
    "partner-spare": TenantKind.PARTNER,
}
SURFACE_OF: Final = {
    "consumer": "mobile",
    "fleet": "fleet",
    "dealer": "dealer",
    "dealer-closed": "dealer",
    "ops": "support",
}
