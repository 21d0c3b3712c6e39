"""The closed permission vocabulary. No permission string exists anywhere else in the code.

Permissions are fine-grained by command family and data kind: there is deliberately no
generic "vehicle control" permission.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    VEHICLE_READ_STATUS = "vehicle:read_status"
    VEHICLE_READ_LOCATION = "vehicle:read_location"
    VEHICLE_READ_TRIPS = "vehicle:read_trips"
    VEHICLE_READ_CHARGING = "vehicle:read_charging"
    VEHICLE_LOCK = "vehicle:lock"
    VEHICLE_UNLOCK = "vehicle:unlock"
    VEHICLE_REMOTE_START = "vehicle:remote_start"
    VEHICLE_CLIMATE = "vehicle:climate"
    VEHICLE_HORN_LIGHTS = "vehicle:horn_lights"
    VEHICLE_CHARGING_CONTROL = "vehicle:charging_control"
    VEHICLE_DIAGNOSTICS_READ = "vehicle:diagnostics_read"
    VEHICLE_DIAGNOSTICS_RUN = "vehicle:diagnostics_run"
    VEHICLE_IMMOBILIZE = "vehicle:immobilize"
    VEHICLE_MANAGE_DRIVERS = "vehicle:manage_drivers"
    VEHICLE_TRANSFER = "vehicle:transfer"
    VEHICLE_MANAGE_CONSENTS = "vehicle:manage_consents"
    VEHICLE_BOOK_SERVICE = "vehicle:book_service"
    FLEET_READ_GROUPS = "fleet:read_groups"
    FLEET_MANAGE_GROUPS = "fleet:manage_groups"
    FLEET_MANAGE_MEMBERS = "fleet:manage_members"
    FLEET_BULK_COMMAND = "fleet:bulk_command"
    DEALER_MANAGE_CASE = "dealer:manage_case"
    SUPPORT_READ_ACCOUNT = "support:read_account"
    SUPPORT_READ_VEHICLE = "support:read_vehicle"
    OTA_MANAGE_CAMPAIGN = "ota:manage_campaign"
    ADMIN_MANAGE_TENANTS = "admin:manage_tenants"
    ADMIN_MANAGE_CLIENTS = "admin:manage_clients"
    # Read the audit log across tenants: request chains, blast radius, export.
    ADMIN_INVESTIGATE = "admin:investigate"
    ADMIN_READ_ALERTS = "admin:read_alerts"
    ADMIN_MANAGE_ALERTS = "admin:manage_alerts"


# Everything an owner holds on their own vehicle.
OWNER_PERMISSIONS: frozenset[Permission] = frozenset(
    p for p in Permission if p.value.startswith("vehicle:")
)

# What an owner may hand to a driver: never the power to manage drivers, share the car's
# data with partners or sell it, so a delegation can never be used to widen or extend itself.
DELEGABLE_PERMISSIONS: frozenset[Permission] = OWNER_PERMISSIONS - {
    Permission.VEHICLE_MANAGE_DRIVERS,
    Permission.VEHICLE_MANAGE_CONSENTS,
    Permission.VEHICLE_TRANSFER,
}

# What a partner may be consented to: read-only data kinds, never commands.
CONSENTABLE_PERMISSIONS: frozenset[Permission] = frozenset(
    {
        Permission.VEHICLE_READ_STATUS,
        Permission.VEHICLE_READ_LOCATION,
        Permission.VEHICLE_READ_TRIPS,
        Permission.VEHICLE_READ_CHARGING,
    }
)
