"""The client-type table and the subject guard: what a credential type can ever be granted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from authlib.oauth2.rfc6749.errors import InvalidGrantError

from fleetward.authz.permissions import CONSENTABLE_PERMISSIONS, Permission
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth.adapters import OAuthClient
from fleetward.identity.oauth.minting import check_subject
from fleetward.identity.oauth.policy import (
    AUTH_NONE,
    CLIENT_CREDENTIALS,
    MACHINE_SCOPES,
    POLICIES,
    PRIVATE_KEY_JWT,
    is_non_subject_id,
)
from fleetward.identity.oauth.principal import Principal
from fleetward.identity.oauth_models import Client, ClientType
from fleetward.identity.tokens import SubjectType

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_there_is_no_device_client_type() -> None:
    # Vehicles authenticate with device certificates at the gateway, never with OAuth.
    assert set(POLICIES) == set(ClientType)
    assert not any(word in t.value for t in ClientType for word in ("device", "vehicle", "tcu"))


def test_public_clients_never_hold_keys_and_confidential_never_go_without() -> None:
    for client_type, policy in POLICIES.items():
        assert policy.auth_method in (AUTH_NONE, PRIVATE_KEY_JWT), client_type
        if policy.auth_method == AUTH_NONE:
            # No client credentials: it can never act on its own behalf, nor introspect.
            assert not policy.machine and not policy.may_introspect, client_type
            assert CLIENT_CREDENTIALS not in policy.grants, client_type


def test_machine_tokens_are_read_only() -> None:
    assert all("read" in p.value for p in MACHINE_SCOPES)
    for client_type, policy in POLICIES.items():
        if policy.machine:
            assert policy.max_scopes is not None and policy.max_scopes <= MACHINE_SCOPES, (
                client_type
            )
    assert POLICIES[ClientType.PARTNER].max_scopes == CONSENTABLE_PERMISSIONS
    assert POLICIES[ClientType.PUBLIC_MOBILE].dpop_required


def _client(client_type: ClientType, client_id: str = "some-client") -> OAuthClient:
    return OAuthClient(
        Client(
            id=client_id,
            name="x",
            client_type=client_type,
            tenant_id=None,
            redirect_uris=[],
            grant_types=[],
            scopes=[Permission.VEHICLE_READ_STATUS.value],
            surfaces=[Surface.FLEET.value],
            jwks=None,
            require_dpop=False,
            created_at=T0,
            disabled_at=None,
        )
    )


def _principal(subject: str, subject_type: SubjectType) -> Principal:
    return Principal(
        subject=subject,
        subject_type=subject_type,
        tenant_id=new_id("ten"),
        surface=Surface.FLEET,
        auth_time=T0,
        acr="x",
        amr=("pwd",),
        family_id=None,
        granted_scopes=(Permission.VEHICLE_READ_STATUS.value,),
    )


SUBJECTS: list[tuple[str, str, SubjectType, ClientType, str]] = [
    # A device or vehicle id never becomes a token subject, whatever the path.
    ("device-as-user", new_id("dev"), "user", ClientType.CONFIDENTIAL_WEB, "some-client"),
    ("vehicle-as-user", new_id("veh"), "user", ClientType.CONFIDENTIAL_WEB, "some-client"),
    ("device-as-workload", "dev_abc", "workload", ClientType.WORKLOAD, "dev_abc"),
    ("vehicle-as-workload", "veh_abc", "workload", ClientType.WORKLOAD, "veh_abc"),
    # A user token must name a user.
    ("tenant-as-user", new_id("ten"), "user", ClientType.CONFIDENTIAL_WEB, "some-client"),
    # A workload token names the workload itself, never another client or a person.
    ("workload-other-client", "other-client", "workload", ClientType.WORKLOAD, "some-client"),
    ("workload-as-person", new_id("usr"), "workload", ClientType.WORKLOAD, "some-client"),
    # Types that act for people never get tokens of their own, and the reverse.
    (
        "web-client-as-workload",
        "some-client",
        "workload",
        ClientType.CONFIDENTIAL_WEB,
        "some-client",
    ),
    ("workload-acting-for-person", new_id("usr"), "user", ClientType.WORKLOAD, "some-client"),
]


@pytest.mark.parametrize(
    ("case", "subject", "subject_type", "client_type", "client_id"),
    SUBJECTS,
    ids=[c[0] for c in SUBJECTS],
)
def test_subject_guard_refuses(
    case: str, subject: str, subject_type: SubjectType, client_type: ClientType, client_id: str
) -> None:
    with pytest.raises(InvalidGrantError):
        check_subject(_principal(subject, subject_type), _client(client_type, client_id))


def test_subject_guard_accepts_what_it_should() -> None:
    check_subject(_principal(new_id("usr"), "user"), _client(ClientType.PUBLIC_MOBILE))
    check_subject(_principal("telemetry", "workload"), _client(ClientType.WORKLOAD, "telemetry"))


# Fresh ids get fixed test ids: parallel workers (pytest-xdist) must collect the same names.
@pytest.mark.parametrize(
    "value",
    [
        "dev_x",
        "DEV_x",
        "veh_abc",
        pytest.param(new_id("dev"), id="new-device-id"),
        pytest.param(new_id("veh"), id="new-vehicle-id"),
    ],
)
def test_device_and_vehicle_ids_are_recognised(value: str) -> None:
    assert is_non_subject_id(value)


@pytest.mark.parametrize("value", ["usr_abc", "fleetward-cli", "devon", "developer-tool"])
def test_other_ids_are_not(value: str) -> None:
    assert not is_non_subject_id(value)
