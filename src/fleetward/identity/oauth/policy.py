"""What each kind of client may ever be granted: the one table every check reads.

The credential type limits the grant (STYLE habit 3): a row in ``oauth_clients`` can only
narrow what its :class:`ClientPolicy` allows, never widen it, so a mis-registered client still
cannot obtain a grant type, scope or auth method its type forbids. There is deliberately no
device client type: vehicles authenticate with device certificates at the gateway, never here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from fleetward.authz.permissions import CONSENTABLE_PERMISSIONS, Permission
from fleetward.core.surfaces import Surface
from fleetward.devices.names import DEVICE_ID_PREFIX, VEHICLE_ID_PREFIX
from fleetward.identity.acr import Acr
from fleetward.identity.models import TenantKind
from fleetward.identity.oauth_models import ClientType

AUTHORIZATION_CODE: Final = "authorization_code"
REFRESH_TOKEN: Final = "refresh_token"  # noqa: S105 - a grant type name
CLIENT_CREDENTIALS: Final = "client_credentials"
DEVICE_CODE: Final = "urn:ietf:params:oauth:grant-type:device_code"

AUTH_NONE: Final = "none"
PRIVATE_KEY_JWT: Final = "private_key_jwt"

# Read-only data kinds: the most a token that stands for no person may carry. Commands,
# transfers and administration always need a person (and often a recent login).
MACHINE_SCOPES: Final = CONSENTABLE_PERMISSIONS | {Permission.VEHICLE_DIAGNOSTICS_READ}


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    auth_method: str
    grants: frozenset[str]
    # Tokens for people, through the authorization endpoint or the device flow.
    human: bool
    # Tokens for the client itself (client credentials): sub = client id, sub_type workload.
    machine: bool
    # DPoP at the token endpoint, whatever the row says (public clients hold no secret, so a
    # stolen token must be useless without the key).
    dpop_required: bool
    may_introspect: bool
    # Bound to exactly one tenant, which every token it obtains carries.
    needs_tenant: bool
    # The widest scope set the type can hold; None means any permission.
    max_scopes: frozenset[Permission] | None


_OWNER_SCOPES = frozenset(p for p in Permission if p.value.startswith("vehicle:"))

POLICIES: Final[dict[ClientType, ClientPolicy]] = {
    ClientType.PUBLIC_MOBILE: ClientPolicy(
        auth_method=AUTH_NONE,
        grants=frozenset({AUTHORIZATION_CODE, REFRESH_TOKEN}),
        human=True,
        machine=False,
        dpop_required=True,
        may_introspect=False,
        needs_tenant=False,
        max_scopes=_OWNER_SCOPES,
    ),
    ClientType.CONFIDENTIAL_WEB: ClientPolicy(
        auth_method=PRIVATE_KEY_JWT,
        grants=frozenset({AUTHORIZATION_CODE, REFRESH_TOKEN}),
        human=True,
        machine=False,
        dpop_required=False,
        may_introspect=True,
        needs_tenant=False,
        max_scopes=None,
    ),
    ClientType.DEALER_TOOL: ClientPolicy(
        auth_method=PRIVATE_KEY_JWT,
        grants=frozenset({AUTHORIZATION_CODE, REFRESH_TOKEN}),
        human=True,
        machine=False,
        dpop_required=False,
        may_introspect=True,
        needs_tenant=False,
        max_scopes=None,
    ),
    ClientType.PARTNER: ClientPolicy(
        auth_method=PRIVATE_KEY_JWT,
        grants=frozenset({AUTHORIZATION_CODE, REFRESH_TOKEN, CLIENT_CREDENTIALS}),
        human=True,
        machine=True,
        dpop_required=False,
        may_introspect=True,
        needs_tenant=True,
        max_scopes=frozenset(CONSENTABLE_PERMISSIONS),
    ),
    ClientType.FIRST_PARTY_CLI: ClientPolicy(
        auth_method=AUTH_NONE,
        grants=frozenset({AUTHORIZATION_CODE, REFRESH_TOKEN, DEVICE_CODE}),
        human=True,
        machine=False,
        dpop_required=False,
        may_introspect=False,
        needs_tenant=False,
        max_scopes=None,
    ),
    ClientType.WORKLOAD: ClientPolicy(
        auth_method=PRIVATE_KEY_JWT,
        grants=frozenset({CLIENT_CREDENTIALS}),
        human=False,
        machine=True,
        dpop_required=False,
        may_introspect=True,
        needs_tenant=True,
        max_scopes=frozenset(MACHINE_SCOPES),
    ),
}

# The tenant kind a token for each surface carries: a person's membership of that kind (or,
# for bound clients, the client's own tenant, which must be of that kind too).
SURFACE_TENANT_KIND: Final[dict[Surface, TenantKind]] = {
    Surface.MOBILE: TenantKind.CONSUMER,
    Surface.FLEET: TenantKind.FLEET,
    Surface.DEALER: TenantKind.DEALER,
    Surface.PARTNER: TenantKind.PARTNER,
    Surface.SUPPORT: TenantKind.OPERATOR,
    Surface.ADMIN: TenantKind.OPERATOR,
}

# Operator surfaces reach every customer's data: a password alone never opens them, whatever
# the client asks for in acr_values.
SURFACE_MIN_ACR: Final[dict[Surface, Acr]] = {Surface.SUPPORT: Acr.MFA, Surface.ADMIN: Acr.MFA}

# Workload tokens carry this acr: no human authentication class, so no step-up check that
# asks for one can ever be satisfied by a workload.
WORKLOAD_ACR: Final = "urn:fleetward:acr:workload-key"

# Id prefixes of things that are never OAuth subjects or clients: vehicles and their devices
# (TCUs), as the devices capability names them. A token is never minted for such an id,
# whatever path led there.
NON_SUBJECT_ID_PREFIXES: Final = frozenset({DEVICE_ID_PREFIX, VEHICLE_ID_PREFIX})

CODE_LIFETIME: Final = timedelta(minutes=2)
DEVICE_CODE_LIFETIME: Final = timedelta(minutes=10)
DEVICE_POLL_INTERVAL: Final = 5  # seconds; RFC 8628 section 3.5 adds 5 on every slow_down
ASSERTION_MAX_LIFETIME: Final = timedelta(minutes=5)
ASSERTION_LEEWAY: Final = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class RefreshLifetime:
    # A refresh token unused for `idle` expires; no rotation outlives `absolute` after login.
    idle: timedelta
    absolute: timedelta


_DEFAULT_REFRESH = RefreshLifetime(idle=timedelta(days=14), absolute=timedelta(days=30))
_OPERATOR_REFRESH = RefreshLifetime(idle=timedelta(hours=8), absolute=timedelta(hours=12))

REFRESH_LIFETIMES: Final[dict[Surface, RefreshLifetime]] = {
    surface: _OPERATOR_REFRESH if surface in SURFACE_MIN_ACR else _DEFAULT_REFRESH
    for surface in Surface
}


def policy_for(client_type: ClientType) -> ClientPolicy:
    return POLICIES[client_type]


def id_prefix(value: str) -> str:
    return value.split("_", 1)[0] if "_" in value else ""


def is_non_subject_id(value: str) -> bool:
    """Whether ``value`` is shaped like a vehicle or device id (never a token subject)."""
    return id_prefix(value.lower()) in NON_SUBJECT_ID_PREFIXES
